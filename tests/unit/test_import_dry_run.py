"""Upload with a dry run first (labeling/services/imports.py): the dry run lists every bad
line with its reason and writes nothing; the import that follows takes the same upload,
skipping invalid rows only when asked; both steps are audited. Members and invites: add
an existing user, change and remove (leases released), invites listed with their state
and revoked (a revoked link no longer signs anyone up)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from core.errors import DomainError
from labeling.models import Assignment, AuditEvent, ImportJob, Invite, Membership, Prompt
from labeling.services.assignment import next_item
from labeling.services.imports import import_after_dry_run
from labeling.services.members import invite_create, invite_lookup, invite_revoke
from labeling.tasks import import_prompts
from tests.conftest import client_for
from tests.factories import UserFactory, make_items

GOOD = [{"prompt": f"Question {n}?"} for n in range(5)]
LINES = [json.dumps(GOOD[0]), json.dumps(GOOD[1]), "{not json", json.dumps(GOOD[2]),
         json.dumps({"prompt": ""}), json.dumps(GOOD[3]), json.dumps(GOOD[4])]


def upload(client, project, *, dry_run: bool = True, lines: list[str] = LINES):  # noqa: ANN001, ANN201
    body = ("\n".join(lines) + "\n").encode()
    answer = client.post(f"/api/projects/{project.pk}/imports",
                         {"file": SimpleUploadedFile("prompts.jsonl", body), "dry_run": dry_run},
                         format="multipart")
    assert answer.status_code == 202, answer.json()
    import_prompts(answer.json()["id"])  # the task (unit tests: no commit, so no on_commit send)
    return ImportJob.objects.get(pk=answer.json()["id"])


def test_dry_run_lists_every_bad_line_and_writes_nothing(project, project_admin) -> None:  # noqa: ANN001
    job = upload(client_for(project_admin), project)
    assert job.status == "done" and job.dry_run
    assert job.report["rows"] == 7 and job.report["invalid"] == 2
    assert [e["line"] for e in job.report["errors"]] == [3, 5]
    assert all(e["reason"] for e in job.report["errors"])
    assert not Prompt.objects.filter(project=project).exists()
    assert Path(job.file_path).exists()  # kept for the import that follows
    assert AuditEvent.objects.get(action="import.dry_run").actor == project_admin


def test_import_after_a_dry_run_needs_skip_invalid_and_takes_the_upload(project, project_admin) -> None:  # noqa: ANN001
    client = client_for(project_admin)
    dry = upload(client, project)
    answer = client.post(f"/api/imports/{dry.pk}/import", {}, format="json")
    assert answer.status_code == 400 and "2 rows are invalid" in answer.json()["detail"]
    assert client.post(f"/api/imports/{dry.pk}/import", {"skip_invalid": True, "x": 1},
                       format="json").status_code == 400  # unknown field
    answer = client.post(f"/api/imports/{dry.pk}/import", {"skip_invalid": True}, format="json")
    assert answer.status_code == 202, answer.json()
    import_prompts(answer.json()["id"])
    job = ImportJob.objects.get(pk=answer.json()["id"])
    assert job.status == "done" and job.dry_run_of == dry and job.report["prompts_added"] == 5
    assert Prompt.objects.filter(project=project).count() == 5
    assert not Path(job.file_path).exists()  # the import's task deleted the upload
    assert client.post(f"/api/imports/{dry.pk}/import", {"skip_invalid": True}, format="json").status_code == 400
    event = AuditEvent.objects.get(action="import.start")
    assert event.after["dry_run"] == dry.pk and event.after["invalid_rows_skipped"] == 2


def test_a_clean_dry_run_imports_without_skip(project, project_admin) -> None:  # noqa: ANN001
    dry = upload(client_for(project_admin), project, lines=[json.dumps(row) for row in GOOD])
    job = import_after_dry_run(dry_run=dry, skip_invalid=False, actor=project_admin)
    import_prompts(job.pk)
    assert Prompt.objects.filter(project=project).count() == 5


def test_others_cannot_import_a_dry_run(project, project_admin, reviewer, outsider) -> None:  # noqa: ANN001
    dry = upload(client_for(project_admin), project)
    assert client_for(reviewer).post(f"/api/imports/{dry.pk}/import", {"skip_invalid": True},
                                     format="json").status_code == 403
    assert client_for(outsider).post(f"/api/imports/{dry.pk}/import", {"skip_invalid": True},
                                     format="json").status_code == 404
    with pytest.raises(DomainError):  # an import, not a dry run
        import_after_dry_run(dry_run=upload(client_for(project_admin), project, dry_run=False),
                             skip_invalid=True, actor=project_admin)


def test_members_added_changed_removed_through_one_service_and_audited(project, project_admin,  # noqa: ANN001
                                                                       annotator) -> None:
    make_items(project, 2)
    assert next_item(annotator=annotator, project=project) is not None
    someone = UserFactory(username="someone")
    client = client_for(project_admin)
    url = f"/api/projects/{project.pk}/members/"
    assert client.put(url, {"username": "someone", "role": "reviewer"}, format="json").status_code == 200
    assert client.put(url, {"username": "someone", "role": "annotator"}, format="json").status_code == 200
    assert client.put(url, {"username": "nobody", "role": "annotator"}, format="json").status_code == 400
    assert Membership.objects.get(project=project, user=someone).role == "annotator"
    assert client.delete(f"{url}{annotator.pk}/").status_code == 204
    assert not Assignment.objects.filter(annotator=annotator, status="active").exists()
    actions = list(AuditEvent.objects.filter(project=project).order_by("id").values_list("action", flat=True))
    assert actions == ["member.add", "member.role", "member.release_leases", "member.remove"]


def test_invites_listed_with_state_and_revoked(project, project_admin, other_project, outsider) -> None:  # noqa: ANN001
    open_invite, token = invite_create(project=project, role="annotator", created_by=project_admin)
    client = client_for(project_admin)
    listed = client.get(f"/api/projects/{project.pk}/invites").json()
    assert [(i["id"], i["state"]) for i in listed] == [(open_invite.pk, "open")]
    assert client_for(outsider).post(f"/api/invites/{open_invite.pk}/revoke").status_code == 404
    assert client.post(f"/api/invites/{open_invite.pk}/revoke").json()["state"] == "revoked"
    with pytest.raises(DomainError):
        invite_lookup(token=token)
    assert AuditEvent.objects.filter(action="invite.revoke", actor=project_admin).count() == 1
    invite_revoke(invite=Invite.objects.get(pk=open_invite.pk), actor=project_admin)  # again: no new event
    assert AuditEvent.objects.filter(action="invite.revoke").count() == 1
    answer = client_for(project_admin).post(f"/accounts/invite/{token}/",
                                            {"username": "late", "password": "a-Long-passw0rd!"})
    assert answer.status_code == 404 and not Membership.objects.filter(user__username="late").exists()


def test_an_abandoned_dry_runs_upload_is_deleted_after_a_day(project, project_admin) -> None:  # noqa: ANN001
    from datetime import timedelta

    from django.utils import timezone

    from labeling.services.imports import dry_run_uploads_prune

    client = client_for(project_admin)
    abandoned, imported = upload(client, project), upload(client, project)
    import_prompts(import_after_dry_run(dry_run=imported, skip_invalid=True, actor=project_admin).pk)
    ImportJob.objects.filter(pk__in=[abandoned.pk, imported.pk]).update(
        finished_at=timezone.now() - timedelta(hours=25))
    fresh = upload(client, project)  # each upload prunes: the abandoned one goes
    assert not Path(abandoned.file_path).exists() and Path(fresh.file_path).exists()
    abandoned.refresh_from_db()
    assert abandoned.report["upload_removed"] and abandoned.report["invalid"] == 2
    assert dry_run_uploads_prune() == 0
    answer = client.post(f"/api/imports/{abandoned.pk}/import", {"skip_invalid": True}, format="json")
    assert answer.status_code == 400 and "upload the file again" in answer.json()["detail"]
