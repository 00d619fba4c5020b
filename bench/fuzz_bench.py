"""API fuzzing, the long run: Schemathesis against the live API once per role, with more
examples per operation than CI's tests/integration/test_api_fuzz.py (which this reuses:
the same seeded project, gunicorn server, configuration and checks).

Drops and recreates the database named in the URL (its name must contain "fuzz" or
"bench"), migrates it, then for each role (CI's four, plus staff, who alone may create
projects and users) flushes it, seeds the project and runs every operation with
Schemathesis' default phases and checks.

    .venv/bin/python bench/fuzz_bench.py                      # 50 examples per operation
    .venv/bin/python bench/fuzz_bench.py --examples 200 --seed 7 --roles admin,annotator

Human-readable lines (and the report of any failure) first; the LAST line is one JSON
object: per role operations, cases, failures, errors, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ordinal_fuzz_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"


def recreate_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "fuzz" not in name and "bench" not in name:
        sys.exit(f"refusing to drop {name!r}: its name must contain 'fuzz' or 'bench'")
    with psycopg.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                         user=parts.username or "postgres", password=parts.password or None,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=50, help="Hypothesis examples per operation and phase")
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--roles", default="admin,reviewer,annotator,outsider,staff")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)

    os.environ.update(
        DATABASE_URL=args.database_url, REDIS_URL=args.redis_url, DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0", SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
        SECURE_SSL_REDIRECT="0", SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0", SECURE_HSTS_SECONDS="0",
        LOG_LEVEL="WARNING",
    )
    recreate_database(args.database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO_ROOT, check=True)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tests.integration.test_api_fuzz import Server, fuzz_config, fuzz_role, purge_queues, seed_world

    folder = Path(tempfile.mkdtemp(prefix="fuzz-bench-"))
    server = Server(database_url=args.database_url, redis_url=args.redis_url, folder=folder)
    results = []
    try:
        for role in args.roles.split(","):
            call_command("flush", interactive=False, verbosity=0)
            world = seed_world(server.artifact_root)
            connection.close()
            config = fuzz_config(world, role, base_url=server.base_url, max_examples=args.examples, seed=seed)
            result = fuzz_role(role, config, f"{server.base_url}/api/schema/?format=json")
            results.append(result)
            print(f"{role}: {result.operations} operations ({result.operations_tested} tested), "
                  f"{result.cases} cases, {result.failures} failures, {result.errors} errors, "
                  f"{result.seconds} s", flush=True)
            if result.report:
                print(result.report, flush=True)
    finally:
        server.stop()
        purge_queues()
    if any(result.failures or result.errors for result in results):
        print(f"gunicorn log: {server.log}")
    print(json.dumps({
        "bench": "fuzz", "examples_per_operation": args.examples, "seed": seed,
        "schemathesis": _version("schemathesis"), "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1),
        "roles": {result.role: result.summary() for result in results},
        "total": {"cases": sum(r.cases for r in results), "failures": sum(r.failures for r in results),
                  "errors": sum(r.errors for r in results), "seconds": round(sum(r.seconds for r in results), 1)},
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }))


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
