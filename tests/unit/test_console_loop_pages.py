"""The console pages that run the loop, through Django's test client: each form calls the
service the API calls (so each action is audited alike), validation errors show inline,
and reviewers can't use admin forms."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from guidelines.models import Guideline
from labeling.models import AuditEvent, ImportJob, Invite, Membership, Project
from labeling.tasks import import_prompts
from tests.factories import PromptFactory, UserFactory
from training.models import GenerationRun, ModelVersion


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_staff_creates_a_project_with_a_guideline_and_errors_show_inline(staff) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="g", title="House rules")
    client = login(staff)
    assert b"New project" in client.get("/console/").content
    page = client.post("/console/projects/new", {"name": "X", "slug": "bad slug!", "mode": "ranking", "k": 1})
    assert page.status_code == 200 and b"id_slug_error" in page.content and b"id_k_error" in page.content
    assert not Project.objects.exists()
    answer = client.post("/console/projects/new", {
        "name": "Loop", "slug": "loop", "mode": "ranking", "k": 4, "overlap": 3, "agreement_threshold": 0.6,
        "assignment_strategy": "uncertain_first", "gold_rate": 0, "lease_minutes": 20, "demonstrations": "off",
        "guideline": guideline.pk, "allow_ties": "on"})
    project = Project.objects.get(slug="loop")
    assert answer.status_code == 302 and answer["Location"] == f"/console/projects/{project.pk}/upload"
    assert project.guideline == guideline and project.lease_minutes == 20
    assert AuditEvent.objects.get(action="project.create").actor == staff


def test_settings_change_is_audited_and_a_foreign_guideline_is_not_offered(project, project_admin,  # noqa: ANN001
                                                                           other_project) -> None:
    shared = Guideline.objects.create(slug="shared", title="Shared")
    theirs = Guideline.objects.create(slug="theirs", title="Theirs", project=other_project)
    client = login(project_admin)
    page = client.get(f"/console/projects/{project.pk}/settings")
    assert b"Shared" in page.content and b"Theirs" not in page.content
    data = {name: getattr(project, name) for name in ("name", "slug", "mode", "k", "overlap", "agreement_threshold",
                                                       "assignment_strategy", "gold_rate", "lease_minutes",
                                                       "demonstrations", "status")}
    data["allow_ties"] = "on"
    assert client.post(f"/console/projects/{project.pk}/settings", {**data, "guideline": theirs.pk}).status_code == 200
    assert client.post(f"/console/projects/{project.pk}/settings", {**data, "guideline": shared.pk}).status_code == 302
    project.refresh_from_db()
    assert project.guideline == shared
    assert AuditEvent.objects.get(action="project.guideline").after == {"guideline": str(shared.pk)}


def test_upload_page_dry_run_lists_the_bad_line_then_imports(project, project_admin) -> None:  # noqa: ANN001
    client = login(project_admin)
    body = b'{"prompt": "One?"}\n{"prompt": 3}\n{"prompt": "Two?"}\n'
    answer = client.post(f"/console/projects/{project.pk}/upload",
                         {"file": SimpleUploadedFile("p.jsonl", body)})
    job = ImportJob.objects.get()
    assert answer["Location"] == f"/console/projects/{project.pk}/upload/{job.pk}"
    import_prompts(job.pk)
    page = client.get(answer["Location"]).content.decode()
    assert 'id="invalid-rows"' in page and "<td>2</td>" in page and "Skip the 1 invalid rows" in page
    assert client.get(f"{answer['Location']}/status").json()["status"] == "done"
    client.post(answer["Location"], {})  # without skip_invalid: refused
    assert ImportJob.objects.count() == 1
    client.post(answer["Location"], {"skip_invalid": "1"})
    imported = ImportJob.objects.exclude(pk=job.pk).get()
    import_prompts(imported.pk)
    assert project.prompts.count() == 2


def test_members_page_adds_changes_removes_invites_and_revokes(project, project_admin, annotator) -> None:  # noqa: ANN001
    UserFactory(username="newbie")
    client = login(project_admin)
    url = f"/console/projects/{project.pk}/members"
    client.post(url, {"action": "add", "add-username": "newbie", "add-role": "reviewer"})
    newbie = Membership.objects.get(project=project, user__username="newbie")
    assert newbie.role == "reviewer"
    client.post(url, {"action": "role", "user": newbie.user_id, "role": "annotator"})
    client.post(url, {"action": "remove", "user": annotator.pk})
    page = client.post(url, {"action": "invite", "role": "annotator"}).content.decode()
    assert 'id="invite-url"' in page and "/accounts/invite/" in page
    invite = Invite.objects.get()
    client.post(url, {"action": "revoke", "invite": invite.pk})
    invite.refresh_from_db()
    assert invite.state == "revoked"
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "member.add", "member.role", "member.remove", "invite.create", "invite.revoke"]
    assert Membership.objects.get(pk=newbie.pk).role == "annotator"


def test_launcher_defaults_to_the_promoted_policy_and_is_for_admins(project, project_admin, reviewer) -> None:  # noqa: ANN001
    PromptFactory(project=project)
    policy = ModelVersion.objects.create(project=project, kind="policy", name="p", version=1, base_model="b",
                                         adapter_path="/m/a", merged_path="/m/merged", is_current=True)
    page = login(project_admin).get(f"/console/projects/{project.pk}/runs").content.decode()
    assert f'<option value="policy:{policy.pk}" selected>' in page
    assert 'id="training-form"' not in page  # no snapshot yet
    assert "generation-form" not in login(reviewer).get(f"/console/projects/{project.pk}/runs").content.decode()
    launch = f"/console/projects/{project.pk}/runs/launch/generate"
    assert login(reviewer).post(launch, {"source": f"policy:{policy.pk}", "k": 2}).status_code == 403
    login(project_admin).post(launch, {"source": f"policy:{policy.pk}", "k": 2, "temperature": 1, "top_p": 1,
                                       "max_new_tokens": 8})
    run = GenerationRun.objects.get()
    assert run.policy == policy and run.params["k"] == 2
    assert AuditEvent.objects.get(action="generation.start").actor == project_admin
    status = login(project_admin).get(f"/console/projects/{project.pk}/runs/status").json()
    assert {"key": f"generation-{run.pk}", "status": "queued", "progress": "0/1", "finished": False} in status["runs"]


@pytest.mark.parametrize("page", ["settings", "upload", "members"])
def test_admin_pages_are_403_for_reviewers(project, reviewer, page) -> None:  # noqa: ANN001
    assert login(reviewer).get(f"/console/projects/{project.pk}/{page}").status_code == 403


def test_make_demo_says_where_the_loop_starts(db) -> None:  # noqa: ANN001
    from labeling.management.commands.demo import Command

    simulated = Project.objects.create(name="S", slug="demo-simulated", is_demo=True)
    hint = Command.loop_hint(8000)
    assert "http://127.0.0.1:8000/console/projects/new" in hint
    assert f"http://127.0.0.1:8000/console/projects/{simulated.pk}/runs" in hint


def test_any_queued_run_can_be_cancelled_from_the_runs_page(project, project_admin) -> None:  # noqa: ANN001
    from training.models import DatasetSnapshot

    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"])
    job = ImportJob.objects.create(project=project, file_path="/nonexistent", original_name="a.jsonl")
    run = GenerationRun.objects.create(project=project, backend="builtin-tiny", params={})
    client = login(project_admin)
    page = client.get(f"/console/projects/{project.pk}/runs").content.decode()
    assert f'aria-label="Cancel snapshot {snapshot.pk}"' in page and f'aria-label="Cancel upload {job.pk}"' in page
    for field, pk in (("snapshot", snapshot.pk), ("import_job", job.pk), ("run", run.pk)):
        client.post(f"/console/projects/{project.pk}/runs", {field: pk})
    for row in (snapshot, job, run):
        row.refresh_from_db()
        assert row.status == "cancelled"
    assert sorted(AuditEvent.objects.values_list("action", flat=True)) == [
        "generation.cancel", "import.cancel", "snapshot.cancel"]


def test_training_form_explains_its_fields_and_snapshot_form_takes_dates(project, project_admin) -> None:  # noqa: ANN001
    from training.models import DatasetSnapshot

    DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"], status="done",
                                   files={"pairs-train.jsonl": {"rows": 3}})
    client = login(project_admin)
    page = client.get(f"/console/projects/{project.pk}/runs").content.decode()
    assert 'id="training-form"' in page and "Peak AdamW learning rate. Default: reward auto, sft 0.0002" in page
    assert 'aria-describedby="id_learning_rate_helptext"' in page
    client.post(f"/console/projects/{project.pk}/runs/launch/snapshot",
                {"kinds": ["pairs"], "formats": ["jsonl"], "validation_fraction": 0.2, "exclude_flagged": "on",
                 "since": "2026-01-01", "until": "2026-12-31"})
    snapshot = DatasetSnapshot.objects.latest("id")
    assert (snapshot.filters["since"], snapshot.filters["until"]) == ("2026-01-01", "2026-12-31")
    assert snapshot.options["validation_fraction"] == 0.2
    assert AuditEvent.objects.get(action="snapshot.create").actor == project_admin
