"""Dataset snapshots: immutable files with a manifest written last, hashes that match,
no usernames in raw exports, clear errors for empty or contradictory requests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from core.errors import DomainError
from core.runs import run_claim
from labeling.models import Item, Project
from tests.factories import UserFactory, make_items
from training.models import DatasetSnapshot
from training.snapshots import snapshot_build, snapshot_create, snapshot_dir


@pytest.fixture
def labelled(db: None) -> Project:
    project = Project.objects.create(name="Sim", slug="sim", is_demo=True, overlap=3)
    make_items(project, 6, k=3)
    for n in range(3):
        UserFactory(username=f"alice{n}", email=f"alice{n}@example.com")
    call_command("simulate_annotators", "--project", "sim", "--create", "3", "--noise", "0.1")
    return project


def build(project: Project, **kwargs) -> DatasetSnapshot:  # noqa: ANN003
    snapshot = snapshot_create(project=project, enqueue=False, **kwargs)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    return snapshot


def test_manifest_lists_every_file_with_its_hash(labelled: Project) -> None:
    snapshot = build(labelled, kinds=["pairs", "sft", "raw"], formats=["jsonl", "parquet"])

    manifest = json.loads((snapshot_dir(snapshot) / "manifest.json").read_text())
    assert snapshot.status == "done"
    for name, info in snapshot.files.items():
        data = (snapshot_dir(snapshot) / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        assert manifest["files"][name]["sha256"] == info["sha256"]
    accepted = Item.objects.filter(project=labelled, status="accepted")
    expected_pairs = sum(
        sum(len(a) * len(b) for i, a in enumerate(item.consensus) for b in item.consensus[i + 1:])
        for item in accepted)
    assert snapshot.counts["pairs-train"] == expected_pairs
    assert pq.read_table(snapshot_dir(snapshot) / "pairs-train.parquet").num_rows == expected_pairs
    row = json.loads((snapshot_dir(snapshot) / "pairs-train.jsonl").read_text().splitlines()[0])
    assert {"prompt", "chosen", "rejected", "group_id", "ordinal_margin"} <= set(row)
    assert "margin" not in row


def test_raw_export_has_no_usernames_or_emails(labelled: Project) -> None:
    snapshot = build(labelled, kinds=["raw"], formats=["jsonl", "parquet"])

    from django.contrib.auth import get_user_model

    for name in snapshot.files:
        data = (snapshot_dir(snapshot) / name).read_bytes()
        for user in get_user_model().objects.all():
            assert user.username.encode() not in data, (name, user.username)
            if user.email:
                assert user.email.encode() not in data
    assert snapshot.counts["raw-train"] == 18


def test_empty_snapshot_says_why(project: Project) -> None:
    snapshot = build(project, kinds=["pairs"], formats=["jsonl"])

    manifest = json.loads((snapshot_dir(snapshot) / "manifest.json").read_text())
    assert snapshot.status == "done" and snapshot.counts == {"pairs-train": 0}
    assert manifest["empty_reason"] == "the project has no accepted items yet"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kinds": ["nope"], "formats": ["jsonl"]}, "kinds"),
    ({"kinds": ["pairs"], "formats": ["csv"]}, "formats"),
    ({"kinds": ["pairs"], "formats": ["jsonl"],
      "filters": {"since": "2026-12-01", "until": "2026-01-01"}}, "since is after until"),
    ({"kinds": ["pairs"], "formats": ["jsonl"], "filters": {"guideline_versions": []}}, "empty"),
])
def test_contradictory_requests_are_refused(project: Project, kwargs: dict, message: str) -> None:
    with pytest.raises(DomainError, match=message):
        snapshot_create(project=project, enqueue=False, **kwargs)


def test_api_create_download_and_access(as_user, labelled, reviewer, annotator,  # noqa: ANN001
                                        django_capture_on_commit_callbacks) -> None:
    from labeling.models import Membership

    admin = UserFactory(username="ds-admin")
    Membership.objects.create(user=admin, project=labelled, role="admin")
    Membership.objects.create(user=reviewer, project=labelled, role="reviewer")
    Membership.objects.create(user=annotator, project=labelled, role="annotator")
    url = f"/api/projects/{labelled.pk}/datasets"

    bad = as_user(admin).post(url, {"kinds": ["pairs"], "since": "2026-12-01",
                                    "until": "2026-01-01"}, format="json")
    with django_capture_on_commit_callbacks(execute=True):  # the (eager) task runs at commit
        created = as_user(admin).post(url, {"kinds": ["pairs"], "formats": ["parquet"]},
                                      format="json")
    snapshot_id = created.json()["id"]
    detail = as_user(reviewer).get(f"/api/datasets/{snapshot_id}").json()
    download = as_user(reviewer).get(f"/api/datasets/{snapshot_id}/files/pairs-train.parquet")

    assert bad.status_code == 400 and "since is after until" in bad.json()["detail"]
    assert created.status_code == 202 and detail["status"] == "done"
    assert detail["manifest"]["files"]["pairs-train.parquet"]["rows"] > 0
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    assert download["X-Content-Type-Options"] == "nosniff"
    body = b"".join(download.streaming_content)
    assert hashlib.sha256(body).hexdigest() == detail["files"]["pairs-train.parquet"]["sha256"]
    assert as_user(reviewer).get(f"/api/datasets/{snapshot_id}/files/..%2Fmanifest.json"
                                 ).status_code == 404
    assert as_user(annotator).get(f"/api/datasets/{snapshot_id}").status_code == 403
    assert as_user(annotator).post(url, {"kinds": ["pairs"]}, format="json").status_code == 403


def test_outsider_gets_404(as_user, labelled, outsider) -> None:  # noqa: ANN001
    snapshot = build(labelled, kinds=["pairs"], formats=["jsonl"])

    assert as_user(outsider).get(f"/api/datasets/{snapshot.pk}").status_code == 404
    assert as_user(outsider).get(
        f"/api/datasets/{snapshot.pk}/files/pairs-train.jsonl").status_code == 404


def test_external_preferences_only_when_asked(project: Project, tmp_path: Path) -> None:
    from labeling.importing import prompts_import

    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    prompts_import(project=project, path=path)

    without = build(project, kinds=["pairs"], formats=["jsonl"])
    with_external = build(project, kinds=["pairs"], formats=["jsonl"],
                          filters={"include_external": True})

    assert without.counts["pairs-train"] == 0
    assert with_external.counts["pairs-train"] == 1


def test_gold_items_never_enter_datasets(labelled: Project) -> None:
    Item.objects.filter(project=labelled).update(is_gold=True)

    snapshot = build(labelled, kinds=["pairs", "sft"], formats=["jsonl"])

    assert not any(snapshot.counts.values())


def test_cli_export(labelled: Project) -> None:
    from io import StringIO

    out = StringIO()
    call_command("export_dataset", "--project", "sim", "--kind", "dpo", "--format", "parquet",
                 stdout=out, stderr=StringIO())

    assert "dpo-train.parquet" in out.getvalue() and "done" in out.getvalue()


def test_by_default_policy_files_carry_messages_and_reward_pairs_text(labelled: Project) -> None:
    """What the API default and the scheduled DPO run export: messages for the policy kinds
    (the policy's chat template renders them in training as in sampling), plain-format
    text for the reward model's pairs (the MiniLM default has no chat template)."""
    snapshot = build(labelled, kinds=["pairs", "dpo", "sft", "kto"], formats=["parquet"])

    folder = snapshot_dir(snapshot)
    first = {kind: pq.read_table(folder / f"{kind}-train.parquet").to_pylist()[0]
             for kind in ("pairs", "dpo", "sft", "kto")}
    assert snapshot.options["conversational"] is None
    assert isinstance(first["pairs"]["prompt"], str) and first["pairs"]["prompt"].startswith("User:\n")
    assert first["dpo"]["prompt"][0]["role"] == "user"
    assert first["dpo"]["chosen"] == [{"role": "assistant", "content": first["pairs"]["chosen"]}]
    assert first["sft"]["messages"][-1]["role"] == "assistant"
    assert first["kto"]["prompt"][0]["role"] == "user"


@pytest.mark.parametrize(("sent", "stored"), [({}, None), ({"conversational": False}, False),
                                              ({"conversational": True}, True),
                                              ({"conversational": None}, None)])
def test_api_stores_the_prompt_shape_asked_for(as_user, labelled, sent, stored,  # noqa: ANN001
                                               django_capture_on_commit_callbacks) -> None:
    from labeling.models import Membership

    admin = UserFactory(username="ds-admin")
    Membership.objects.create(user=admin, project=labelled, role="admin")

    created = as_user(admin).post(f"/api/projects/{labelled.pk}/datasets",
                                  {"kinds": ["dpo"], "formats": ["jsonl"], **sent}, format="json")

    assert created.status_code == 202
    assert DatasetSnapshot.objects.get(pk=created.json()["id"]).options["conversational"] is stored


@pytest.mark.parametrize(("flags", "stored"), [([], None), (["--conversational"], True), (["--text"], False)])
def test_cli_export_prompt_shape(labelled: Project, flags: list[str], stored: bool | None) -> None:
    from io import StringIO

    call_command("export_dataset", "--project", "sim", "--kind", "dpo", *flags, stdout=StringIO(),
                 stderr=StringIO())

    assert DatasetSnapshot.objects.get().options["conversational"] is stored
