"""The loop's API and CLI pieces the console relies on: a project's guideline is set on
create and PATCH (another project's, or an unknown id, is a 400; the change is audited),
and generation runs sample from a policy named by id, or from the promoted one."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from guidelines.models import Guideline
from labeling.models import AuditEvent, Project
from tests.conftest import client_for
from tests.factories import PromptFactory
from training.models import GenerationRun, ModelVersion


@pytest.fixture
def shared_guideline(db: None) -> Guideline:
    return Guideline.objects.create(slug="shared-g", title="Shared")


def test_guideline_is_set_on_create_and_audited(staff, shared_guideline) -> None:  # noqa: ANN001
    answer = client_for(staff).post("/api/projects/", {"name": "New", "slug": "new",
                                                       "guideline": shared_guideline.pk}, format="json")
    assert answer.status_code == 201, answer.json()
    project = Project.objects.get(slug="new")
    assert project.guideline == shared_guideline and answer.json()["guideline"] == shared_guideline.pk
    event = AuditEvent.objects.get(action="project.create", project=project)
    assert event.actor == staff and event.after["guideline"] == str(shared_guideline.pk)


def test_patch_changes_the_guideline_and_audits_before_and_after(project, project_admin,  # noqa: ANN001
                                                                 shared_guideline) -> None:
    own = Guideline.objects.create(slug="own", title="Own", project=project)
    client = client_for(project_admin)
    assert client.patch(f"/api/projects/{project.pk}/", {"guideline": shared_guideline.pk},
                        format="json").status_code == 200
    assert client.patch(f"/api/projects/{project.pk}/", {"guideline": own.pk}, format="json").status_code == 200
    project.refresh_from_db()
    assert project.guideline == own
    events = list(AuditEvent.objects.filter(action="project.guideline", project=project).order_by("id"))
    assert [(e.before, e.after) for e in events] == [
        ({"guideline": None}, {"guideline": str(shared_guideline.pk)}),
        ({"guideline": str(shared_guideline.pk)}, {"guideline": str(own.pk)}),
    ]
    assert all(e.actor == project_admin for e in events)


def test_foreign_or_unknown_guideline_is_refused_not_ignored(project, project_admin, other_project) -> None:  # noqa: ANN001
    foreign = Guideline.objects.create(slug="theirs", title="Theirs", project=other_project)
    client = client_for(project_admin)
    for value in (foreign.pk, 999999, "x"):
        answer = client.patch(f"/api/projects/{project.pk}/", {"guideline": value}, format="json")
        assert answer.status_code == 400, (value, answer.json())
    project.refresh_from_db()
    assert project.guideline is None
    assert not AuditEvent.objects.filter(action__startswith="project.", project=project).exists()


def test_patch_of_settings_is_audited_and_unknown_fields_refused(project, project_admin) -> None:  # noqa: ANN001
    client = client_for(project_admin)
    answer = client.patch(f"/api/projects/{project.pk}/", {"lease_minutes": 45, "adaptive_overlap": True,
                                                           "overlap": 5}, format="json")
    assert answer.status_code == 200, answer.json()
    project.refresh_from_db()
    assert (project.lease_minutes, project.adaptive_overlap, project.overlap) == (45, True, 5)
    event = AuditEvent.objects.get(action="project.update", project=project)
    assert event.after == {"lease_minutes": 45, "adaptive_overlap": True, "overlap": 5}
    assert client.patch(f"/api/projects/{project.pk}/", {"is_demo": True}, format="json").status_code == 400
    assert client.patch(f"/api/projects/{project.pk}/", {"lease_minutes": 0}, format="json").status_code == 400


def policy_version(project: Project, *, current: bool, number: int = 1) -> ModelVersion:
    return ModelVersion.objects.create(project=project, kind="policy", name=f"{project.slug}-policy",
                                       version=number, base_model="b", adapter_path=f"/m/{number}/model",
                                       merged_path=f"/m/{number}/merged", is_current=current)


def test_generation_samples_from_a_named_or_the_promoted_policy(project, project_admin, other_project) -> None:  # noqa: ANN001
    PromptFactory(project=project)
    client = client_for(project_admin)
    url = f"/api/projects/{project.pk}/generation-runs"
    assert client.post(url, {"k": 2}, format="json").status_code == 400  # nothing promoted yet
    old, current = policy_version(project, current=False), policy_version(project, current=True, number=2)
    theirs = policy_version(other_project, current=True)

    answer = client.post(url, {"k": 2}, format="json")
    assert answer.status_code == 202, answer.json()
    assert answer.json()["policy"] == current.pk and answer.json()["model"] == "/m/2/merged"
    answer = client.post(url, {"k": 2, "policy": old.pk}, format="json")
    assert answer.status_code == 202 and answer.json()["policy"] == old.pk
    assert client.post(url, {"k": 2, "policy": theirs.pk}, format="json").status_code == 400
    assert client.post(url, {"k": 2, "backend": "builtin-tiny"}, format="json").json()["policy"] is None
    assert list(GenerationRun.objects.values_list("policy_id", flat=True).order_by("id")) == [current.pk, old.pk, None]
    audited = AuditEvent.objects.filter(action="generation.start").order_by("id")
    assert [e.after["policy"] for e in audited] == [current.pk, old.pk, None]


def test_generate_command_takes_a_policy(project) -> None:  # noqa: ANN001
    PromptFactory(project=project)
    current = policy_version(project, current=True)
    call_command("generate", "--project", project.slug, "--policy", "current", "--enqueue")
    call_command("generate", "--project", project.slug, "--policy", str(current.pk), "--enqueue")
    assert list(GenerationRun.objects.values_list("policy_id", "backend")) == [
        (current.pk, "transformers"), (current.pk, "transformers")]
    with pytest.raises(CommandError, match="no policy"):
        call_command("generate", "--project", project.slug, "--policy", "12345", "--enqueue")
