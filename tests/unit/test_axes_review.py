"""Axes on the reviewers' side (issue #21): annotator quality per axis, disputes and the
item agreement API naming the axis that disagrees, adjudication of one axis, the
dashboard's per-axis figures, and choosing axes in the console's project forms."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.errors import DomainError
from labeling.models import AnnotatorQuality, AuditEvent, Item, Project
from labeling.selectors.dashboard import project_agreement_summary
from labeling.services.projects import project_update
from labeling.services.quality import quality_refresh
from labeling.services.review import item_adjudicate
from tests.factories import make_items
from tests.unit.test_axes import _ids_by_text, _members, _rank
from tests.unit.test_console_review import disputed_item  # noqa: F401 - a fixture


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def _helpful_harmless(as_user, project, items: int = 1) -> tuple[Project, list]:  # noqa: ANN001
    """Two annotators rank every item: the same helpful order, opposite harmless orders."""
    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=2)
    make_items(project, items)
    people = _members(project, 2)
    for n, person in enumerate(people):
        for _ in range(items):
            def build(assignment: dict, n: int = n) -> dict:
                ids = _ids_by_text(assignment)
                order = sorted(ids)
                harmless = list(reversed(order)) if n else order
                return {"axes": {"helpful": {"tiers": [[ids[t]] for t in order]},
                                 "harmless": {"tiers": [[ids[t]] for t in harmless]}},
                        "safety": {i: True for i in ids.values()}}
            _rank(as_user(person), project, build)
    return project, people


@pytest.fixture
def split_item(as_user, project) -> Item:  # noqa: ANN001
    _helpful_harmless(as_user, project)
    item = Item.objects.get()
    assert item.status == Item.Status.DISPUTED
    assert item.axes["helpful"]["status"] == "accepted" and item.axes["harmless"]["status"] == "disputed"
    return item


def test_quality_per_axis_separates_the_axis_people_disagree_on(as_user, project) -> None:  # noqa: ANN001
    project, people = _helpful_harmless(as_user, project, items=2)

    quality_refresh(project=project)

    for person in people:
        rows = {q.period: q for q in AnnotatorQuality.objects.filter(project=project, annotator=person)}
        assert {"all", "axis:helpful", "axis:harmless"} <= set(rows)
        assert rows["axis:helpful"].loo_agreement == 1.0 and rows["axis:helpful"].rankings == 2
        assert rows["axis:harmless"].loo_agreement < 0.5 and rows["axis:harmless"].rankings == 2
        assert rows["all"].loo_agreement == rows["axis:helpful"].loo_agreement  # the primary axis's


def test_a_project_without_axes_gets_no_axis_rows(reviewer, disputed_item) -> None:  # noqa: ANN001, F811
    quality_refresh(project=disputed_item.project)
    periods = set(AnnotatorQuality.objects.values_list("period", flat=True))
    assert periods and not any(p.startswith("axis:") for p in periods)


def test_annotator_pages_and_api_show_figures_per_axis(as_user, project, reviewer) -> None:  # noqa: ANN001
    project, people = _helpful_harmless(as_user, project, items=2)
    quality_refresh(project=project)
    client = login(reviewer)

    table = client.get(f"/console/projects/{project.pk}/annotators").content.decode()
    detail = client.get(f"/console/projects/{project.pk}/annotators/{people[0].pk}").content.decode()
    api = as_user(reviewer).get(f"/api/projects/{project.pk}/annotators", {"period": "axis:harmless"})

    assert "Helpful agreement" in table and "Harmless agreement" in table
    assert "Per axis" in detail and "Harmless" in detail
    assert {row["period"] for row in api.json()} == {"axis:harmless"} and len(api.json()) == 2
    assert all(row["loo_agreement"] < 0.5 for row in api.json())


def test_disputes_and_the_item_api_name_the_axis_that_disagrees(as_user, reviewer, split_item) -> None:  # noqa: ANN001
    page = login(reviewer).get(f"/console/projects/{split_item.project_id}/disputes").content.decode()
    api = as_user(reviewer).get(f"/api/items/{split_item.pk}/agreement").json()
    adjudication = login(reviewer).get(f"/console/items/{split_item.pk}").content.decode()

    assert "Axes that disagree" in page and "?axis=harmless" in page
    assert api["disputed_axes"] == ["harmless"]
    assert api["axes"]["helpful"]["status"] == "accepted" and api["axes"]["harmless"]["status"] == "disputed"
    assert all(set(r["labels"]) == {"helpful", "harmless"} and r["safety"] for r in api["rankings"])
    assert "Deciding <strong>Harmless</strong>" in adjudication  # the first disputed axis
    assert 'name="axis" value="harmless"' in adjudication


def test_adjudicating_the_disputed_axis_accepts_the_item_and_is_audited(reviewer, split_item) -> None:  # noqa: ANN001
    ids = sorted(split_item.item_candidates.values_list("candidate_id", flat=True))
    helpful_before = split_item.consensus

    response = login(reviewer).post(f"/console/items/{split_item.pk}", {
        "action": "set_ranking", "axis": "harmless", "tiers": json.dumps([[ids[2]], [ids[0], ids[1]]]),
        "note": "C refuses"})

    assert response.status_code == 302
    split_item.refresh_from_db()
    assert split_item.status == Item.Status.ACCEPTED and split_item.decided_by == reviewer
    assert split_item.axes["harmless"]["status"] == "accepted"
    assert split_item.axes["harmless"]["consensus"] == [[ids[2]], [ids[0], ids[1]]]
    assert split_item.consensus == helpful_before  # the primary axis is untouched
    event = AuditEvent.objects.get(action="item.set_ranking")
    assert event.before["axis"] == "harmless" and event.before["axis_status"] == "disputed"
    assert event.after["axis_status"] == "accepted" and event.after["status"] == "accepted"


def test_accepting_an_axis_consensus_and_the_primary_axis_sets_item_consensus(reviewer, split_item) -> None:  # noqa: ANN001
    harmless = split_item.axes["harmless"]["consensus"]
    item = item_adjudicate(item_id=split_item.pk, reviewer=reviewer, action="accept_consensus", axis="harmless")
    assert item.status == Item.Status.ACCEPTED and item.axes["harmless"]["consensus"] == harmless
    assert AuditEvent.objects.get(action="item.accept_consensus").after["axis"] == "harmless"

    ids = sorted(split_item.item_candidates.values_list("candidate_id", flat=True))
    item = item_adjudicate(item_id=split_item.pk, reviewer=reviewer, action="set_ranking",
                           tiers=[[ids[1]], [ids[0]], [ids[2]]])  # no axis: the primary one
    assert item.consensus == item.axes["helpful"]["consensus"] == [[ids[1]], [ids[0]], [ids[2]]]


def test_accepting_the_other_axis_leaves_the_item_disputed(reviewer, split_item) -> None:  # noqa: ANN001
    item = item_adjudicate(item_id=split_item.pk, reviewer=reviewer, action="accept_consensus", axis="helpful")
    assert item.status == Item.Status.DISPUTED  # harmless still disagrees
    response = login(reviewer).post(f"/console/items/{split_item.pk}", {"action": "accept_consensus",
                                                                       "axis": "helpful"})
    assert response["Location"] == f"/console/items/{split_item.pk}"  # stays on the item


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"action": "set_ranking", "axis": "nope", "tiers": [[1]]}, "unknown axis"),
    ({"action": "discard", "axis": "harmless"}, "whole item"),
])
def test_bad_axis_decisions_are_refused(reviewer, split_item, kwargs, message) -> None:  # noqa: ANN001
    with pytest.raises(DomainError, match=message):
        item_adjudicate(item_id=split_item.pk, reviewer=reviewer, **kwargs)
    split_item.refresh_from_db()
    assert split_item.status == Item.Status.DISPUTED and not AuditEvent.objects.filter(
        action__startswith="item.").exists()


def test_dashboard_and_agreement_api_count_per_axis(as_user, reviewer, split_item) -> None:  # noqa: ANN001
    summary = project_agreement_summary(project=split_item.project)
    by_key = {row["key"]: row for row in summary["axes"]}
    page = login(reviewer).get(f"/console/projects/{split_item.project_id}/").content.decode()
    api = as_user(reviewer).get(f"/api/projects/{split_item.project_id}/agreement").json()

    assert by_key["helpful"]["accepted"] == 1 and by_key["helpful"]["disputed"] == 0
    assert by_key["harmless"]["accepted"] == 0 and by_key["harmless"]["disputed"] == 1
    assert by_key["helpful"]["agreement"] == 1.0 and by_key["harmless"]["agreement"] < 0.5
    assert "Agreement per axis" in page and api["axes"] == json.loads(json.dumps(summary["axes"]))


# --------------------------------------------------------------------------- settings forms

CREATE = {"name": "Axes", "slug": "axes", "mode": "ranking", "k": 4, "overlap": 3,
          "agreement_threshold": 0.6, "assignment_strategy": "uncertain_first", "gold_rate": 0,
          "lease_minutes": 20, "demonstrations": "off", "allow_ties": "on"}


def test_console_creates_a_project_with_a_preset_or_custom_axes(staff) -> None:  # noqa: ANN001
    client = login(staff)
    assert b"Helpful + harmless" in client.get("/console/projects/new").content

    assert client.post("/console/projects/new", {**CREATE, "axes": "helpful_harmless"}).status_code == 302
    assert [a["key"] for a in Project.objects.get(slug="axes").axes] == ["helpful", "harmless"]
    assert AuditEvent.objects.get(action="project.create").after["axes"]

    custom = [{"key": "clear", "description": "Which is clearer?"},
              {"key": "short", "kind": "rating", "required": False, "anchors": list("abcde")}]
    client.post("/console/projects/new", {**CREATE, "slug": "custom", "axes": "custom",
                                          "axes_custom": json.dumps(custom)})
    assert [(a["key"], a["kind"]) for a in Project.objects.get(slug="custom").axes] == [
        ("clear", "ranking"), ("short", "rating")]

    client.post("/console/projects/new", {**CREATE, "slug": "plain", "axes": "overall"})
    assert Project.objects.get(slug="plain").axes == []  # the implicit axis, as before


@pytest.mark.parametrize(("axes_custom", "error"), [
    ("[{", "Not valid JSON"),
    ('[{"key": "x", "kind": "rating"}]', "5 anchors"),
    ('[{"key": "a"}, {"key": "a"}]', "must differ"),
])
def test_bad_custom_axes_are_inline_errors(staff, axes_custom, error) -> None:  # noqa: ANN001
    page = login(staff).post("/console/projects/new", {**CREATE, "axes": "custom", "axes_custom": axes_custom})
    assert page.status_code == 200 and b"id_axes_custom_error" in page.content
    assert error in page.content.decode() and not Project.objects.exists()


def test_settings_show_axes_and_refuse_new_keys_once_ranked(as_user, project, project_admin) -> None:  # noqa: ANN001
    project, _ = _helpful_harmless(as_user, project)
    client = login(project_admin)
    data = {name: getattr(project, name) for name in ("name", "slug", "mode", "k", "overlap", "agreement_threshold",
                                                       "assignment_strategy", "gold_rate", "lease_minutes",
                                                       "demonstrations", "status")}
    data["allow_ties"] = "on"

    page = client.get(f"/console/projects/{project.pk}/settings").content.decode()
    assert '<option value="helpful_harmless" selected>' in page and "keys and kinds are fixed" in page

    refused = client.post(f"/console/projects/{project.pk}/settings", {**data, "axes": "helpsteer"})
    assert refused.status_code == 200 and b"id_axes_error" in refused.content
    renamed = [{**a, "name": a["name"] + " (v2)"} for a in project.axes]
    saved = client.post(f"/console/projects/{project.pk}/settings",
                        {**data, "axes": "custom", "axes_custom": json.dumps(renamed)})
    assert saved.status_code == 302
    project.refresh_from_db()
    assert project.axes[0]["name"] == "Helpful (v2)"
    event = AuditEvent.objects.get(action="project.update", actor=project_admin)
    assert set(event.after) == {"axes"} and "Helpful (v2)" in json.dumps(event.after)
    unchanged = client.post(f"/console/projects/{project.pk}/settings", {**data, "axes": "custom",
                                                                       "axes_custom": json.dumps(project.axes)})
    assert unchanged.status_code == 302 and AuditEvent.objects.filter(action="project.update",
                                                                     actor=project_admin).count() == 1


def test_each_axis_description_is_shown_with_the_guideline(project, annotator, reviewer, other_project) -> None:  # noqa: ANN001
    from guidelines.models import Guideline
    from guidelines.services import draft_create, version_publish

    guideline = Guideline.objects.create(slug="shared", title="Shared")
    version_publish(version=draft_create(guideline=guideline, body="Be kind."), user=None)
    project = project_update(project=project, actor=None, axes="helpful_harmless", guideline=guideline)
    project_update(project=other_project, actor=None, axes="helpsteer", guideline=guideline)

    ack = login(annotator).get(f"/annotate/{project.slug}/guideline").content.decode()
    console = login(reviewer).get(f"/console/guidelines/{guideline.pk}/").content.decode()

    description = project.axes[1]["description"]
    assert "What each answer is judged on" in ack and description in ack and "mark each answer safe" in ack
    assert description in console and "Alpha: what each answer" in console
    assert "Beta" not in console and "Verbosity" not in console  # not this reviewer's project


def test_a_rating_axis_shows_each_score_and_the_mean(as_user, project, reviewer) -> None:  # noqa: ANN001
    axes = [{"key": "overall"},
            {"key": "verbosity", "kind": "rating", "required": False, "anchors": list("01234")}]
    project = project_update(project=project, actor=None, axes=axes, overlap=2)
    make_items(project, 1)
    for n, person in enumerate(_members(project, 2)):
        def build(assignment: dict, n: int = n) -> dict:
            ids = _ids_by_text(assignment)
            order = sorted(ids)
            return {"tiers": [[ids[t]] for t in order],
                    "axes": {"verbosity": {"scores": {ids[t]: (4 if n else 0) for t in order}}}}
        _rank(as_user(person), project, build)
    item = Item.objects.get()

    page = login(reviewer).get(f"/console/items/{item.pk}?axis=verbosity").content.decode()

    assert "Deciding <strong>Verbosity</strong> (a rating axis" in page and "Mean score" in page
    assert page.count('<td class="rank">4</td>') == 3 and page.count('<td class="rank">0</td>') == 3
    assert page.count("<td>2.00</td>") == 3  # the mean of 0 and 4 for each answer


def test_the_queue_puts_the_least_agreed_required_axis_first(project) -> None:  # noqa: ANN001
    from labeling.selectors.review import disputes_for

    project = project_update(project=project, actor=None, axes="helpful_harmless")
    first, second, third = make_items(project, 3)
    figures = {  # item: (helpful, harmless) agreement; Item.agreement is helpful's
        first: (0.5, 1.0), second: (1.0, -0.5), third: (0.2, 0.9)}
    for item, (helpful, harmless) in figures.items():
        Item.objects.filter(pk=item.pk).update(status=Item.Status.DISPUTED, agreement=helpful, axes={
            "helpful": {"agreement": helpful, "status": "disputed" if helpful < 0.6 else "accepted"},
            "harmless": {"agreement": harmless, "status": "disputed" if harmless < 0.6 else "accepted"}})

    assert list(disputes_for(project=project)) == [second, third, first]
