"""Integration fixtures: a real Celery worker process on the Redis broker, using the
PostgreSQL test database that pytest-django created."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """A `celery -A config worker` subprocess; its log is kept for failure messages."""

    def __init__(self, log: Path, extra_env: dict[str, str]) -> None:
        self.log = log
        env = {**os.environ, "DATABASE_URL": test_database_url(), **extra_env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q",
             "default,generate,train", "--concurrency", "1", "--purge", "-l", "INFO",
             "--without-gossip", "--without-mingle", "-n", f"test-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,  # its own process group: kill() takes the pool children too
        )
        self.wait_for("ready.", timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"worker never printed {text!r}:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: a machine that died mid-task."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown, else SIGKILL to the whole group: a worker left behind (its main
        process or a pool child) would take the next tests' tasks from the same queue."""
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # pool children outlive their parent
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def celery_worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[Worker]:
    """Module-scoped: a worker left running would take the tasks of later tests, which
    start workers of their own with other settings (artifact root, model folder)."""
    worker = Worker(tmp_path_factory.mktemp("worker") / "worker.log", {})
    yield worker
    worker.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
