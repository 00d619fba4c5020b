"""Load scenario: locust annotators against gunicorn on 127.0.0.1 for a bounded time,
then the assignment invariants checked in SQL.

Seeds a PostgreSQL database as bench/hot_path_bench.py does (its setup child: migrate,
a project with overlap 3 and K = 4, one annotator with an API token per locust user, the
items by COPY), makes every 200th item gold (the project draws gold 5% of the time) and
the lease 1 minute, starts gunicorn (hot_path_bench.start_gunicorn), and runs

  - `locust --headless -f bench/locustfile.py` for --seconds: steady annotators, fickle
    ones that skip and retry with the same Idempotency-Key (some as concurrent twins),
    and lease holders that sit on an item past its lease (see the locustfile);
  - a lease sweeper: the real `labeling.services.assignment.assignments_expire` (the Celery beat
    task's service) every --sweep-interval s with its clock moved forward by
    1 minute - --lease-seconds, so a lease expires --lease-seconds after its claim. That
    compresses the 1-minute lease into the run; `finished_at` of an expired assignment is
    then up to a minute ahead of the wall clock, nothing else changes.

Then it checks, in the database: no non-gold item over its required rankings (the
counter and the rows), no annotator with two live rankings on one item, `rankings_count`
and `active_leases` equal to the rows, no decided item below its required rankings, and
every retried or twinned key stored exactly one ranking, the one its replies named.

    .venv/bin/python bench/load_bench.py                       # 100,000 items, 50 users, 60 s
    .venv/bin/python bench/load_bench.py --items 2000 --users 20 --seconds 20 --think 0.5,2 --lease-seconds 6

Human-readable lines first; the LAST line is one JSON object. Exit status 1 on any
invariant violation, a failure rate (locust failures / requests) over
--max-failure-rate, or no requests at all. The database is dropped and recreated (its
name must contain "bench") unless --keep-database, which seeds into an existing, empty
database (the integration test's: its name must start with "test_" or contain "bench").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import hot_path_bench as hp  # noqa: E402 - the seeding, gunicorn and invariant helpers

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ordinal_load_bench"
LEASE_MINUTES = 1  # the project's lease; the sweeper compresses it to --lease-seconds

# Beyond hot_path_bench.INVARIANTS (counters) and EXTRA_CHECKS: the overlap on the rows.
ROW_CHECKS = {
    "over_required_rows": (
        "SELECT count(*) FROM (SELECT i.id FROM labeling_item i JOIN labeling_ranking r "
        "ON r.item_id = i.id AND r.superseded_by_id IS NULL WHERE i.project_id = %(p)s "
        "AND NOT i.is_gold GROUP BY i.id, i.required_rankings HAVING count(*) > i.required_rankings) o"
    ),
}
VIOLATIONS = (
    *hp.INVARIANTS,
    "active_leases_mismatch",
    "complete_below_required",
    *ROW_CHECKS,
    "retry_violations",
)


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_scratch(url: str, keep: bool) -> str:
    """Seeding truncates the labeling tables: only a bench or test database will do."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    if "bench" not in name and not (keep and name.startswith("test_")):
        sys.exit(f"refusing to seed {name!r}: its name must contain 'bench' (or start with 'test_', kept)")
    return name


# --------------------------------------------------------------------------- setup


def seed(args: argparse.Namespace, env: dict[str, str]) -> tuple[int, list[str], dict[str, Any]]:
    """hot_path_bench's setup child (migrate, project, annotators, COPY seed), then the
    scenario's project settings: gold items and a 1-minute lease."""
    import psycopg

    if not args.keep_database:
        hp.recreate_database(args.database_url)
    start = time.perf_counter()
    setup = hp.run_child(
        "setup", argparse.Namespace(items=args.items, candidates=args.candidates, annotators=args.users), env
    )
    project_id, tokens, items = hp.load_bench_state(args.database_url, args.users)
    with psycopg.connect(**hp._conninfo(args.database_url), autocommit=True) as conn:
        conn.execute(
            "UPDATE labeling_project SET lease_minutes = %s, gold_rate = %s WHERE id = %s",
            (LEASE_MINUTES, args.gold_rate if args.gold_every else 0.0, project_id),
        )
        gold = 0
        if args.gold_every:
            gold = conn.execute(
                "UPDATE labeling_item i SET is_gold = true, gold_ranking = (SELECT "
                "jsonb_agg(jsonb_build_array(c.candidate_id) ORDER BY c.position) "
                "FROM labeling_itemcandidate c WHERE c.item_id = i.id) "
                "WHERE i.project_id = %s AND i.id %% %s = 0 AND i.rankings_count = 0 AND i.active_leases = 0",
                (project_id, args.gold_every),
            ).rowcount
        conn.execute("ANALYZE labeling_item")
    seconds = time.perf_counter() - start
    log(f"seeded {items:,} items ({gold} gold), {len(tokens)} annotators in {seconds:.1f} s")
    seed_seconds = {k: round(v, 2) for k, v in setup["seed"].items() if not k.startswith("mean")}
    return project_id, tokens, {"items": items, "gold_items": gold, "seconds": round(seconds, 1), "seed": seed_seconds}


# --------------------------------------------------------------------------- sweeper


def sweep_leases(lease_seconds: float, interval: float) -> None:
    """Child: assignments_expire with the clock moved so that leases last lease_seconds,
    every `interval` s until SIGTERM; prints {"expired", "sweeps", "errors"}."""
    import django

    django.setup()
    from datetime import timedelta

    from django.db import DatabaseError
    from django.utils import timezone

    from labeling.services.assignment import assignments_expire

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    shift = timedelta(minutes=LEASE_MINUTES) - timedelta(seconds=lease_seconds)
    out = {"expired": 0, "sweeps": 0, "errors": []}
    while not stopping:
        try:
            out["expired"] += assignments_expire(now=timezone.now() + shift)
        except DatabaseError as exc:  # as beat would: report it, sweep again next time
            out["errors"].append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        out["sweeps"] += 1
        time.sleep(interval)
    print(json.dumps(out), flush=True)


def start_sweeper(args: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-sweep",
        "--lease-seconds",
        str(args.lease_seconds),
        "--sweep-interval",
        str(args.sweep_interval),
    ]
    return subprocess.Popen(command, cwd=hp.REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)


def stop_sweeper(proc: subprocess.Popen) -> dict[str, Any]:
    proc.send_signal(signal.SIGTERM)
    try:
        stdout, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
    lines = (stdout or "").strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"expired": 0, "sweeps": 0, "errors": [f"sweeper exited {proc.returncode}"]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- locust


def run_locust(args: argparse.Namespace, base_url: str, project_id: int, work: Path) -> int:
    """locust as a subprocess; its console output goes to work/locust.log (the figures
    come from the report its quitting hook writes)."""
    think_max = float(args.think.split(",")[1])
    stop_timeout = int(think_max + 5)  # a user finishes the item it is on; lease holders are cut short
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(BENCH_DIR / "locustfile.py"),
        "--headless",
        "--host",
        base_url,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{int(args.seconds)}s",
        "--stop-timeout",
        str(stop_timeout),
        "--only-summary",
        "--exit-code-on-error",
        "0",  # load_bench judges the failures itself
        "--loglevel",
        "WARNING",
        "--project-id",
        str(project_id),
        "--tokens-file",
        str(work / "tokens.json"),
        "--report-file",
        str(work / "locust-report.json"),
        "--think",
        args.think,
        "--hold-seconds",
        str(args.lease_seconds + 2 * args.sweep_interval + 1),
    ]
    with open(work / "locust.log", "wb") as out:
        try:
            return subprocess.run(
                command, cwd=hp.REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                timeout=args.seconds + stop_timeout + 120, check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            return -1


# --------------------------------------------------------------------------- invariants


def check_retries(url: str, retries: list[dict[str, Any]]) -> dict[str, int]:
    """Each retried or twinned key: exactly one ranking stored if any reply was a
    success (exactly one 201 among them, every success naming that ranking), none if all
    were 409s."""
    import psycopg

    bad = 0
    with psycopg.connect(**hp._conninfo(url), autocommit=True) as conn:
        for record in retries:
            stored = [
                row[0]
                for row in conn.execute(
                    "SELECT r.id FROM labeling_ranking r JOIN accounts_apitoken t ON t.user_id = r.annotator_id "
                    "WHERE t.key_hash = %s AND r.idempotency_key = %s",
                    (hashlib.sha256(record["token"].encode()).hexdigest(), record["key"]),
                )
            ]
            successes = [(status, rid) for status, rid in record["responses"] if status in (200, 201)]
            if successes:
                ok = (
                    len(stored) == 1
                    and [s for s, _ in successes].count(201) == 1
                    and all(rid == stored[0] for _, rid in successes)
                )
            else:
                ok = not stored
            bad += not ok
    return {
        "retried_keys": len(retries),
        "sequential": sum(r["kind"] == "retry" for r in retries),
        "twins": sum(r["kind"] == "twin" for r in retries),
        "retry_violations": bad,
    }


def check_database(url: str, project_id: int, retries: list[dict[str, Any]]) -> dict[str, Any]:
    import psycopg

    out: dict[str, Any] = dict(hp.check_invariants(url, project_id))
    out.pop("violations")
    with psycopg.connect(**hp._conninfo(url), autocommit=True) as conn:
        for name, query in ROW_CHECKS.items():
            out[name] = conn.execute(query, {"p": project_id}).fetchone()[0]
        out["assignments"] = dict(
            conn.execute(
                "SELECT a.status, count(*) FROM labeling_assignment a JOIN labeling_item i ON i.id = a.item_id "
                "WHERE i.project_id = %s GROUP BY 1 ORDER BY 1",
                (project_id,),
            ).fetchall()
        )
        out["gold_rankings"] = conn.execute(
            "SELECT count(*) FROM labeling_ranking r JOIN labeling_item i ON i.id = r.item_id "
            "WHERE i.project_id = %s AND i.is_gold",
            (project_id,),
        ).fetchone()[0]
    out.update(check_retries(url, retries))
    out["violations"] = sum(out[name] for name in VIOLATIONS)
    return out


# --------------------------------------------------------------------------- main


def _children_cpu() -> float:
    """CPU seconds of the waited-for children: around run_locust, locust's own."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summarize(report: dict[str, Any]) -> None:
    log(f"{'endpoint':<52} {'reqs':>6} {'fails':>5} {'p50':>6} {'p95':>6} {'p99':>6} {'req/s':>6}")
    for name, e in [*report["endpoints"].items(), ("total", report["total"])]:
        if e["requests"]:
            log(
                f"{name:<52} {e['requests']:>6} {e['failures']:>5} {e['p50_ms']:>6.0f} {e['p95_ms']:>6.0f} "
                f"{e['p99_ms']:>6.0f} {e['requests_per_s']:>6.1f}"
            )
    log("outcomes: " + ", ".join(f"{k} x{v}" for k, v in report["outcomes"].items()))
    for error, count in report["errors"].items():
        log(f"FAILURE x{count}: {error}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--users", type=int, default=50, help="locust users, one annotator each")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="users started per second")
    parser.add_argument("--seconds", type=int, default=60, help="locust --run-time")
    parser.add_argument("--think", default="1,4", help="min,max seconds an annotator spends on an item")
    parser.add_argument("--lease-seconds", type=float, default=15.0, help="the lease, as the sweeper compresses it")
    parser.add_argument("--sweep-interval", type=float, default=1.0)
    parser.add_argument("--gold-every", type=int, default=200, help="every n-th item is gold (0: none)")
    parser.add_argument("--gold-rate", type=float, default=0.05, help="the project's gold_rate")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (0: a free one)")
    parser.add_argument("--database-url", default=os.environ.get("LOAD_DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--redis-url", default=hp.DEFAULT_REDIS)
    parser.add_argument("--keep-database", action="store_true", help="seed into the existing (empty) database")
    parser.add_argument("--max-failure-rate", type=float, default=0.001)
    parser.add_argument("--work-dir", help="tokens, locust report and gunicorn log (default: a new temp dir)")
    parser.add_argument("--child-sweep", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_sweep:
        sweep_leases(args.lease_seconds, args.sweep_interval)
        return 0
    db = check_scratch(args.database_url, args.keep_database)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="load-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hp.GUNICORN_LOG = str(work / "gunicorn.log")  # start_gunicorn appends its log there
    env = hp._env(args.database_url, args.redis_url)
    facts = hp.server_facts(args.database_url)
    cores = len(os.sched_getaffinity(0))
    load_start = [round(x, 2) for x in os.getloadavg()]
    log(f"machine: {cores} cores, Python {platform.python_version()}, PostgreSQL {facts['server_version']}; "
        f"load average {load_start}; database {db}; work dir {work}")

    project_id, tokens, setup = seed(args, env)
    (work / "tokens.json").write_text(json.dumps(tokens))
    (work / "locust-report.json").unlink(missing_ok=True)
    port = args.port or free_port()
    server = hp.start_gunicorn(env, port, args.workers, args.threads, "gthread")
    sweeper = start_sweeper(args, env)
    try:
        log(f"locust: {args.users} users at {args.spawn_rate:g}/s for {args.seconds} s, think {args.think} s, "
            f"leases of {args.lease_seconds:g} s; gunicorn {args.workers}x{args.threads} on port {port}")
        before = hp.cpu_snapshot(server, args.database_url)
        locust_before = _children_cpu()
        locust_rc = run_locust(args, f"http://127.0.0.1:{port}", project_id, work)
        cpu = {"locust_cpu_s": round(_children_cpu() - locust_before, 1)}
        after = hp.cpu_snapshot(server, args.database_url)
        cpu.update(gunicorn_cpu_s=round(after["gunicorn"] - before["gunicorn"], 1),
                   postgres_cpu_s=round(hp.postgres_cpu_between(before, after), 1))
    finally:
        sweep = stop_sweeper(sweeper)
        hp.stop_gunicorn(server)
    load_end = [round(x, 2) for x in os.getloadavg()]
    report_file = work / "locust-report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    if locust_rc != 0 or report is None:
        log(f"locust exited {locust_rc}; the end of its log:")
        log((work / "locust.log").read_text(errors="replace")[-3000:])
    if report is None:
        report = {"endpoints": {}, "total": {"requests": 0, "failures": 0}, "errors": {}, "outcomes": {},
                  "retries": [], "users": {}}
    summarize(report)
    requests = max(report["total"]["requests"], 1)
    for name in ("gunicorn", "postgres", "locust"):
        cpu[f"{name}_ms_per_request"] = round(cpu[f"{name}_cpu_s"] * 1000 / requests, 1)
    log(f"CPU: gunicorn {cpu['gunicorn_cpu_s']} s, PostgreSQL {cpu['postgres_cpu_s']} s, locust "
        f"{cpu['locust_cpu_s']} s; per request {cpu['gunicorn_ms_per_request']} + {cpu['postgres_ms_per_request']}"
        f" + {cpu['locust_ms_per_request']} ms; load average {load_end}")
    invariants = check_database(args.database_url, project_id, report["retries"])
    log("invariants: " + ", ".join(f"{k}={v}" for k, v in invariants.items()))
    log(f"sweeper: {sweep['expired']} leases expired in {sweep['sweeps']} sweeps, errors {sweep['errors'] or 'none'}")

    total = report["total"]
    failure_rate = total["failures"] / total["requests"] if total["requests"] else 1.0
    tracebacks = Path(hp.GUNICORN_LOG).read_text(errors="replace").count("Traceback")
    ok = (
        locust_rc == 0
        and total["requests"] > 0
        and invariants["violations"] == 0
        and failure_rate <= args.max_failure_rate
        and not sweep["errors"]
    )
    summary = {
        "bench": "load",
        "ok": ok,
        "items": setup["items"],
        "gold_items": setup["gold_items"],
        "users": args.users,
        "user_kinds": report["users"],
        "spawn_rate": args.spawn_rate,
        "seconds": args.seconds,
        "think_s": args.think,
        "lease_seconds": args.lease_seconds,
        "gunicorn": {"workers": args.workers, "threads": args.threads, "worker_class": "gthread"},
        "requests": total["requests"],
        "failures": total["failures"],
        "failure_rate": round(failure_rate, 5),
        "requests_per_s": total.get("requests_per_s", 0.0),
        "total": total,
        "endpoints": report["endpoints"],
        "errors": report["errors"],
        "outcomes": report["outcomes"],
        "cpu": cpu,
        "sweeper": sweep,
        "server_tracebacks": tracebacks,
        "invariants": invariants,
        "violations": invariants["violations"],
        "locust_exit": locust_rc,
        "setup": setup,
        "load_avg_start": load_start,
        "load_avg_end": load_end,
        "machine": {"cores": cores, "python": platform.python_version(), "postgres": facts["server_version"]},
    }
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
