"""Issue #15, items 1 and 2: where generation sends prompts and keys, and which models
a project admin may name. A canary HTTP server on 127.0.0.1 records every request and
its headers, so "nothing reached it" is a count, not a hope.

Checklist:

1. SSRF and API-key leak through `base_url`
   - [x] `base_url` in a generation-run body is a 400 and nothing reaches that URL
   - [x] a row forged with backend_options["base_url"] never reaches that URL
   - [x] an endpoint on a loopback address (an IP, or a name that resolves to one) is
         refused after DNS resolution unless the operator set allow_private
   - [x] with allow_private the endpoint gets its own key, never OPENAI_API_KEY
   - [x] a body of an error answer never lands in the run's error or skip reasons
   - [x] an endpoint removed from the configuration fails the run clearly
   - [x] an endpoint's model allow-list; the audit names the endpoint
   - [x] GET /api/projects/{id}/generation-options: names only, reviewer+
   - [x] CLI: `generate --base-url` is gone; `--endpoint` with an unknown name fails
   - [x] GENERATION_ENDPOINTS and MODEL_DIRS are parsed strictly
2. Local paths as models
   - [x] generation `model` and training `base_model`: another project's artifacts,
         /etc, `..`, a symlink out of MODEL_DIRS are a 400 with one message, whether
         the path exists or not
   - [x] a folder under MODEL_DIRS, a hub id and the built-in aliases are accepted
   - [x] builtin-tiny takes no model (it would build the tiny model into that folder)
   - [x] rows forged with a path are refused when the worker executes them
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from core.errors import DomainError
from core.runs import Run, run_claim
from labeling.models import AuditEvent, Candidate, Project
from tests.factories import PromptFactory, make_items
from training.generation import generation_run_create, generation_run_execute
from training.models import DatasetSnapshot, GenerationRun, TrainingRun
from training.runs import training_run_execute
from training.snapshots import snapshot_build, snapshot_create

PLATFORM_KEY = "sk-platform-key-must-stay-home"
SECRET_BODY = "SECRET-INTERNAL-BODY-7f3a"
BODY = {"backend": "openai", "model": "m", "k": 2, "max_new_tokens": 4}


@dataclass
class Canary:
    """Records every request; answers `status` with `body` (None: a valid completion)."""

    url: str
    port: int
    status: int = 200
    body: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    canary: Canary

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        with self.canary.lock:
            self.canary.requests.append({"method": self.command, "path": self.path,
                                         "headers": dict(self.headers.items())})
        n = payload.get("n", 1)
        body = self.canary.body if self.canary.body is not None else json.dumps({
            "choices": [{"index": i, "message": {"content": f"canary {i}"}, "finish_reason": "stop"}
                        for i in range(n)],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n}})
        data = body.encode()
        self.send_response(self.canary.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")  # retried errors come back at once
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *args: object) -> None:
        pass


def _serve() -> Iterator[Canary]:
    handler = type("CanaryHandler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port = server.server_address[1]
    handler.canary = Canary(url=f"http://127.0.0.1:{port}/v1", port=port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield handler.canary
    server.shutdown()
    server.server_close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    yield from _serve()


@pytest.fixture
def other_canary() -> Iterator[Canary]:
    yield from _serve()


@pytest.fixture
def prompt(project: Project):  # noqa: ANN201
    return PromptFactory(project=project, messages=[{"role": "user", "content": "Hi?"}])


@pytest.fixture
def platform_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", PLATFORM_KEY)
    return PLATFORM_KEY


def endpoint(url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": url, "api_key_env": "", "models": [], "allow_private": False, **extra}


def execute(run: GenerationRun) -> GenerationRun:
    claimed = run_claim(GenerationRun, run.pk)
    if claimed is not None:
        generation_run_execute(claimed)
    run.refresh_from_db()
    return run


def execute_all(project: Project) -> None:
    """What a worker would do with every run the request created (none, after the fix)."""
    for run in GenerationRun.objects.filter(project=project):
        execute(run)


def keys_seen(*canaries: Canary) -> list[str | None]:
    return [r["headers"].get("Authorization") for c in canaries for r in c.requests]


# --------------------------------------------------------------------------- item 1


def test_base_url_in_the_request_is_a_400_and_nothing_reaches_it(
        as_user, project_admin, project, prompt, canary, platform_key) -> None:  # noqa: ANN001
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/generation-runs",
                                           {**BODY, "base_url": canary.url}, format="json")
    execute_all(project)

    assert PLATFORM_KEY not in json.dumps(canary.requests)
    assert canary.requests == []
    assert response.status_code == 400, response.content
    assert "unknown field" in response.json()["base_url"][0]
    assert not GenerationRun.objects.filter(project=project).exists()


def test_a_row_forged_with_base_url_never_reaches_it(project, prompt, canary, platform_key,
                                                     settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {}
    run = GenerationRun.objects.create(project=project, backend="openai", model="m",
                                       params={"k": 2, "max_new_tokens": 4},
                                       backend_options={"base_url": canary.url},
                                       prompt_ids=[prompt.pk])

    run = execute(run)

    assert PLATFORM_KEY not in json.dumps(canary.requests)
    assert canary.requests == []
    assert run.status == Run.Status.FAILED


def test_a_forged_base_url_gives_way_to_the_named_endpoint(project, prompt, canary, other_canary,
                                                           platform_key, settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {"local": endpoint(other_canary.url, allow_private=True)}
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="local",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)
    GenerationRun.objects.filter(pk=run.pk).update(
        backend_options={"base_url": canary.url, "api_key": PLATFORM_KEY})

    run = execute(run)

    assert run.status == Run.Status.DONE, run.error
    assert canary.requests == []
    assert len(other_canary.requests) == 1
    assert keys_seen(other_canary) == [None]  # the endpoint names no key: none is sent


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_endpoint_is_refused_after_resolution(project, prompt, canary, platform_key,
                                                         settings, host) -> None:  # noqa: ANN001
    url = f"http://{host}:{canary.port}/v1"
    settings.GENERATION_ENDPOINTS = {"inside": endpoint(url, api_key_env="OPENAI_API_KEY")}
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="inside",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)

    run = execute(run)

    assert canary.requests == []
    assert run.status == Run.Status.FAILED
    assert "endpoint 'inside'" in run.error and "allow_private" in run.error
    assert str(canary.port) not in run.error


def test_an_allowed_private_endpoint_gets_its_own_key_only(project, prompt, canary, other_canary,
                                                           platform_key, settings,
                                                           monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("LOCAL_VLLM_KEY", "sk-local-vllm")
    settings.GENERATION_ENDPOINTS = {
        "local": endpoint(canary.url, api_key_env="LOCAL_VLLM_KEY", allow_private=True),
        "openai": endpoint(other_canary.url, api_key_env="OPENAI_API_KEY", allow_private=True),
    }
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="local",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)

    run = execute(run)

    assert run.status == Run.Status.DONE, run.error
    assert keys_seen(canary) == ["Bearer sk-local-vllm"]
    assert other_canary.requests == []
    assert PLATFORM_KEY not in json.dumps(canary.requests)


@pytest.mark.parametrize("status", [500, 401, 302])
def test_an_error_body_never_reaches_the_run(project, prompt, canary, settings, status) -> None:  # noqa: ANN001
    canary.status, canary.body = status, json.dumps({"error": SECRET_BODY})
    settings.GENERATION_ENDPOINTS = {"local": endpoint(canary.url, allow_private=True)}
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="local",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)

    run = execute(run)

    assert run.status == Run.Status.FAILED
    assert SECRET_BODY not in run.error
    assert f"HTTP {status}" in run.error and "endpoint 'local'" in run.error
    assert canary.url not in run.error


def test_a_rejected_prompt_is_skipped_without_the_body(project, prompt, canary, settings) -> None:  # noqa: ANN001
    canary.status, canary.body = 400, json.dumps({"error": SECRET_BODY})
    settings.GENERATION_ENDPOINTS = {"local": endpoint(canary.url, allow_private=True)}
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="local",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)

    run = execute(run)

    assert run.status == Run.Status.DONE
    assert run.errors and "HTTP 400" in run.errors[0]["reason"]
    assert SECRET_BODY not in json.dumps(run.errors)


def test_an_endpoint_removed_from_the_configuration_fails_the_run(project, prompt, canary,
                                                                  settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {"gone": endpoint(canary.url, allow_private=True)}
    run = generation_run_create(project=project, backend="openai", model="m", endpoint="gone",
                                params={"k": 2, "max_new_tokens": 4}, enqueue=False)
    settings.GENERATION_ENDPOINTS = {}

    run = execute(run)

    assert run.status == Run.Status.FAILED
    assert "endpoint 'gone'" in run.error and "no longer configured" in run.error
    assert canary.requests == []


def test_endpoint_names_and_models_are_checked_and_audited(as_user, project_admin, project,
                                                           prompt, settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {
        "vllm": endpoint("http://vllm.internal:8000/v1", models=["llama-3-8b"]),
        "openai": endpoint("https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"),
    }
    url = f"/api/projects/{project.pk}/generation-runs"
    client = as_user(project_admin)

    unknown = client.post(url, {**BODY, "endpoint": "elsewhere"}, format="json")
    unlisted = client.post(url, {**BODY, "endpoint": "vllm", "model": "other"}, format="json")
    unnamed = client.post(url, BODY, format="json")  # two endpoints: say which
    on_local = client.post(url, {**BODY, "backend": "builtin-tiny", "model": "",
                                 "endpoint": "vllm"}, format="json")
    created = client.post(url, {**BODY, "endpoint": "vllm", "model": "llama-3-8b"}, format="json")

    assert unknown.status_code == 400 and "openai, vllm" in unknown.json()["detail"]
    assert "http" not in unknown.json()["detail"]
    assert unlisted.status_code == 400 and "llama-3-8b" in unlisted.json()["detail"]
    assert unnamed.status_code == 400 and "endpoint" in unnamed.json()["detail"]
    assert on_local.status_code == 400
    assert created.status_code == 202, created.content
    assert created.json()["endpoint"] == "vllm"
    event = AuditEvent.objects.get(action="generation.start")
    assert event.after["endpoint"] == "vllm" and event.actor == project_admin


def test_one_configured_endpoint_is_the_default(project, prompt, settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {"openai": endpoint("https://api.openai.com/v1")}

    run = generation_run_create(project=project, backend="openai", model="gpt-4o-mini",
                                params={"k": 2}, enqueue=False)

    assert run.endpoint == "openai"


def test_generation_options_name_endpoints_but_never_urls_or_keys(
        as_user, project, reviewer, annotator, outsider, settings, tmp_path) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {
        "vllm": endpoint("http://vllm.internal:8000/v1", models=["llama-3-8b"],
                         api_key_env="VLLM_SECRET_KEY_VAR", allow_private=True)}
    (tmp_path / "models" / "qwen-0.5b").mkdir(parents=True)
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    settings.MODEL_DIRS = [tmp_path / "models"]
    url = f"/api/projects/{project.pk}/generation-options"

    response = as_user(reviewer).get(url)

    assert response.status_code == 200
    body = response.json()
    assert body["endpoints"] == [{"name": "vllm", "models": ["llama-3-8b"]}]
    assert "openai" in body["backends"] and "builtin-tiny" in body["backends"]
    assert [f["name"] for f in body["model_folders"]] == ["qwen-0.5b"]
    text = response.content.decode()
    assert "vllm.internal" not in text and "VLLM_SECRET_KEY_VAR" not in text
    assert as_user(annotator).get(url).status_code == 403
    assert as_user(outsider).get(url).status_code == 404


def test_cli_has_no_base_url_and_refuses_unknown_endpoints(project, settings) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {"openai": endpoint("https://api.openai.com/v1")}

    with pytest.raises(CommandError):
        call_command("generate", "--project", project.slug, "--base-url", "http://127.0.0.1:1/v1",
                     stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="unknown endpoint 'elsewhere'"):
        call_command("generate", "--project", project.slug, "--backend", "openai", "--model", "m",
                     "--endpoint", "elsewhere", stdout=StringIO(), stderr=StringIO())


def test_generation_endpoints_are_parsed_strictly() -> None:
    from config.settings import generation_endpoints

    parsed = generation_endpoints(
        '{"vllm": {"base_url": "http://vllm.internal:8000/v1/", "allow_private": true,'
        ' "models": ["llama"], "api_key_env": "VLLM_KEY"}}', openai_key=False, openai_base_url=None)

    assert parsed == {"vllm": {"base_url": "http://vllm.internal:8000/v1", "api_key_env": "VLLM_KEY",
                               "models": ["llama"], "allow_private": True}}
    assert generation_endpoints(None, openai_key=True, openai_base_url=None) == {
        "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
                   "models": [], "allow_private": False}}
    assert generation_endpoints(None, openai_key=False, openai_base_url=None) == {}


@pytest.mark.parametrize("raw", [
    "not json", "[]", '{"a": "http://x/v1"}', '{"bad name!": {"base_url": "http://x/v1"}}',
    '{"a": {}}', '{"a": {"base_url": "ftp://x/v1"}}', '{"a": {"base_url": "http://u:p@x/v1"}}',
    '{"a": {"base_url": "http:///v1"}}', '{"a": {"base_url": "http://x/v1", "allow_private": "yes"}}',
    '{"a": {"base_url": "http://x/v1", "models": "m"}}', '{"a": {"base_url": "http://x/v1", "key": "sk"}}',
    '{"a": {"base_url": "http://x/v1", "api_key_env": "sk-123 456"}}',
])
def test_bad_generation_endpoints_name_the_variable(raw: str) -> None:
    from config.settings import generation_endpoints

    with pytest.raises(ImproperlyConfigured, match="GENERATION_ENDPOINTS"):
        generation_endpoints(raw, openai_key=True, openai_base_url=None)


def test_model_dirs_must_be_absolute() -> None:
    from config.settings import model_dirs

    assert model_dirs("MODEL_DIRS", ["/models", "/mnt/more-models"]) == [
        Path("/models"), Path("/mnt/more-models")]
    with pytest.raises(ImproperlyConfigured, match="MODEL_DIRS"):
        model_dirs("MODEL_DIRS", ["models"])


# --------------------------------------------------------------------------- item 2


@pytest.fixture
def model_dirs(settings, tmp_path: Path) -> Path:  # noqa: ANN001
    root = tmp_path / "models"
    (root / "qwen-0.5b").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    settings.MODEL_DIRS = [root]
    return root


@pytest.fixture
def others_artifacts(settings, other_project: Project) -> Path:  # noqa: ANN001
    """A trained model of another project, where a finished run leaves it."""
    merged = Path(settings.ARTIFACT_ROOT) / "runs" / "77" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    return merged


def bad_models(model_dirs: Path, others_artifacts: Path) -> list[str]:
    return [str(others_artifacts), "/etc", "/etc/passwd", "/nonexistent/model",
            f"{model_dirs}/../../etc", f"{model_dirs}/qwen-0.5b/../../x", "../x/y",
            "org/../../etc", str(model_dirs / "escape"), str(model_dirs / "escape" / "ssl"),
            str(model_dirs), "training/engine", "~/models/x"]


def test_generation_refuses_local_paths_with_one_message(as_user, project_admin, project, prompt,
                                                         model_dirs, others_artifacts) -> None:  # noqa: ANN001
    url = f"/api/projects/{project.pk}/generation-runs"
    details = set()
    for backend in ("transformers", "vllm"):
        for model in bad_models(model_dirs, others_artifacts):
            response = as_user(project_admin).post(url, {**BODY, "backend": backend, "model": model},
                                                   format="json")
            assert response.status_code == 400, (backend, model, response.content)
            details.add(response.json()["detail"])

    assert len(details) == 1  # existing and missing paths read the same
    assert "hub id" in details.pop()
    assert not GenerationRun.objects.exists()


def test_builtin_tiny_takes_no_model(as_user, project_admin, project, prompt, tmp_path) -> None:  # noqa: ANN001
    target = tmp_path / "written-here"

    response = as_user(project_admin).post(
        f"/api/projects/{project.pk}/generation-runs",
        {**BODY, "backend": "builtin-tiny", "model": str(target)}, format="json")
    execute_all(project)

    assert response.status_code == 400
    assert not target.exists()


@pytest.fixture
def built_snapshot(project: Project) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"],
                                          status="done", files={"pairs-train.jsonl": {"rows": 3}})


def test_training_refuses_local_paths_with_one_message(as_user, project_admin, project,
                                                       built_snapshot, model_dirs,
                                                       others_artifacts) -> None:  # noqa: ANN001
    url = f"/api/projects/{project.pk}/training-runs"
    details = set()
    for model in bad_models(model_dirs, others_artifacts):
        response = as_user(project_admin).post(
            url, {"kind": "reward", "snapshot": built_snapshot.pk, "base_model": model}, format="json")
        assert response.status_code == 400, (model, response.content)
        details.add(response.json()["detail"])

    assert len(details) == 1
    assert not TrainingRun.objects.exists()


def test_hub_ids_model_folders_and_builtins_are_accepted(as_user, project_admin, project, prompt,
                                                         built_snapshot, model_dirs,
                                                         tiny_model) -> None:  # noqa: ANN001
    client = as_user(project_admin)
    folder = str(model_dirs / "qwen-0.5b")
    for model in ("Qwen/Qwen2.5-0.5B-Instruct", folder):
        response = client.post(f"/api/projects/{project.pk}/generation-runs",
                               {**BODY, "backend": "transformers", "model": model}, format="json")
        assert response.status_code == 202, (model, response.content)
        assert response.json()["model"] == model
    for base in ("sentence-transformers/all-MiniLM-L6-v2", folder, "minilm", ""):
        response = client.post(f"/api/projects/{project.pk}/training-runs",
                               {"kind": "reward", "snapshot": built_snapshot.pk, "base_model": base},
                               format="json")
        assert response.status_code == 202, (base, response.content)


def test_the_cli_refuses_local_paths_too(project, built_snapshot, model_dirs) -> None:  # noqa: ANN001
    with pytest.raises(CommandError, match="hub id"):
        call_command("generate", "--project", project.slug, "--backend", "transformers",
                     "--model", "/etc", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="hub id"):
        call_command("train", "--project", project.slug, "--kind", "reward", "--snapshot",
                     str(built_snapshot.pk), "--base-model", "/etc", stdout=StringIO(),
                     stderr=StringIO())


@pytest.fixture
def others_model(settings, other_project: Project, tiny_model: Path) -> Path:  # noqa: ANN001
    """A real model another project trained, where its finished run leaves it."""
    merged = Path(settings.ARTIFACT_ROOT) / "runs" / "78" / "merged"
    shutil.copytree(tiny_model, merged)
    return merged


def test_a_generation_row_forged_with_a_path_is_refused_at_execution(project, prompt,
                                                                     others_model) -> None:  # noqa: ANN001
    run = GenerationRun.objects.create(project=project, backend="transformers",
                                       model=str(others_model), params={"k": 2, "max_new_tokens": 4},
                                       prompt_ids=[prompt.pk])

    run = execute(run)

    assert not Candidate.objects.filter(prompt=prompt).exists()
    assert run.status == Run.Status.FAILED
    assert "hub id" in run.error and str(others_model) not in run.error


@pytest.fixture
def labelled_snapshot(db: None) -> DatasetSnapshot:
    project = Project.objects.create(name="Loop", slug="loop", is_demo=True, overlap=3)
    make_items(project, 6, k=3)
    call_command("simulate_annotators", "--project", "loop", "--create", "3", "--noise", "0.1")
    snapshot = snapshot_create(project=project, kinds=["pairs", "sft"], formats=["jsonl"],
                               enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    return snapshot


def test_a_training_row_forged_with_a_path_is_refused_at_execution(labelled_snapshot, others_model,
                                                                   settings) -> None:  # noqa: ANN001
    run = TrainingRun.objects.create(
        project=labelled_snapshot.project, kind="sft", snapshot=labelled_snapshot,
        base_model=str(others_model), artifact_path=str(settings.ARTIFACT_ROOT / "runs" / "900"),
        config={"model": str(others_model), "max_steps": 1, "max_length": 64, "save_steps": 1,
                "per_device_train_batch_size": 2})

    training_run_execute(run_claim(TrainingRun, run.pk))

    run.refresh_from_db()
    assert run.status == Run.Status.FAILED, run.status
    assert "hub id" in run.error


def test_a_registered_policy_of_another_project_is_refused(project, other_project, tiny_model) -> None:  # noqa: ANN001
    from training.models import ModelVersion

    theirs = ModelVersion.objects.create(project=other_project, kind="policy", name="p", version=1,
                                         base_model="x", merged_path=str(tiny_model))

    with pytest.raises(DomainError, match="this project"):
        generation_run_create(project=project, backend="transformers", policy=theirs,
                              params={"k": 2}, enqueue=False)
