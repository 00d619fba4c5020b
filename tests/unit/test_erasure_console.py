"""Erasure pages: who may open them, and a confirmation that doesn't match erases nothing."""

from __future__ import annotations

from django.test import Client

from labeling.models import Membership, Prompt
from tests.factories import make_items


def client_of(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_only_admins_open_a_projects_erasure_pages(project, reviewer, project_admin, outsider) -> None:  # noqa: ANN001
    make_items(project, 1, k=2)
    prompt = Prompt.objects.get(project=project)

    assert client_of(reviewer).get(f"/console/projects/{project.pk}/erasure").status_code == 403
    assert client_of(reviewer).get(f"/console/prompts/{prompt.pk}/erase").status_code == 403
    assert client_of(outsider).get(f"/console/prompts/{prompt.pk}/erase").status_code == 404
    page = client_of(project_admin).get(f"/console/prompts/{prompt.pk}/erase")
    assert page.status_code == 200 and b"What will be removed" in page.content


def test_a_wrong_confirmation_erases_nothing(project, project_admin) -> None:  # noqa: ANN001
    make_items(project, 1, k=2)
    prompt = Prompt.objects.get(project=project)

    answer = client_of(project_admin).post(f"/console/prompts/{prompt.pk}/erase", {"confirm": prompt.pk + 7})

    assert answer.status_code == 200 and f"Type {prompt.pk}".encode() in answer.content
    assert Prompt.objects.filter(pk=prompt.pk).exists()


def test_account_pages_are_for_staff(project, project_admin, annotator, staff) -> None:  # noqa: ANN001
    Membership.objects.filter(user=project_admin).update(role="admin")
    told = client_of(project_admin).get("/console/accounts/erasure")
    assert told.status_code == 200 and b"for staff" in told.content and b'name="username"' not in told.content
    assert client_of(project_admin).get(f"/console/accounts/erasure?user={annotator.pk}").status_code == 200
    assert b"Erase this account" not in client_of(project_admin).get(
        f"/console/accounts/erasure?user={annotator.pk}").content
    assert client_of(project_admin).post("/console/accounts/erasure", {
        "user": annotator.pk, "text": "keep", "confirm": "ann1"}).status_code == 403
    assert client_of(staff).get(f"/console/accounts/erasure?user={annotator.pk}").status_code == 200
    wrong = client_of(staff).post("/console/accounts/erasure",
                                  {"user": annotator.pk, "text": "keep", "confirm": "someone-else"})
    annotator.refresh_from_db()
    assert wrong.status_code == 200 and annotator.username == "ann1" and annotator.is_active


def test_runs_page_shows_emptied_snapshots_and_flagged_models(project, project_admin) -> None:  # noqa: ANN001
    from training.models import DatasetSnapshot, ModelVersion

    snapshot = DatasetSnapshot.objects.create(
        project=project, kinds=["pairs"], formats=["jsonl"], status="done", contains_erased=True,
        files={"pairs-train.jsonl": {"rows": 3, "sha256": "0" * 64, "bytes": 10}})
    ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="tiny",
                                snapshot=snapshot, trained_on_erased=True)

    page = client_of(project_admin).get(f"/console/projects/{project.pk}/runs").content.decode()

    assert "held erased data, files deleted" in page and "trained on erased data" in page
    assert f"/api/datasets/{snapshot.pk}/files/" not in page
