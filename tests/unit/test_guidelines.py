"""Versioned guidelines: shipped files, drafts and publishing, the acknowledgement gate,
rankings stamped with their version, stale labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from guidelines.models import Guideline, GuidelineVersion
from guidelines.services import (
    CONTENT_DIR,
    GuidelineError,
    acknowledge,
    draft_create,
    draft_update,
    guidelines_sync,
    version_publish,
)
from labeling.blind import tiers_as_shown
from labeling.models import Item, Project, Ranking
from labeling.selectors.review import stale_items_for
from labeling.services.assignment import GuidelineAckRequired, SubmissionConflict, next_item
from labeling.services.items import items_reopen
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import UserFactory, make_items


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)  # the login form itself is tested in test_auth.py
    return client


@pytest.fixture
def guideline(project: Project) -> Guideline:
    guideline = Guideline.objects.create(slug="alpha-g", title="Alpha guideline", project=project)
    version = draft_create(guideline=guideline, body="# Rank well\n\nBe kind.")
    version_publish(version=version, user=None)
    project.guideline = guideline
    project.save()
    return guideline


def publish(guideline: Guideline, body: str, change: str = "major") -> GuidelineVersion:
    draft = draft_create(guideline=guideline)
    draft = draft_update(version=draft, body=body, changelog="changed", change=change)
    return version_publish(version=draft, user=None)


def rank(user, assignment, key: str):  # noqa: ANN001, ANN201
    return ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=key,
                          data=RankingInput(tiers=tiers_as_shown(
                              assignment, [[c] for c in assignment.display_order])))


def test_shipped_default_guideline_syncs_once(db: None) -> None:
    first = guidelines_sync()
    second = guidelines_sync()

    assert "default/v001.md" in first.created and first.errors == []
    assert second.created == [] and "default/v001.md" in second.unchanged
    version = GuidelineVersion.objects.get(guideline__slug="default", number=1)
    assert version.is_published and "tie" in version.body.lower()


def test_editing_a_published_file_is_an_error(db: None, tmp_path: Path) -> None:
    folder = tmp_path / "house"
    folder.mkdir()
    (folder / "v001.md").write_text("# House rules\n\nOne.")
    guidelines_sync(tmp_path)
    (folder / "v001.md").write_text("# House rules\n\nOne, edited.")
    (folder / "v002.md").write_text("# House rules\n\nTwo.")

    report = guidelines_sync(tmp_path)

    assert any("immutable" in error and "v001" in error for error in report.errors)
    assert report.created == ["house/v002.md"]
    assert GuidelineVersion.objects.get(guideline__slug="house", number=1).body.endswith("One.")
    assert CONTENT_DIR.is_dir()


def test_empty_or_unchanged_drafts_cannot_be_published(guideline: Guideline) -> None:
    unchanged = draft_create(guideline=guideline)
    with pytest.raises(GuidelineError, match="nothing changed"):
        version_publish(version=unchanged, user=None)
    draft_update(version=unchanged, body="  ", changelog="", change="major")
    with pytest.raises(GuidelineError, match="empty"):
        version_publish(version=unchanged, user=None)


def test_published_versions_are_immutable(guideline: Guideline) -> None:
    published = guideline.versions.get(number=1)

    with pytest.raises(GuidelineError, match="can no longer change"):
        draft_update(version=published, body="new", changelog="", change="minor")


def test_one_draft_at_a_time(guideline: Guideline) -> None:
    draft_create(guideline=guideline)

    with pytest.raises(GuidelineError, match="still a draft"):
        draft_create(guideline=guideline)


def test_first_item_needs_an_acknowledgement(project, guideline, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)

    with pytest.raises(GuidelineAckRequired):
        next_item(annotator=annotator, project=project)
    acknowledge(user=annotator, version=guideline.versions.get(number=1))

    assert next_item(annotator=annotator, project=project) is not None


def test_api_answers_409_until_acknowledged(as_user, project, guideline, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = as_user(annotator)

    blocked = client.get(f"/api/projects/{project.pk}/next")
    info = client.get(f"/api/projects/{project.pk}/guideline").json()
    client.post(f"/api/projects/{project.pk}/guideline/acknowledge")
    allowed = client.get(f"/api/projects/{project.pk}/next")

    assert blocked.status_code == 409 and blocked.json()["code"] == "guideline_ack_required"
    assert info["number"] == 1 and info["acknowledgement_needed"] is True
    assert allowed.status_code == 200


def test_major_version_forces_reacknowledgement_minor_does_not(project, guideline, annotator) -> None:  # noqa: ANN001, E501
    make_items(project, 3)
    acknowledge(user=annotator, version=guideline.versions.get(number=1))
    rank(annotator, next_item(annotator=annotator, project=project), "k1")

    publish(guideline, "# Rank well\n\nBe kind. Typos fixed.", change="minor")
    rank(annotator, next_item(annotator=annotator, project=project), "k2")
    v3 = publish(guideline, "# Rank well\n\nNew rule: prefer concise answers.")

    with pytest.raises(GuidelineAckRequired):
        next_item(annotator=annotator, project=project)
    acknowledge(user=annotator, version=v3)
    rank(annotator, next_item(annotator=annotator, project=project), "k3")

    versions = list(Ranking.objects.order_by("id").values_list("guideline_version__number",
                                                                flat=True))
    assert versions == [1, 2, 3]


def test_major_publish_while_leased_is_guideline_changed(project, guideline, annotator) -> None:  # noqa: ANN001, E501
    make_items(project, 1)
    acknowledge(user=annotator, version=guideline.versions.get(number=1))
    assignment = next_item(annotator=annotator, project=project)

    publish(guideline, "# Rank well\n\nA major change.")
    with pytest.raises(SubmissionConflict) as error:
        rank(annotator, assignment, "late")

    assert error.value.code == "guideline_changed"
    assert Ranking.objects.count() == 0
    item = Item.objects.get()
    assert item.active_leases == 0  # back in the pool for others
    other = UserFactory()
    acknowledge(user=other, version=guideline.versions.order_by("-number").first())
    assert next_item(annotator=other, project=project).item_id == item.pk


def test_browser_gate_redirects_then_lets_through(project, guideline, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = login(annotator)

    gate = client.get(f"/annotate/{project.slug}/")
    page = client.get(f"/annotate/{project.slug}/guideline")
    client.post(f"/annotate/{project.slug}/guideline")
    workspace = client.get(f"/annotate/{project.slug}/")

    assert gate.status_code == 302 and gate["Location"].endswith("/guideline")
    assert b"Be kind." in page.content
    assert workspace.status_code == 200 and b'class="answer card"' in workspace.content


def test_guideline_markdown_is_sanitized(project, guideline, reviewer) -> None:  # noqa: ANN001
    version = publish(guideline, '# Hi\n\n<script>alert(1)</script><img src=x onerror=alert(1)>'
                                 '[x](javascript:alert(1))')

    html = login(reviewer).get(f"/console/guidelines/versions/{version.pk}/").content.decode()

    assert "<script>alert" not in html and "onerror" not in html and "javascript:" not in html


def test_console_editor_publish_and_diff(project, guideline, project_admin, reviewer) -> None:  # noqa: ANN001, E501
    admin = login(project_admin)
    admin.post(f"/console/guidelines/{guideline.pk}/drafts")
    draft = guideline.versions.get(number=2)

    response = admin.post(f"/console/guidelines/versions/{draft.pk}/edit",
                          {"body": "# Rank well\n\nBe kind and brief.", "changelog": "brevity",
                           "change": "major", "publish": "1"})
    diff = login(reviewer).get(f"/console/guidelines/{guideline.pk}/diff?a=1&b=2")
    preview = admin.post("/console/guidelines/preview", {"body": "**bold**<script>x</script>"})

    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.is_published and draft.changelog == "brevity"
    assert diff.status_code == 200 and b"brief" in diff.content
    # Raw HTML is not passed on: a marker shows where it was (core/rendering.py).
    assert preview.json()["html"] == "<p><strong>bold</strong><code>&lt;…&gt;</code>x<code>&lt;…&gt;</code></p>\n"


def test_reviewer_cannot_edit_and_annotator_cannot_open(project, guideline, reviewer,
                                                        annotator) -> None:  # noqa: ANN001
    assert login(reviewer).post(f"/console/guidelines/{guideline.pk}/drafts").status_code == 403
    assert login(annotator).get("/console/guidelines/").status_code == 403


def test_outsider_gets_404_for_a_project_guideline(guideline, outsider) -> None:  # noqa: ANN001
    client = login(outsider)

    assert client.get(f"/console/guidelines/{guideline.pk}/").status_code == 404
    version = guideline.versions.get(number=1)
    assert client.get(f"/console/guidelines/versions/{version.pk}/").status_code == 404


def test_stale_items_are_listed_and_reopened(project, guideline, annotator) -> None:  # noqa: ANN001
    project.overlap = 1
    project.save()
    make_items(project, 2)
    acknowledge(user=annotator, version=guideline.versions.get(number=1))
    rank(annotator, next_item(annotator=annotator, project=project), "k1")
    publish(guideline, "# Rank well\n\nMajor rewrite.")

    items, major = stale_items_for(project=project)
    reopened = items_reopen(project=project, item_ids=[i.pk for i in items], reason="stale")

    assert major.number == 2 and len(items) == 1 and items[0].stale_rankings == 1
    item = Item.objects.get(pk=items[0].pk)
    assert reopened == 1 and item.status == "open" and item.required_rankings == 2


def test_stale_page_access(project, guideline, reviewer, annotator, outsider) -> None:  # noqa: ANN001
    assert login(reviewer).get(f"/console/projects/{project.pk}/stale").status_code == 200
    assert login(reviewer).post(f"/console/projects/{project.pk}/stale").status_code == 403
    assert login(annotator).get(f"/console/projects/{project.pk}/stale").status_code == 403
    assert login(outsider).get(f"/console/projects/{project.pk}/stale").status_code == 404
