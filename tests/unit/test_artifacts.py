"""Artifacts on S3-compatible storage: a real S3 API (moto's server on 127.0.0.1) reached
through s3fs, as a MinIO or AWS deployment would be. The "other machine" is this one
with its local copy deleted: it must fetch what it lacks and never take a half upload."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from core.runs import Run, run_claim
from labeling.models import Candidate, Project
from tests.factories import PromptFactory
from training.artifacts import COMPLETE, ArtifactMissing, artifact_local, artifact_open, artifact_publish
from training.generation import generation_run_create, generation_run_execute
from training.models import DatasetSnapshot, GenerationRun, ModelVersion
from training.snapshots import snapshot_dir

BUCKET = "ordinal-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def storage(s3_server: str, monkeypatch: pytest.MonkeyPatch, settings, request) -> fsspec.AbstractFileSystem:  # noqa: ANN001
    """ARTIFACT_STORAGE_URL on a fresh prefix; credentials and endpoint the AWS way."""
    for name, value in {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    # fsspec caches filesystems by arguments, not by the environment: a cached one may
    # still point at the server of an earlier module-scope run on another port.
    s3fs.S3FileSystem.clear_instance_cache()
    fs, _ = fsspec.core.url_to_fs(f"s3://{BUCKET}", skip_instance_cache=True)
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    settings.ARTIFACT_STORAGE_URL = f"s3://{BUCKET}/{request.node.name}"
    return fs


def make_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_a_published_folder_is_fetched_whole_on_a_machine_that_lacks_it(storage, settings) -> None:  # noqa: ANN001
    folder = make_folder(Path(settings.ARTIFACT_ROOT) / "runs" / "7" / "model",
                         {"adapter_config.json": b"{}", "weights/part-0.bin": b"\x00" * 4096})
    assert artifact_publish(folder) == 2
    prefix = settings.ARTIFACT_STORAGE_URL.removeprefix("s3://")
    assert storage.cat_file(f"{prefix}/runs/7/model/weights/part-0.bin") == b"\x00" * 4096
    assert storage.exists(f"{prefix}/runs/7/model/{COMPLETE}")

    shutil.rmtree(folder)
    fetched = artifact_local(folder)

    assert fetched == folder
    assert (folder / "weights" / "part-0.bin").read_bytes() == b"\x00" * 4096
    assert sorted(p.name for p in folder.rglob("*")) == ["adapter_config.json", "part-0.bin", "weights"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging left behind"


def test_a_half_uploaded_folder_is_never_taken(storage, settings) -> None:  # noqa: ANN001
    prefix = settings.ARTIFACT_STORAGE_URL.removeprefix("s3://")
    storage.pipe_file(f"{prefix}/runs/8/model/adapter_config.json", b"{}")  # no marker: upload died
    folder = Path(settings.ARTIFACT_ROOT) / "runs" / "8" / "model"

    with pytest.raises(ArtifactMissing, match="runs/8/model"):
        artifact_local(folder)
    assert not folder.exists()


def test_without_storage_nothing_is_uploaded_and_paths_pass_through(settings, tmp_path) -> None:  # noqa: ANN001
    settings.ARTIFACT_STORAGE_URL = ""
    folder = make_folder(Path(settings.ARTIFACT_ROOT) / "runs" / "9", {"a.txt": b"a"})

    assert artifact_publish(folder) == 0
    assert artifact_local(tmp_path / "missing") == tmp_path / "missing"
    assert artifact_local("org/some-hub-model") == Path("org/some-hub-model")


# "oci://" is a protocol fsspec knows whose driver (ocifs) this project never installs.
@pytest.mark.parametrize("url", ["nosuchstore://bucket/prefix", "oci://bucket@namespace/prefix"])
def test_a_bad_url_or_missing_driver_is_a_clear_configuration_error(settings, url) -> None:  # noqa: ANN001
    from django.core.exceptions import ImproperlyConfigured

    assert importlib.util.find_spec("ocifs") is None
    settings.ARTIFACT_STORAGE_URL = url
    folder = make_folder(Path(settings.ARTIFACT_ROOT) / "runs" / "10", {"a.txt": b"a"})
    with pytest.raises(ImproperlyConfigured, match="ARTIFACT_STORAGE_URL"):
        artifact_publish(folder)


def test_snapshot_files_are_uploaded_and_downloadable_from_a_web_machine_without_them(
        storage, settings, as_user, project_admin, project) -> None:  # noqa: ANN001
    snapshot = build_labelled_snapshot(project)
    prefix = settings.ARTIFACT_STORAGE_URL.removeprefix("s3://")
    assert storage.exists(f"{prefix}/datasets/{snapshot.pk}/{COMPLETE}")
    expected = (snapshot_dir(snapshot) / "pairs-train.jsonl").read_bytes()
    shutil.rmtree(snapshot_dir(snapshot))  # the web runs on another machine than the worker

    client = as_user(project_admin)
    detail = client.get(f"/api/datasets/{snapshot.pk}")
    download = client.get(f"/api/datasets/{snapshot.pk}/files/pairs-train.jsonl")

    assert detail.status_code == 200 and detail.json()["manifest"]["snapshot"] == snapshot.pk
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == expected
    assert not snapshot_dir(snapshot).exists(), "the web streamed it; it copied nothing to disk"


def build_labelled_snapshot(project: Project) -> DatasetSnapshot:
    from django.core.management import call_command

    from tests.factories import make_items
    from training.snapshots import snapshot_build, snapshot_create

    project.is_demo = True
    project.save(update_fields=["is_demo"])
    make_items(project, 4, k=3)
    call_command("simulate_annotators", "--project", project.slug, "--create", "3", "--noise", "0.1")
    snapshot = snapshot_create(project=project, enqueue=False, kinds=["pairs"], formats=["jsonl"])
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    assert snapshot.status == Run.Status.DONE, snapshot.error
    return snapshot


def test_generation_fetches_a_registered_policy_it_only_finds_in_storage(
        storage, settings, project, tiny_model) -> None:  # noqa: ANN001
    merged = Path(settings.ARTIFACT_ROOT) / "runs" / "41" / "merged"
    shutil.copytree(tiny_model, merged)  # a real causal LM, as a finished run leaves it
    artifact_publish(merged)
    shutil.rmtree(merged)  # this generation worker never saw the training run
    policy = ModelVersion.objects.create(project=project, kind="policy", name="p", version=1,
                                         base_model=str(tiny_model), merged_path=str(merged))
    PromptFactory(project=project, messages=[{"role": "user", "content": "Name a colour."}])
    run = generation_run_create(project=project, backend="transformers", policy=policy,
                                params={"k": 2, "max_new_tokens": 6, "seed": 3}, enqueue=False)

    generation_run_execute(run_claim(GenerationRun, run.pk))

    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error
    assert Candidate.objects.filter(prompt__project=project, origin="model").count() == 2
    assert (merged / "config.json").exists()


def test_generation_fails_clearly_when_a_policy_is_nowhere(storage, settings, project) -> None:  # noqa: ANN001
    merged = Path(settings.ARTIFACT_ROOT) / "runs" / "42" / "merged"
    policy = ModelVersion.objects.create(project=project, kind="policy", name="p", version=1,
                                         base_model="x", merged_path=str(merged))
    PromptFactory(project=project, messages=[{"role": "user", "content": "Hi"}])
    run = generation_run_create(project=project, backend="transformers", policy=policy,
                                params={"k": 2, "max_new_tokens": 6}, enqueue=False)

    generation_run_execute(run_claim(GenerationRun, run.pk))

    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert "runs/42/merged" in run.error


def test_artifact_open_reads_local_first_then_storage(storage, settings) -> None:  # noqa: ANN001
    folder = make_folder(Path(settings.ARTIFACT_ROOT) / "datasets" / "5", {"manifest.json": b'{"a": 1}'})
    artifact_publish(folder)
    with artifact_open(folder / "manifest.json") as local:
        assert local.read() == b'{"a": 1}'
    shutil.rmtree(folder)
    with artifact_open(folder / "manifest.json") as remote:
        assert remote.read() == b'{"a": 1}'
    with pytest.raises(FileNotFoundError):
        artifact_open(folder / "nope.json")
