"""The bounded CI version of bench/load_bench.py: 20 locust annotators for 20 s against
gunicorn on 127.0.0.1 and the PostgreSQL test database (2,000 items, leases compressed
to 6 s by the sweeper), then the invariants checked in SQL.

Expected replies, so not failures (see bench/locustfile.py EXPECTED): next 200/204;
ranking 201, or 409 `lease_expired` / `item_closed` when it arrives after its lease was
swept (these are the "no slot" answers); a retry with the same Idempotency-Key 200; a
concurrent twin 200/201 (or the same 409s); skip 200, or 409 `already_expired` after the
sweep. Anything else (400, 404, another 409 code, 5xx, a timeout) is a failure, and the
test allows none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.integration import conftest as integration

# transaction=True: gunicorn and the sweeper commit in other processes; the flush after
# the test empties the tables the bench seeded.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_twenty_annotators_for_twenty_seconds_break_no_invariant(tmp_path: Path) -> None:
    assert connection.vendor == "postgresql"
    command = [
        sys.executable, "bench/load_bench.py", "--keep-database",
        "--database-url", integration.test_database_url(), "--redis-url", os.environ["REDIS_URL"],
        "--items", "2000", "--users", "20", "--spawn-rate", "10", "--seconds", "20",
        "--think", "0.5,2", "--lease-seconds", "6", "--workers", "2", "--threads", "4",
        "--max-failure-rate", "0", "--work-dir", str(tmp_path),
    ]

    proc = subprocess.run(command, cwd=integration.ROOT, capture_output=True, text=True, timeout=150, check=False)

    output = proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["errors"] == {}, output
    assert summary["failures"] == 0, output
    assert summary["server_tracebacks"] == 0, (tmp_path / "gunicorn.log").read_text()[-3000:]
    invariants = summary["invariants"]
    for name in ("over_required", "over_required_rows", "duplicate_live_rankings", "rankings_count_mismatch",
                 "active_leases_mismatch", "complete_below_required", "retry_violations"):
        assert invariants[name] == 0, (name, output)
    assert proc.returncode == 0, output
    # The run did the work it exists for: rankings, skips, retried keys, expired leases.
    assert summary["requests"] >= 100, output
    assert invariants["rankings_total"] >= 50, output
    assert invariants["assignments"].get("skipped", 0) >= 1, output
    assert invariants["retried_keys"] >= 1, output
    assert summary["sweeper"]["expired"] >= 1, output
    assert summary["sweeper"]["errors"] == [], output
