"""The Python client (clients/python) against a live server: gunicorn on the PostgreSQL
test database and a real Celery worker on Redis sharing its artifact and upload folders.

- the README's ML-engineer snippet runs as written: import -> generate (builtin-tiny) ->
  simulated annotators rank -> snapshot -> train (reward, a few steps) -> promote;
- every example of clients/python/README.md runs, in order;
- a webhook to a local receiver: the event it gets verifies, and a redelivery from the
  API resends the same event id;
- errors come back as typed exceptions carrying the API's code.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from tests.integration.conftest import Worker, wait_until
from tests.integration.test_api_fuzz import Server, purge_queues

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Write a haiku about tea.", "Explain recursion to a child.", "Name three uses of a brick.",
           "What makes a good password?", "Describe the smell of rain.", "Give a tip for learning to juggle."]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def readme_snippet() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### From a notebook: the Python client", 1)[1].split("\n## ", 1)[0]
    return python_blocks(section)


# --------------------------------------------------------------------------- the live stack


@pytest.fixture(scope="module")
def stack(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory,
          tiny_model_dir: Path) -> Iterator[tuple[Server, Worker]]:
    from tests.integration import conftest as integration

    folder = tmp_path_factory.mktemp("client-stack")
    shared = {"UPLOAD_ROOT": str(folder / "uploads"), "BUILTIN_TINY_DIR": str(tiny_model_dir),
              "TORCH_NUM_THREADS": "1", "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,hooks.example.com",
              "WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_SECONDS": "1"}
    with django_db_blocker.unblock():
        database_url = integration.test_database_url()
    server = Server(database_url=database_url, redis_url=os.environ["REDIS_URL"], folder=folder, extra_env=shared)
    worker = Worker(folder / "worker.log", {**shared, "ARTIFACT_ROOT": str(server.artifact_root)})
    yield server, worker
    worker.stop()
    server.stop()
    purge_queues()


@pytest.fixture
def demo(stack: tuple[Server, Worker], transactional_db: None, monkeypatch: pytest.MonkeyPatch,
         tmp_path: Path) -> dict[str, Any]:
    """A demo-like project "demo" (k 4, overlap 3), its admin's token in ORDINAL_TOKEN, the
    server in ORDINAL_URL, a prompts.jsonl in the working directory."""
    from accounts.tokens import token_create
    from labeling.models import Project, Role
    from tests.factories import MembershipFactory, UserFactory

    server, worker = stack
    project = Project.objects.create(name="Demo", slug="demo", is_demo=True, k=4, overlap=3)
    admin = UserFactory(username="ml-engineer")
    MembershipFactory(user=admin, project=project, role=Role.ADMIN)
    monkeypatch.setenv("ORDINAL_URL", server.base_url)
    monkeypatch.setenv("ORDINAL_TOKEN", token_create(user=admin, name="notebook")[1])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {"project": project, "server": server, "worker": worker}


def run_blocks(blocks: list[str], namespace: dict[str, Any], stack: dict[str, Any]) -> None:
    for block in blocks:
        try:
            exec(compile(block, "<readme>", "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as exc:
            raise AssertionError(f"{exc!r} in:\n{block}\n--- worker:\n{stack['worker'].output()[-3000:]}\n"
                                 f"--- gunicorn:\n{stack['server'].errors()[-3000:]}") from exc


def rank_everything(slug: str) -> None:
    """People rank the open items (simulated, agreeing mostly): not the client's job."""
    call_command("simulate_annotators", "--project", slug, "--create", "3", "--noise", "0.05", "--tie-rate", "0")


# --------------------------------------------------------------------------- the tests


def test_the_readme_snippet_runs_import_generate_snapshot_train_promote(demo: dict[str, Any]) -> None:
    from labeling.models import Candidate, Item
    from training.models import ModelVersion

    first, second = readme_snippet()
    assert len([line for block in (first, second) for line in block.splitlines()
                if line.strip() and not line.startswith("#")]) <= 10
    namespace: dict[str, Any] = {}

    run_blocks([first], namespace, demo)
    assert Candidate.objects.filter(prompt__project=demo["project"], origin="model").count() == 4 * len(PROMPTS)
    rank_everything("demo")
    assert Item.objects.filter(project=demo["project"], status="accepted").exists()
    run_blocks([second], namespace, demo)

    pairs, run = namespace["pairs"], namespace["run"]
    assert pairs.num_rows > 0 and {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert run.status == "done" and run.results["global_step"] == 4
    current = ModelVersion.objects.get(project=demo["project"], is_current=True)
    assert current.pk == run.progress["model_version"] and current.kind == "reward"


def test_every_example_of_the_client_docs_runs(demo: dict[str, Any]) -> None:
    from tests.factories import make_items

    make_items(demo["project"], 8, k=4)
    rank_everything("demo")
    blocks = python_blocks((ROOT / "clients" / "python" / "README.md").read_text())
    assert len(blocks) >= 7

    namespace: dict[str, Any] = {}
    run_blocks(blocks, namespace, demo)

    assert namespace["pairs"].num_rows == namespace["snapshot"].counts["pairs-train"] > 0
    assert namespace["event"]["type"] == "snapshot.ready"
    assert namespace["version"].is_current


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 1
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                failing = receiver.fail_first > 0
                receiver.fail_first -= 1
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ordinal"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_webhook_is_signed_retried_and_redelivered_under_one_event_id(demo: dict[str, Any]) -> None:
    from ordinal_client import Ordinal
    from ordinal_client.webhooks import verify_signature

    receiver = Receiver()
    ordinal = Ordinal()
    project = ordinal.project("demo")
    hook = project.add_webhook(receiver.url, ["snapshot.ready"])

    snapshot = project.snapshot(kinds=["pairs"]).wait(progress=False)  # empty, but ready
    # The first attempt gets a 503; the retry (WEBHOOK_RETRY_SECONDS=1) a 204.
    wait_until(lambda: len(receiver.requests) >= 2, timeout=60, what="a delivery and its retry")
    delivery = hook.deliveries()[0]
    wait_until(lambda: hook.deliveries()[0]["status"] == "succeeded", timeout=30, what="the delivery to succeed")
    hook.redeliver(delivery["id"])
    wait_until(lambda: len(receiver.requests) >= 3, timeout=60, what="the redelivery")
    receiver.server.shutdown()

    events = [verify_signature(hook.secret, body, headers) for headers, body in receiver.requests]
    assert {event["id"] for event in events} == {delivery["event_id"]}
    assert events[0]["data"]["snapshot"] == snapshot.id and events[0]["type"] == "snapshot.ready"
    log = hook.deliveries()[0]
    assert log["attempts"] == 1 and [a["status_code"] for a in log["log"]] == [204, 204, 503]
    assert all(a["latency_ms"] is not None for a in log["log"])


def test_errors_are_typed_and_carry_the_apis_code(demo: dict[str, Any]) -> None:
    from ordinal_client import AuthenticationError, NotFound, Ordinal, PermissionDenied, ValidationError

    ordinal = Ordinal()
    with pytest.raises(NotFound) as missing:
        ordinal.snapshot(10**9)
    with pytest.raises(ValidationError) as invalid:
        ordinal.project("demo").train("reward", 10**9)
    with pytest.raises(AuthenticationError) as unauthenticated:
        Ordinal(token="not-a-token").projects()

    assert missing.value.code == "not_found" and missing.value.status == 404
    assert invalid.value.status == 400 and "snapshot" in invalid.value.detail
    assert unauthenticated.value.code == "authentication_failed"
    assert issubclass(PermissionDenied, Exception)
