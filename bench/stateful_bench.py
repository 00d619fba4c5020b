"""Long run of the stateful concurrency test on PostgreSQL (issue #11).

Runs tests/integration/test_stateful_concurrency.py's state machine in a pytest
subprocess with the "bench" Hypothesis profile (100 examples x 50 steps unless told
otherwise), then reports what it ran: examples, steps, wall seconds, failures, and how
often each rule ran and each outcome (stored, refused with a code, known defect) came up.

    .venv/bin/python bench/stateful_bench.py
    .venv/bin/python bench/stateful_bench.py --examples 300 --steps 60
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ordinal_stateful \\
        REDIS_URL=redis://127.0.0.1:6379/12 .venv/bin/python bench/stateful_bench.py

pytest-django creates (and drops) test_<database name>. Human-readable lines first; the
LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET  # noqa: S405 - parses the report pytest just wrote
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/integration/test_stateful_concurrency.py::test_labeling_services_keep_their_invariants_under_concurrency"
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/ordinal_stateful_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
# The test settings the Makefile's `make test` uses (plain HTTP, a throwaway key).
TEST_ENV = {
    "SECRET_KEY": "test-only-secret-key-not-for-production-0123456789",
    "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
    "SECURE_HSTS_SECONDS": "0",
}


def run(examples: int | None, steps: int | None, database_url: str, redis_url: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="stateful-bench-") as tmp:
        stats_path, junit_path = Path(tmp) / "stats.json", Path(tmp) / "junit.xml"
        env = {**TEST_ENV, **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "HYPOTHESIS_PROFILE": "bench", "STATEFUL_STATS": str(stats_path), "TORCH_NUM_THREADS": "1"}
        env.update({name: str(value) for name, value in
                    (("STATEFUL_EXAMPLES", examples), ("STATEFUL_STEPS", steps)) if value})
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        process = subprocess.run(
            [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider", f"--junitxml={junit_path}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if process.returncode not in (0, 1) or not stats_path.exists():
            sys.stdout.write(process.stdout[-5000:] + process.stderr[-3000:])
            raise SystemExit(f"pytest did not run the machine (exit {process.returncode})")
        stats = json.loads(stats_path.read_text())
        suite = ET.parse(junit_path).getroot().find("testsuite")  # noqa: S314 - our own file
        if process.returncode:
            sys.stdout.write(process.stdout[-8000:])
    outcomes = stats["outcomes"]
    return {
        "bench": "stateful", "profile": stats["profile"], "max_examples": stats["max_examples"],
        "stateful_step_count": stats["stateful_step_count"], "examples": stats["examples"],
        "steps": stats["steps"], "seconds": round(seconds, 1),
        "machine_seconds": stats["machine_seconds"],
        "steps_per_second": round(stats["steps"] / max(stats["machine_seconds"], 1e-9), 2),
        "failures": int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
        "known_double_claims": sum(n for key, n in outcomes.items() if key.endswith(":known_double_claim")),
        "rows": stats["rows"],
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "database": database_url.rsplit("/", 1)[-1], "rules": stats["rules"], "outcomes": outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, help="Hypothesis examples (default: the bench profile's)")
    parser.add_argument("--steps", type=int, help="steps per example (default: the bench profile's)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("the stateful bench needs PostgreSQL: --database-url postgres://...")
    result = run(args.examples, args.steps, args.database_url, args.redis_url)
    print(f"{result['examples']} examples, {result['steps']} steps in {result['seconds']} s "
          f"({result['steps_per_second']} steps/s in the machine), {result['failures']} failures")
    print(f"rows at the end of the examples {result['rows']}; known double claims {result['known_double_claims']}")
    print(json.dumps(result, sort_keys=False))


if __name__ == "__main__":
    main()
