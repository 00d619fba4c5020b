"""Pushing a snapshot to the Hugging Face Hub: the repository is laid out as `datasets`'
push_to_hub does (it loads back with load_dataset, one config per kind), the card comes
from the manifest, and the upload goes to a local stub of the Hub's API with the
operator's token; the network is never reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from core.runs import run_claim
from labeling.models import AuditEvent, Membership, Project
from labeling.selectors.dashboard import project_agreement_summary
from tests.factories import UserFactory, make_items
from tests.hub_stub import HubStub
from training.hub import hub_folder_build
from training.models import DatasetSnapshot, HubPush
from training.snapshots import snapshot_build, snapshot_create, snapshot_dir

TOKEN = "hf_operator_token_for_tests"  # noqa: S105


@pytest.fixture
def labelled(db: None) -> Project:
    project = Project.objects.create(name="Sim", slug="sim", is_demo=True, overlap=3)
    make_items(project, 10, k=3)
    call_command("simulate_annotators", "--project", "sim", "--create", "3", "--noise", "0.1")
    return project


@pytest.fixture
def snapshot(labelled: Project) -> DatasetSnapshot:
    created = snapshot_create(project=labelled, kinds=["pairs", "sft"], formats=["parquet", "jsonl"],
                              options={"validation_fraction": 0.5}, enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, created.pk))
    created.refresh_from_db()
    return created


@pytest.fixture
def hub(settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:  # noqa: ANN001 - pytest-django
    # The engine tests set HF_HUB_OFFLINE for the whole process (no model downloads);
    # a push is the one call that must reach its (stub) Hub.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    stub = HubStub()
    settings.HF_ENDPOINT = stub.url
    settings.HF_HUB_PUSH_TOKEN = TOKEN
    yield stub
    stub.close()


@pytest.fixture
def admin(labelled: Project):  # noqa: ANN201
    user = UserFactory(username="hub-admin")
    Membership.objects.create(user=user, project=labelled, role="admin")
    return user


def test_the_folder_loads_back_with_datasets_one_config_per_kind(snapshot: DatasetSnapshot, tmp_path: Path) -> None:
    import datasets

    folder = hub_folder_build(snapshot, tmp_path / "repo", license="cc-by-4.0",
                              agreement=project_agreement_summary(project=snapshot.project))

    pairs = datasets.load_dataset(str(folder), "pairs", cache_dir=str(tmp_path / "cache"))
    sft = datasets.load_dataset(str(folder), "sft", cache_dir=str(tmp_path / "cache"))
    source = snapshot_dir(snapshot)
    assert set(pairs) == {"train", "validation"}
    assert pairs["train"].to_list() == pq.read_table(source / "pairs-train.parquet").to_pylist()
    assert pairs["validation"].num_rows == snapshot.counts["pairs-validation"] > 0
    assert sft["train"].num_rows == snapshot.counts["sft-train"]
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")) == [
        "pairs/train-00000-of-00001.parquet", "pairs/validation-00000-of-00001.parquet",
        "sft/train-00000-of-00001.parquet", "sft/validation-00000-of-00001.parquet"]


def test_the_card_is_made_from_the_manifest(snapshot: DatasetSnapshot, tmp_path: Path) -> None:
    agreement = project_agreement_summary(project=snapshot.project)

    card = (hub_folder_build(snapshot, tmp_path, license="cc-by-4.0", agreement=agreement) / "README.md").read_text()

    header = card.split("---\n")[1]
    assert "license: cc-by-4.0" in header and "- config_name: pairs" in header
    assert "    path: pairs/validation-*" in header
    assert f"| pairs | train | {snapshot.counts['pairs-train']} |" in card
    assert f"Pairwise agreement between annotators: {agreement['pairwise_agreement']:.3f}" in card
    assert "Guideline versions:" in card and "License: cc-by-4.0" in card
    assert snapshot.files["pairs-train.parquet"]["sha256"] in card


def test_a_push_sends_the_repository_to_the_operators_hub_with_the_operators_token(
        snapshot: DatasetSnapshot, hub: HubStub, admin, as_user, django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    with django_capture_on_commit_callbacks(execute=True):  # the (eager) task runs at commit
        response = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push",
                                       {"repo_id": "acme/sim-prefs", "license": "mit"}, format="json")

    assert response.status_code == 202, response.content
    push = HubPush.objects.get()
    assert push.status == "done", push.error
    assert push.commit_url.endswith("/datasets/acme/sim-prefs/commit/abc123")
    assert hub.repos["acme/sim-prefs"]["type"] == "dataset" and hub.repos["acme/sim-prefs"]["visibility"] == "private"
    sent = hub.files["acme/sim-prefs"]
    assert set(sent) == {"README.md", "pairs/train-00000-of-00001.parquet", "pairs/validation-00000-of-00001.parquet",
                         "sft/train-00000-of-00001.parquet", "sft/validation-00000-of-00001.parquet"}
    assert sent["pairs/train-00000-of-00001.parquet"] == (snapshot_dir(snapshot) / "pairs-train.parquet").read_bytes()
    assert b"license: mit" in sent["README.md"]
    assert hub.cards[0]["license"] == "mit" and [c["config_name"] for c in hub.cards[0]["configs"]] == ["pairs", "sft"]
    assert all(headers.get("authorization") == f"Bearer {TOKEN}" or headers.get("Authorization") == f"Bearer {TOKEN}"
               for method, _, headers in hub.requests if method == "POST")
    assert AuditEvent.objects.filter(action="snapshot.hub_push", project=snapshot.project).exists()
    assert as_user(admin).get(f"/api/hub-pushes/{push.pk}").json()["status"] == "done"


def test_a_request_cannot_name_a_url_or_a_token(snapshot: DatasetSnapshot, hub: HubStub, admin, as_user) -> None:  # noqa: ANN001
    for body in ({"repo_id": "https://evil.example.com/x"}, {"repo_id": "acme/../x"}, {"repo_id": "acme"},
                 {"repo_id": "acme/ok", "license": "Not A License"}):
        response = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push", body, format="json")
        assert response.status_code == 400, body
    assert not HubPush.objects.exists() and hub.requests == []


def test_without_a_token_pushes_are_off(snapshot: DatasetSnapshot, admin, as_user, settings) -> None:  # noqa: ANN001
    settings.HF_HUB_PUSH_TOKEN = ""

    response = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push", {"repo_id": "acme/x"}, format="json")

    assert response.status_code == 400 and "HF_HUB_PUSH_TOKEN" in response.json()["detail"]


def test_pushing_is_for_admins_404_for_another_project(snapshot: DatasetSnapshot, hub: HubStub, labelled, as_user,
                                                       django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    reviewer = UserFactory(username="hub-reviewer")
    Membership.objects.create(user=reviewer, project=labelled, role="reviewer")
    other = Project.objects.create(name="Other", slug="other")
    outsider = UserFactory(username="hub-outsider")
    Membership.objects.create(user=outsider, project=other, role="admin")
    admin = UserFactory(username="hub-admin2")
    Membership.objects.create(user=admin, project=labelled, role="admin")
    with django_capture_on_commit_callbacks(execute=True):
        push = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push", {"repo_id": "acme/x"}, format="json")

    for user, expected in ((reviewer, 403), (outsider, 404)):
        assert as_user(user).post(f"/api/datasets/{snapshot.pk}/hub-push", {"repo_id": "acme/y"},
                                  format="json").status_code == expected
        assert as_user(user).get(f"/api/hub-pushes/{push.json()['id']}").status_code == expected
    assert HubPush.objects.count() == 1


def test_a_token_in_the_request_is_refused(snapshot: DatasetSnapshot, hub: HubStub, admin, as_user) -> None:  # noqa: ANN001
    response = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push",
                                   {"repo_id": "acme/x", "token": "hf_mine"}, format="json")

    assert response.status_code == 400 and "unknown field" in str(response.json()["token"])
    assert not HubPush.objects.exists() and hub.requests == []


def test_a_worker_in_offline_mode_fails_the_push_with_a_reason_the_operator_can_act_on(
        snapshot: DatasetSnapshot, hub: HubStub, admin, as_user, django_capture_on_commit_callbacks,  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with django_capture_on_commit_callbacks(execute=True):
        response = as_user(admin).post(f"/api/datasets/{snapshot.pk}/hub-push",
                                       {"repo_id": "acme/sim-prefs", "license": "mit"}, format="json")

    assert response.status_code == 202, response.content
    push = HubPush.objects.get()
    assert push.status == "failed"
    assert "HF_HUB_OFFLINE" in push.error
    assert not hub.requests  # nothing left the worker
