"""The review console: every /console/ URL refuses annotators (403) and hides other
projects (404); adjudication, annotator management and the audit log work."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from guidelines.models import Guideline
from guidelines.services import draft_create, version_publish
from labeling.blind import tiers_as_shown
from labeling.models import Assignment, AuditEvent, ImportJob, Item, Membership, Project, Role
from labeling.services.assignment import next_item
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import MembershipFactory, UserFactory, make_items
from webhooks.models import Webhook


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)  # the login form itself is tested in test_auth.py
    return client


def console_patterns() -> list[URLPattern]:
    for entry in get_resolver().url_patterns:
        if isinstance(entry, URLResolver) and entry.namespace == "console":
            return list(entry.url_patterns)
    raise AssertionError("no console namespace")


@pytest.fixture
def disputed_item(project: Project) -> Item:
    item = make_items(project, 1)[0]
    orders = [lambda c: c, lambda c: -c, lambda c: (c % 2, c)]
    for n, order in enumerate(orders):
        user = UserFactory(username=f"ranker{n}")
        MembershipFactory(user=user, project=project, role=Role.ANNOTATOR)
        assignment = next_item(annotator=user, project=project)
        ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=f"r{n}",
                       data=RankingInput(tiers=tiers_as_shown(assignment, [
                           [c] for c in sorted(assignment.display_order, key=order)])))
    item.refresh_from_db()
    assert item.status == "disputed"
    return item


@pytest.fixture
def ids(project, disputed_item, annotator) -> dict[str, int]:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="g", title="G", project=project)
    version = version_publish(version=draft_create(guideline=guideline, body="Be kind."),
                              user=None)
    hook = Webhook.objects.create(project=project, url="https://hooks.example.com/", events=["item.disputed"])
    job = ImportJob.objects.create(project=project, file_path="/x", original_name="a.jsonl")
    return {"project_id": project.pk, "item_id": disputed_item.pk, "user_id": annotator.pk,
            "guideline_id": guideline.pk, "version_id": version.pk, "hook_id": hook.pk,
            "job_id": job.pk, "what": "generate", "prompt_id": disputed_item.prompt_id}


def console_urls(ids: dict[str, int]) -> list[tuple[str, bool]]:
    """(url, scoped to the project?) for every console pattern."""
    urls = []
    for pattern in console_patterns():
        names = list(pattern.pattern.converters)
        urls.append((reverse(f"console:{pattern.name}", kwargs={n: ids[n] for n in names}),
                     bool(names)))
    return urls


def test_every_console_url_is_403_for_an_annotator(annotator, ids) -> None:  # noqa: ANN001
    client = login(annotator)

    for url, _ in console_urls(ids):
        assert client.get(url).status_code in {403, 405}, url
        assert client.post(url).status_code == 403, url


def test_every_project_console_url_is_404_for_another_projects_reviewer(ids, other_project) -> None:  # noqa: ANN001, E501
    stranger = UserFactory(username="other-reviewer")
    MembershipFactory(user=stranger, project=other_project, role=Role.REVIEWER)
    client = login(stranger)

    for url, scoped in console_urls(ids):
        response = client.get(url)
        if scoped:
            assert response.status_code in {404, 405}, url
            assert client.post(url).status_code in {404, 403}, url
        else:
            assert response.status_code in ({403} if url in STAFF_ONLY else {200, 405}), url
            assert b"Alpha" not in response.content, url


STAFF_ONLY = {"/console/projects/new"}
ADMIN_ONLY = {"/console/guidelines/versions/{version_id}/edit", "/console/projects/{project_id}/webhooks",
              "/console/webhooks/{hook_id}", "/console/projects/{project_id}/erasure",
              "/console/prompts/{prompt_id}/erase", "/console/projects/{project_id}/settings",
              "/console/projects/{project_id}/upload", "/console/projects/{project_id}/upload/{job_id}",
              "/console/projects/{project_id}/upload/{job_id}/status", "/console/projects/{project_id}/members",
              "/console/projects/{project_id}/runs/launch/{what}", *STAFF_ONLY}


def test_reviewer_opens_every_console_page(reviewer, ids) -> None:  # noqa: ANN001
    client = login(reviewer)
    admin_only = {url.format(**ids) for url in ADMIN_ONLY}

    for url, _ in console_urls(ids):
        expected = {403} if url in admin_only else {200, 405}
        assert client.get(url).status_code in expected, url


def test_adjudication_sets_the_final_ranking_and_is_audited(reviewer, disputed_item) -> None:  # noqa: ANN001
    client = login(reviewer)
    page = client.get(f"/console/items/{disputed_item.pk}")
    ids = sorted(disputed_item.item_candidates.values_list("candidate_id", flat=True))

    response = client.post(f"/console/items/{disputed_item.pk}", {
        "action": "set_ranking", "tiers": json.dumps([[ids[1]], [ids[0], ids[2]]]),
        "note": "B is clearly best"})

    assert page.status_code == 200 and b"model-a" in page.content  # provenance for reviewers
    assert response.status_code == 302
    disputed_item.refresh_from_db()
    assert disputed_item.status == "accepted" and disputed_item.decided_by == reviewer
    assert disputed_item.consensus == [[ids[1]], [ids[0], ids[2]]]
    event = AuditEvent.objects.get(action="item.set_ranking")
    assert event.actor == reviewer and event.before["status"] == "disputed"
    assert event.after["status"] == "accepted" and event.note == "B is clearly best"


def test_invalid_final_ranking_is_refused(reviewer, disputed_item) -> None:  # noqa: ANN001
    response = login(reviewer).post(f"/console/items/{disputed_item.pk}", {
        "action": "set_ranking", "tiers": "[[1]]"}, follow=True)

    disputed_item.refresh_from_db()
    assert disputed_item.status == "disputed" and b"Not saved" in response.content
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(("action", "status", "required"), [
    ("accept_consensus", "accepted", 3), ("discard", "discarded", 3), ("send_back", "open", 5)])
def test_other_decisions(reviewer, disputed_item, action, status, required) -> None:  # noqa: ANN001
    login(reviewer).post(f"/console/items/{disputed_item.pk}",
                         {"action": action, "extra_rankings": "2"})

    disputed_item.refresh_from_db()
    assert (disputed_item.status, disputed_item.required_rankings) == (status, required)
    assert AuditEvent.objects.filter(action=f"item.{action}").count() == 1


def test_pause_release_remove_need_an_admin(project, project_admin, reviewer, annotator) -> None:  # noqa: ANN001, E501
    make_items(project, 2)
    next_item(annotator=annotator, project=project)
    url = f"/console/projects/{project.pk}/annotators/{annotator.pk}/action"

    assert login(reviewer).post(url, {"action": "pause"}).status_code == 403
    login(project_admin).post(url, {"action": "pause", "note": "check quality"})

    assert Membership.objects.get(user=annotator).paused
    assert not Assignment.objects.filter(annotator=annotator, status="active").exists()
    from labeling.services.assignment import SubmissionConflict

    with pytest.raises(SubmissionConflict, match="paused"):
        next_item(annotator=annotator, project=project)
    login(project_admin).post(url, {"action": "remove"})
    assert not Membership.objects.filter(user=annotator).exists()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["member.pause", "member.release_leases", "member.remove"]


def test_audit_log_is_append_only(reviewer, disputed_item) -> None:  # noqa: ANN001
    login(reviewer).post(f"/console/items/{disputed_item.pk}", {"action": "discard"})
    event = AuditEvent.objects.get()

    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    page = login(reviewer).get("/console/audit?action=item.")
    assert b"item.discard" in page.content


def test_dashboard_shows_agreement_and_annotators(reviewer, project, disputed_item) -> None:  # noqa: ANN001
    from labeling.services.quality import quality_refresh

    quality_refresh(project=project)
    html = login(reviewer).get(f"/console/projects/{project.pk}/").content.decode()

    assert "<svg" in html and "ranker0" in html and "disputed" in html


def test_feedback_page_shows_only_my_notes(project, disputed_item) -> None:  # noqa: ANN001
    from labeling.services.review import item_adjudicate

    reviewer = UserFactory(username="boss")
    item_adjudicate(item_id=disputed_item.pk, reviewer=reviewer, action="discard",
                    note="prompt was broken")
    mine = login(get_user_model().objects.get(username="ranker0"))
    outsider = UserFactory(username="nobody")
    MembershipFactory(user=outsider, project=project, role=Role.ANNOTATOR)

    assert b"prompt was broken" in mine.get(f"/annotate/{project.slug}/feedback").content
    other = login(outsider).get(f"/annotate/{project.slug}/feedback")
    assert other.status_code == 200 and b"prompt was broken" not in other.content
    assert b"ranker1" not in other.content
