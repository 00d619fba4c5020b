"""Erasing a prompt with artifacts on S3-compatible storage (moto's S3 server, reached
through s3fs as MinIO or AWS would be) and PostgreSQL: a real worker builds the snapshot
and uploads it; the web process, which lacks the folder, finds the prompt in the files
by streaming them from storage, and the erasure removes them there too; the rebuild,
again on the worker, uploads a snapshot without it."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs
from django.core.management import call_command
from moto.server import ThreadedMotoServer

from labeling.models import Item, Membership, Project
from tests.factories import UserFactory, make_items
from tests.integration.conftest import Worker, wait_until
from tests.unit.test_erasure_prompt import SECRET, add_secret_prompt
from training.models import DatasetSnapshot
from training.snapshots import snapshot_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
BUCKET = "ordinal-erasure"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield env
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def objects_of(fs: s3fs.S3FileSystem, snapshot: DatasetSnapshot) -> list[str]:
    fs.invalidate_cache()
    return fs.find(f"{BUCKET}/erasure/datasets/{snapshot.pk}")


def bucket_text(fs: s3fs.S3FileSystem) -> str:
    """Every object in the bucket as text; Parquet (compressed) read as rows."""
    parts = []
    for key in fs.find(BUCKET):
        if key.endswith(".parquet"):
            with fs.open(key, "rb") as file:
                parts.append(json.dumps(pq.read_table(file).to_pylist(), default=str))
        else:
            parts.append(fs.cat(key).decode("utf-8", "replace"))
    return "\n".join(parts)


def built(snapshot_id: int) -> DatasetSnapshot:
    wait_until(lambda: DatasetSnapshot.objects.get(pk=snapshot_id).is_finished, timeout=120,
               what=f"snapshot {snapshot_id}")
    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    assert snapshot.status == "done", snapshot.error
    return snapshot


def test_erasing_a_prompt_removes_its_snapshot_files_from_s3(s3, settings, tmp_path: Path,  # noqa: ANN001
                                                            as_user) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(BUCKET)
    settings.ARTIFACT_STORAGE_URL = f"s3://{BUCKET}/erasure"
    worker = Worker(tmp_path / "worker.log", {**s3, "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
                                              "ARTIFACT_STORAGE_URL": settings.ARTIFACT_STORAGE_URL})
    try:
        project = Project.objects.create(name="S3", slug="s3-erase", is_demo=True, overlap=3)
        make_items(project, 4, k=3)
        call_command("simulate_annotators", "--project", project.slug, "--create", "3", "--noise", "0",
                     stdout=io.StringIO())
        clean = built(snapshot_create(project=project, kinds=["pairs"], formats=["jsonl"]).pk)
        prompt = add_secret_prompt(project)
        call_command("simulate_annotators", "--project", project.slug, "--noise", "0", stdout=io.StringIO())
        assert Item.objects.get(prompt=prompt).status == "accepted"
        holding = built(snapshot_create(project=project, kinds=["pairs", "sft"],
                                        formats=["jsonl", "parquet"]).pk)
        uploaded = objects_of(fs, holding)
        assert len(uploaded) == 6  # four files, the manifest, the .complete marker
        assert SECRET in bucket_text(fs)
        # This machine lacks the folders: erasure must read (and delete) them in storage.
        shutil.rmtree(settings.ARTIFACT_ROOT / "datasets")
        admin = UserFactory(username="s3-admin")
        Membership.objects.create(user=admin, project=project, role="admin")
        client = as_user(admin)

        erased = client.post(f"/api/prompts/{prompt.pk}/erasure", {"confirm": prompt.pk}, format="json")
        gone = client.get(f"/api/datasets/{holding.pk}/files/sft-train.parquet")
        rebuilt = client.post(f"/api/datasets/{holding.pk}/rebuild")
        new = built(rebuilt.json()["id"])

        assert erased.status_code == 200, erased.content
        assert erased.json()["snapshots"] == [holding.pk]
        assert erased.json()["counts"]["storage_objects"] == 6
        assert objects_of(fs, holding) == []
        assert gone.status_code == 410 and gone.json()["rebuild"] == f"/api/datasets/{holding.pk}/rebuild"
        assert len(objects_of(fs, clean)) == 3  # never held it: kept
        new_keys = objects_of(fs, new)
        assert len(new_keys) == 6
        manifest = json.loads(fs.cat(next(k for k in new_keys if k.endswith("manifest.json"))))
        assert manifest["counts"]["pairs-train"] == clean.counts["pairs-train"]
        assert SECRET not in bucket_text(fs)
    finally:
        worker.stop()
