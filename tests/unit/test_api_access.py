"""API scoping: 404 outside your projects, 403 beyond your role, data only for members."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.models import ImportJob, Membership, Project, Prompt
from tests.factories import CandidateFactory, PromptFactory


@pytest.fixture
def prompts(project: Project, other_project: Project) -> tuple[Prompt, Prompt]:
    mine = PromptFactory(project=project)
    theirs = PromptFactory(project=other_project)
    CandidateFactory(prompt=mine, model_name="secret-model")
    return mine, theirs


def test_project_list_shows_only_my_projects(as_user, annotator, outsider) -> None:  # noqa: ANN001
    response = as_user(annotator).get("/api/projects/")

    assert response.status_code == 200
    assert [p["slug"] for p in response.json()["results"]] == ["alpha"]


def test_annotator_gets_404_for_other_projects_prompts(as_user, annotator, prompts) -> None:  # noqa: ANN001
    mine, theirs = prompts
    client = as_user(annotator)

    assert client.get(f"/api/projects/{mine.project_id}/prompts/").status_code == 200
    assert client.get(f"/api/projects/{theirs.project_id}/prompts/").status_code == 404
    assert client.get(f"/api/prompts/{theirs.pk}/").status_code == 404
    assert client.get(f"/api/prompts/{mine.pk}/").json()["messages"] == mine.messages


def test_anonymous_is_rejected(api, prompts) -> None:  # noqa: ANN001
    assert api.get(f"/api/projects/{prompts[0].project_id}/prompts/").status_code in {401, 403}


def test_annotator_cannot_see_candidates_with_model_names(as_user, annotator, reviewer, prompts) -> None:  # noqa: ANN001, E501
    project_id = prompts[0].project_id

    denied = as_user(annotator).get(f"/api/projects/{project_id}/candidates/")
    allowed = as_user(reviewer).get(f"/api/projects/{project_id}/candidates/")

    assert denied.status_code == 403
    assert b"secret-model" not in denied.content
    assert allowed.json()["results"][0]["model_name"] == "secret-model"


def test_only_staff_create_projects(as_user, project_admin, staff) -> None:  # noqa: ANN001
    body = {"name": "New", "slug": "new", "k": 4}

    assert as_user(project_admin).post("/api/projects/", body, format="json").status_code == 403
    created = as_user(staff).post("/api/projects/", body, format="json")

    assert created.status_code == 201
    assert Project.objects.filter(slug="new").exists()


def test_project_settings_are_validated(as_user, staff) -> None:  # noqa: ANN001
    response = as_user(staff).post(
        "/api/projects/", {"name": "X", "slug": "x", "k": 1, "agreement_threshold": 2},
        format="json",
    )

    assert response.status_code == 400
    assert set(response.json()) >= {"k", "agreement_threshold"}


def test_project_admin_edits_but_reviewer_cannot(as_user, project, project_admin, reviewer) -> None:  # noqa: ANN001, E501
    url = f"/api/projects/{project.pk}/"

    assert as_user(reviewer).patch(url, {"overlap": 5}, format="json").status_code == 403
    assert as_user(project_admin).patch(url, {"overlap": 5}, format="json").json()["overlap"] == 5


def test_outsider_cannot_edit_or_delete(as_user, project, outsider) -> None:  # noqa: ANN001
    url = f"/api/projects/{project.pk}/"

    assert as_user(outsider).patch(url, {"overlap": 5}, format="json").status_code == 404
    assert as_user(outsider).delete(url).status_code == 404
    project.refresh_from_db()
    assert project.overlap == 3


def test_admin_manages_members(as_user, project, project_admin, annotator) -> None:  # noqa: ANN001
    client = as_user(project_admin)

    response = client.put(f"/api/projects/{project.pk}/members/",
                          {"username": "ann1", "role": "reviewer"}, format="json")
    assert response.status_code == 200
    assert Membership.objects.get(user=annotator, project=project).role == "reviewer"

    assert client.delete(f"/api/projects/{project.pk}/members/{annotator.pk}/").status_code == 204
    assert not Membership.objects.filter(user=annotator, project=project).exists()


def test_unknown_member_username_is_a_400(as_user, project, project_admin) -> None:  # noqa: ANN001
    response = as_user(project_admin).put(
        f"/api/projects/{project.pk}/members/", {"username": "ghost", "role": "annotator"},
        format="json",
    )

    assert response.status_code == 400
    assert "username" in response.json()


def upload(name: str, rows: list | bytes) -> SimpleUploadedFile:
    content = rows if isinstance(rows, bytes) else "".join(json.dumps(r) + "\n" for r in rows).encode()
    return SimpleUploadedFile(name, content)


@pytest.mark.django_db(transaction=True)
def test_import_through_the_api(as_user, project, project_admin) -> None:  # noqa: ANN001
    client = as_user(project_admin)
    rows = [{"prompt": "q1", "candidates": ["a", "b"]}, {"prompt": "q2"}]

    response = client.post(f"/api/projects/{project.pk}/imports",
                           {"file": upload("rows.jsonl", rows)}, format="multipart")

    assert response.status_code == 202
    job = client.get(f"/api/imports/{response.json()['id']}").json()
    assert job["status"] == "done"
    assert job["report"]["prompts_added"] == 2 and job["report"]["items_added"] == 1


@pytest.mark.django_db(transaction=True)
def test_import_report_lists_bad_rows(as_user, project, project_admin) -> None:  # noqa: ANN001
    client = as_user(project_admin)
    rows = [{"prompt": "fine"}, {"prompt": ""}]

    created = client.post(f"/api/projects/{project.pk}/imports",
                          {"file": upload("rows.jsonl", rows)}, format="multipart").json()
    job = client.get(f"/api/imports/{created['id']}").json()

    assert job["status"] == "failed"
    assert job["report"]["errors"] == [{"line": 2, "reason": "prompt is empty"}]
    assert Prompt.objects.count() == 0


def test_upload_type_and_size_are_checked(as_user, project, project_admin, settings) -> None:  # noqa: ANN001, E501
    client = as_user(project_admin)
    url = f"/api/projects/{project.pk}/imports"

    bad_type = client.post(url, {"file": upload("x.html", b"<script>")}, format="multipart")
    settings.IMPORT_MAX_UPLOAD_BYTES = 10
    too_big = client.post(url, {"file": upload("x.jsonl", [{"prompt": "long enough"}])},
                          format="multipart")

    assert bad_type.status_code == 400 and ".jsonl" in bad_type.json()["file"][0]
    assert too_big.status_code == 400 and "limit is 10" in too_big.json()["file"][0]
    assert ImportJob.objects.count() == 0


def test_upload_name_is_never_used_as_a_path(as_user, project, project_admin, settings) -> None:  # noqa: ANN001, E501
    response = as_user(project_admin).post(
        f"/api/projects/{project.pk}/imports",
        {"file": upload("../../etc/evil.jsonl", [{"prompt": "q"}])}, format="multipart",
    )

    job = ImportJob.objects.get(pk=response.json()["id"])
    assert job.original_name == "evil.jsonl"
    assert job.file_path.startswith(str(settings.UPLOAD_ROOT))


def test_reviewer_cannot_import_and_outsider_gets_404(as_user, project, reviewer, outsider) -> None:  # noqa: ANN001, E501
    url = f"/api/projects/{project.pk}/imports"

    assert as_user(reviewer).post(url, {"file": upload("r.jsonl", [{"prompt": "q"}])},
                                  format="multipart").status_code == 403
    assert as_user(outsider).post(url, {"file": upload("r.jsonl", [{"prompt": "q"}])},
                                  format="multipart").status_code == 404


def test_import_job_is_404_for_other_project(as_user, project, project_admin, outsider) -> None:  # noqa: ANN001, E501
    job = ImportJob.objects.create(project=project, file_path="/nowhere", original_name="a.jsonl")

    assert as_user(outsider).get(f"/api/imports/{job.pk}").status_code == 404
    assert as_user(project_admin).get(f"/api/imports/{job.pk}").status_code == 200


def test_ordering_is_allow_listed(as_user, project, annotator) -> None:  # noqa: ANN001
    first, second = PromptFactory(project=project), PromptFactory(project=project)
    client = as_user(annotator)

    url = f"/api/projects/{project.pk}/prompts/"
    by_password = client.get(url + "?ordering=project__memberships__user__password")
    descending = client.get(url + "?ordering=-id").json()

    # Not silently ignored either (a client would think it got that order): a 400 naming
    # the orderings there are, and nothing about passwords.
    assert by_password.status_code == 400 and "password" not in by_password.json()["ordering"][0]
    assert [p["id"] for p in descending["results"]] == [second.pk, first.pk]


def test_token_auth_for_programs(api, annotator) -> None:  # noqa: ANN001
    from tests.factories import PASSWORD

    token = api.post("/api/auth/token", {"username": "ann1", "password": PASSWORD}).json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert api.get("/api/projects/").status_code == 200
