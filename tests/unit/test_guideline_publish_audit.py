"""Publishing a guideline version is audited once per publish, records the version it
replaces, and a refused publish or the file sync (not a person) writes nothing. Found
by the stateful concurrency test (tests/integration/test_stateful_concurrency.py), whose
lock-order case needs PostgreSQL and stays there."""

from __future__ import annotations

from pathlib import Path

import pytest

from guidelines.models import Guideline
from guidelines.services import GuidelineError, draft_create, guidelines_sync, version_publish
from labeling.models import AuditEvent, Project


@pytest.fixture
def guideline(project: Project) -> Guideline:
    return Guideline.objects.create(slug="alpha-g", title="Alpha guideline", project=project)


def test_publishing_a_guideline_version_writes_one_audit_event(guideline: Guideline, project_admin) -> None:  # noqa: ANN001
    draft = draft_create(guideline=guideline, body="# Rank well")

    version_publish(version=draft, user=project_admin)

    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.project_id) == ("guideline.publish", project_admin, guideline.project_id)
    assert (event.target_type, event.target_id) == ("guidelineversion", str(draft.pk))
    assert (event.before, event.after) == ({"number": None}, {"number": 1, "change": "major"})


def test_a_second_version_records_the_one_it_replaces(guideline: Guideline, project_admin) -> None:  # noqa: ANN001
    version_publish(version=draft_create(guideline=guideline, body="# One"), user=project_admin)
    second = draft_create(guideline=guideline, body="# Two", change="minor")

    version_publish(version=second, user=project_admin)

    event = AuditEvent.objects.order_by("id").last()
    assert (event.before, event.after) == ({"number": 1}, {"number": 2, "change": "minor"})
    assert AuditEvent.objects.filter(action="guideline.publish").count() == 2


def test_a_refused_publish_writes_no_audit_event(guideline: Guideline, project_admin) -> None:  # noqa: ANN001
    version_publish(version=draft_create(guideline=guideline, body="# One"), user=project_admin)
    unchanged = draft_create(guideline=guideline)

    with pytest.raises(GuidelineError, match="nothing changed"):
        version_publish(version=unchanged, user=project_admin)

    assert AuditEvent.objects.count() == 1


def test_the_file_sync_is_not_a_person_and_writes_no_audit_event(db: None, tmp_path: Path) -> None:
    (tmp_path / "house").mkdir()
    (tmp_path / "house" / "v001.md").write_text("# House rules\n\nOne.")

    report = guidelines_sync(tmp_path)

    assert report.created == ["house/v001.md"]
    assert not AuditEvent.objects.exists()
