"""Fault injection against real processes: Celery worker subprocesses, a private
redis-server, gunicorn, and the PostgreSQL test database.

- Redis loses its data (FLUSHALL) with runs queued: the stale-run sweep re-sends them from
  the database and each completes exactly once.
- Redis restarts (killed, started empty on the same port): the same worker process
  reconnects and takes new work; a run created while Redis was down is accepted, kept
  QUEUED, re-sent by the sweep and completed.
- PostgreSQL terminates the app's connections (pg_terminate_backend) under load: errors
  are bounded by the connections killed, every request succeeds again after a short
  window, /readyz answers 200.
- An import past its soft time limit fails with a message naming the limit and releases
  its claim (the sweep does not retry it); the worker goes on to the next run.

(SIGKILL of a worker mid-generation and mid-training: test_generation_worker.py,
test_training_worker.py.) Each test prints one JSON line of fault figures (pytest -s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from accounts.tokens import token_create
from config.celery import app
from core.runs import Run, runs_sweep_stale, send_run_task
from labeling.models import Candidate, ImportJob, Item, Project, Prompt, Role
from tests.conftest import client_for
from tests.factories import MembershipFactory, UserFactory, make_items
from tests.integration.conftest import ROOT, Worker, wait_until
from tests.integration.conftest import test_database_url as database_url

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROWS_PER_FILE = 20


def report(name: str, **figures: object) -> None:
    print(json.dumps({"fault": name, **figures}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- Redis


class PrivateRedis:
    """A redis-server of this test's own on a free port, without persistence: a restart
    comes back empty, as a crashed cache-style Redis does."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, what="redis-server to listen")

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def command(self, *args: str) -> str:
        result = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                                text=True, timeout=10, check=True)
        return result.stdout.strip()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis that this process's Celery app publishes to while the test runs."""
    redis = PrivateRedis(tmp_path)
    redis.start()
    previous = app.conf.broker_url
    use_broker(redis.url)
    try:
        yield redis
    finally:
        use_broker(previous)
        redis.kill()


def use_broker(url: str) -> None:
    """Point this process's Celery app at another broker; the producer pool caches its
    connections, so it is dropped too, and so are kombu's global pools: their producer
    pool for the old URL still points at the closed connection pool, and switching back
    to that URL would hand it out ("Acquire on closed pool" in every later test)."""
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None
    pools.reset()
    app.conf.broker_url = url


def jsonl(tag: str, count: int = ROWS_PER_FILE) -> bytes:
    rows = ({"prompt": f"{tag} question {n}?", "candidates": [f"{tag} yes {n}", f"{tag} no {n}"]}
            for n in range(count))
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload(client, project: Project, content: bytes) -> int:  # noqa: ANN001
    response = client.post(f"/api/projects/{project.pk}/imports",
                           {"file": SimpleUploadedFile("rows.jsonl", content)}, format="multipart")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def statuses(job_ids: list[int]) -> list[str]:
    found = dict(ImportJob.objects.filter(pk__in=job_ids).values_list("pk", "status"))
    return [found[pk] for pk in job_ids]


def all_finished(job_ids: list[int]) -> bool:
    return all(s in {"done", "failed", "cancelled"} for s in statuses(job_ids))


def task_successes(worker: Worker) -> int:
    return sum(1 for line in worker.output().splitlines()
               if "labeling.tasks.import_prompts[" in line and "succeeded" in line)


def assert_imported_once(job_ids: list[int], files: int) -> None:
    jobs = list(ImportJob.objects.filter(pk__in=job_ids))
    assert [(j.status, j.attempts) for j in jobs] == [("done", 1)] * len(job_ids), \
        [(j.pk, j.status, j.attempts, j.error) for j in jobs]
    assert all(j.report["prompts_added"] == ROWS_PER_FILE for j in jobs)
    counts = (Prompt.objects.count(), Candidate.objects.count(), Item.objects.count())
    assert counts == (files * ROWS_PER_FILE, 2 * files * ROWS_PER_FILE, files * ROWS_PER_FILE)


def test_runs_lost_to_flushall_are_resent_by_the_sweep_and_done_once(
    private_redis: PrivateRedis, project, project_admin, tmp_path, settings,  # noqa: ANN001
) -> None:
    client = client_for(project_admin)
    jobs = [upload(client, project, jsonl(f"flush{n}")) for n in range(3)]
    queued_messages = int(private_redis.command("LLEN", "default"))

    private_redis.command("FLUSHALL")
    assert private_redis.command("DBSIZE") == "0"
    worker = Worker(tmp_path / "worker.log", {"REDIS_URL": private_redis.url})
    try:
        time.sleep(2)  # an idle worker on an empty broker: nothing can start these runs
        stranded = statuses(jobs)
        settings.RUN_STALE_AFTER_SECONDS = 1
        started = time.monotonic()
        counts = runs_sweep_stale()
        for job_id in jobs:  # and a duplicate of every message: the claim must absorb it
            send_run_task(ImportJob.task_name, job_id)
        wait_until(lambda: all_finished(jobs), timeout=60, what="the re-sent imports")
        recovery = time.monotonic() - started
        wait_until(lambda: task_successes(worker) >= 2 * len(jobs), timeout=30,
                   what="the duplicate messages")
        again = runs_sweep_stale()
    finally:
        worker.stop()

    assert queued_messages == len(jobs)
    assert stranded == ["queued"] * len(jobs)
    assert counts == {"requeued": 0, "failed": 0, "resent": len(jobs)}
    assert_imported_once(jobs, files=len(jobs))
    assert again == {"requeued": 0, "failed": 0, "resent": 0}
    report("redis FLUSHALL with runs queued", runs_lost=queued_messages, resent_by_sweep=counts["resent"],
           duplicate_messages=len(jobs), runs_done=len(jobs), attempts_per_run=1,
           seconds_from_sweep_to_done=round(recovery, 2))


def test_worker_reconnects_after_redis_restarts_and_the_sweep_resends_a_run_created_meanwhile(
    private_redis: PrivateRedis, project, project_admin, tmp_path, settings,  # noqa: ANN001
) -> None:
    client = client_for(project_admin)
    worker = Worker(tmp_path / "worker.log", {"REDIS_URL": private_redis.url})
    pid = worker.process.pid
    try:
        before = upload(client, project, jsonl("before"))
        wait_until(lambda: all_finished([before]), timeout=60, what="the first import")

        private_redis.kill()
        down_at = time.monotonic()
        # Accepted while Redis is down: the row is committed, the message cannot be sent.
        during = upload(client, project, jsonl("during"))
        private_redis.start()
        outage = time.monotonic() - down_at

        after = upload(client, project, jsonl("after"))
        wait_until(lambda: all_finished([after]), timeout=90, what="an import after the restart")
        reconnected_in = time.monotonic() - down_at
        stranded = statuses([during])

        settings.RUN_STALE_AFTER_SECONDS = 1
        time.sleep(1.1)
        counts = runs_sweep_stale()
        wait_until(lambda: all_finished([during]), timeout=60, what="the re-sent import")
        same_process = worker.process.poll() is None and worker.process.pid == pid
    finally:
        worker.stop()

    assert "Connection to broker lost" in worker.output()
    assert same_process, "the worker had to be restarted"
    assert stranded == ["queued"]
    assert counts["resent"] == 1 and counts["requeued"] == 0
    assert_imported_once([before, during, after], files=3)
    report("redis restart (killed, started empty)", outage_seconds=round(outage, 2),
           runs_created_during_outage=1, resent_by_sweep=counts["resent"], worker_restarted=False,
           seconds_from_kill_to_new_run_done=round(reconnected_in, 2), request_errors=0)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    what: str


@dataclass
class Load:
    """Annotators in closed loops over HTTP: next item, then submit its ranking (or a
    project GET once nothing is left); every response and transport error is recorded."""

    base: str
    project_id: int
    tokens: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._loop, args=(t,), daemon=True) for t in self.tokens]
        for thread in threads:
            thread.start()
        return threads

    def _loop(self, token: str) -> None:
        with httpx.Client(base_url=self.base, timeout=30,
                          headers={"Authorization": f"Token {token}"}) as http:
            while not self.stop.is_set():
                response = self._request(http, "GET", f"/api/projects/{self.project_id}/next")
                if response is None or response.status_code != 200:
                    if response is not None and response.status_code == 204:
                        self._request(http, "GET", f"/api/projects/{self.project_id}/")
                    continue
                body = response.json()
                self._request(http, "POST", f"/api/assignments/{body['id']}/ranking",
                              json={"tiers": [[c["id"]] for c in body["candidates"]]},
                              headers={"Idempotency-Key": uuid.uuid4().hex})

    def _request(self, http: httpx.Client, method: str, url: str, **kwargs: object
                 ) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.outcomes.append(Outcome(started, time.monotonic(), False, f"{method} {url}: {exc!r}"))
            return None
        ok = response.status_code < 400
        self.outcomes.append(Outcome(started, time.monotonic(), ok, f"{method} {url}: {response.status_code}"))
        return response


def server_env() -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "0",
            "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0", "LOG_LEVEL": "WARNING",
            "DATABASE_CONN_MAX_AGE": "60"}  # persistent connections: what a kill leaves stale


@contextmanager
def gunicorn(port: int, log: Path) -> Iterator[subprocess.Popen]:
    """The production server shape (gthread, persistent DB connections), 2 x 2 threads."""
    command = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind",
               f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread", "--threads", "2",
               "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=ROOT, env=server_env(), stdout=open(log, "wb"),  # noqa: SIM115
                               stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=60, what="gunicorn to answer /healthz")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def terminate_app_connections() -> int:
    """pg_terminate_backend on every client connection to the test database but this
    test's own: the gunicorn workers' persistent connections."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            [connection.settings_dict["NAME"]],
        )
        return cursor.fetchone()[0]


def annotator_tokens(project: Project, count: int) -> list[str]:
    tokens = []
    for n in range(count):
        user = UserFactory(username=f"loader{n}")
        MembershipFactory(user=user, project=project, role=Role.ANNOTATOR)
        tokens.append(token_create(user=user, name="loader")[1])
    return tokens


def test_app_recovers_when_postgres_terminates_its_connections_under_load(
    project, tmp_path,  # noqa: ANN001
) -> None:
    make_items(project, 120, k=3)
    port, rounds = free_port(), 3
    load = Load(f"http://127.0.0.1:{port}", project.pk, annotator_tokens(project, 4))
    faults: list[tuple[float, int]] = []
    with gunicorn(port, tmp_path / "gunicorn.log"):
        threads = load.run()
        try:
            wait_until(lambda: sum(o.ok for o in load.outcomes) >= 40, timeout=60, what="warm-up")
            for _ in range(rounds):
                faults.append((time.monotonic(), terminate_app_connections()))
                time.sleep(2)
            recovered_from = time.monotonic() + 1  # requests started 3 s after the last fault
            time.sleep(4)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=30)
        # Idle connections killed between requests: the health check (CONN_HEALTH_CHECKS)
        # replaces them before a query fails, so not even one request may error.
        idle_killed = terminate_app_connections()
        idle_answers = [httpx.get(f"http://127.0.0.1:{port}/api/projects/{project.pk}/", timeout=10,
                                  headers={"Authorization": f"Token {token}"}).status_code
                        for token in load.tokens * 2]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)

    outcomes = list(load.outcomes)
    errors = [o for o in outcomes if not o.ok]
    terminated = sum(killed for _, killed in faults)
    after = [o for o in outcomes if o.started >= recovered_from]
    first_fault = faults[0][0]
    # Per round: how long after the kill its last failed request ended.
    bounds = [at for at, _ in faults[1:]] + [float("inf")]
    recovery = [max((o.ended - at for o in errors if at <= o.ended < end), default=0.0)
                for (at, _), end in zip(faults, bounds, strict=True)]
    report("pg_terminate_backend under load", rounds=rounds, connections_terminated=terminated,
           requests=len(outcomes), errors=len(errors), requests_after_recovery=len(after),
           errors_after_recovery=sum(not o.ok for o in after),
           seconds_from_kill_to_last_error=[round(r, 2) for r in recovery],
           idle_connections_terminated=idle_killed, idle_phase_errors=sum(c != 200 for c in idle_answers),
           error_samples=[o.what for o in errors[:5]])

    assert all(killed >= 1 for _, killed in faults), faults  # each round hit live connections
    assert len(errors) <= terminated, [o.what for o in errors]
    assert after and all(o.ok for o in after), [o.what for o in after if not o.ok]
    assert not [o for o in errors if o.ended < first_fault], "errors before any fault"
    assert idle_killed >= 1 and idle_answers == [200] * len(idle_answers), (idle_killed, idle_answers)
    assert ready.status_code == 200, ready.text
    # Every acknowledged ranking is stored; a failed submit stored at most its own row
    # (a kill after COMMIT but before the response).
    with psycopg.connect(database_url().replace("postgres://", "postgresql://")) as conn:
        stored = conn.execute("SELECT count(*) FROM labeling_ranking").fetchone()[0]
    created = sum(o.what.endswith(": 201") for o in outcomes)
    failed_submits = sum(not o.ok and "/ranking" in o.what for o in outcomes)
    assert created <= stored <= created + failed_submits


# --------------------------------------------------------------------------- time limits


def test_an_import_past_its_time_limit_fails_and_releases_its_claim(
    project, project_admin, tmp_path, settings,  # noqa: ANN001
) -> None:
    client = client_for(project_admin)
    worker = Worker(tmp_path / "worker.log", {"IMPORT_TIME_LIMIT_SECONDS": "1",
                                              "RUN_TIME_LIMIT_GRACE_SECONDS": "30"})
    try:
        slow = upload(client, project, jsonl("slow", count=10_000))
        wait_until(lambda: all_finished([slow]), timeout=60, what="the slow import to stop")
        small = upload(client, project, jsonl("small", count=5))
        wait_until(lambda: all_finished([small]), timeout=30, what="the next import")
    finally:
        worker.stop()
    job, next_job = ImportJob.objects.get(pk=slow), ImportJob.objects.get(pk=small)
    took = (job.finished_at - job.started_at).total_seconds()

    settings.RUN_STALE_AFTER_SECONDS = 1
    time.sleep(1.1)
    counts = runs_sweep_stale()
    job.refresh_from_db()
    report("task past its soft time limit", soft_limit_seconds=1, seconds_to_failed=round(took, 2),
           status=job.status, attempts=job.attempts, requeued_by_sweep=counts["requeued"],
           prompts_written_before_stop=Prompt.objects.filter(messages__0__content__startswith="slow").count())

    assert "Soft time limit (1s) exceeded" in worker.output()
    assert job.status == Run.Status.FAILED and job.attempts == 1
    assert job.error == "time limit exceeded: stopped at the soft limit of 1 s"
    assert 1 <= took < 30, "stopped by the soft limit, not killed at the hard one"
    assert counts == {"requeued": 0, "failed": 0, "resent": 0}
    assert job.status == Run.Status.FAILED
    assert next_job.status == Run.Status.DONE
