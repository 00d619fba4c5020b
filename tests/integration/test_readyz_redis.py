"""/readyz reports each dependency and answers 503 while Redis is down: a real Redis on
another port is started, stopped and started again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from django.test import Client

from config.celery import app

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(port: int, folder: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


@pytest.fixture
def own_redis(tmp_path) -> Iterator[int]:  # noqa: ANN001
    port = free_port()
    process = start_redis(port, str(tmp_path))
    previous = app.conf.broker_url
    app.conf.broker_url = f"redis://127.0.0.1:{port}/0"
    try:
        yield port
    finally:
        app.conf.broker_url = previous
        process.kill()


def test_readyz_follows_redis_down_and_back(own_redis: int, tmp_path) -> None:  # noqa: ANN001
    client = Client()
    up = client.get("/readyz")
    subprocess.run(["redis-cli", "-p", str(own_redis), "shutdown", "nosave"], check=False,
                   capture_output=True, timeout=10)
    time.sleep(0.3)
    down = client.get("/readyz")
    restarted = start_redis(own_redis, str(tmp_path))
    try:
        back = client.get("/readyz")
    finally:
        restarted.kill()

    assert up.status_code == 200 and up.json()["checks"]["broker"] == "ok"
    assert down.status_code == 503 and down.json()["checks"]["broker"].startswith("error")
    assert down.json()["checks"]["database"] == "ok"
    assert back.status_code == 200
