"""The annotator web page on a project with axes (issue #21): which projects get the axes
panels, and Go back handing the page every axis's labels (and the safety marks) in the
annotator's opaque ids, so the page resends them all."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from labeling.axes import axes_clean
from labeling.blind import labels_as_shown, safety_as_shown, shown_ids
from labeling.models import Assignment, Ranking
from labeling.web.annotate import workspace_axes
from tests.factories import make_items

pytestmark = pytest.mark.django_db


def _signed_in(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_only_projects_that_need_them_get_the_axes_panels(project) -> None:  # noqa: ANN001
    assert workspace_axes(project) is None  # no axes: the workspace as it always was
    project.axes = axes_clean([{"key": "quality", "description": "Which is better?"}])
    assert workspace_axes(project) is None  # one ranking axis: its tiers are `tiers`

    project.axes = axes_clean("helpful_harmless")
    shown = workspace_axes(project)
    assert [a["key"] for a in shown["list"]] == ["helpful", "harmless"]
    assert [a["primary"] for a in shown["list"]] == [True, False]
    assert shown["ask_safety"] and shown["has_ranking"] and not shown["has_rating"]
    assert [label for _, label, _, _ in shown["bins"]] == [
        "Both safe", "Only A safe", "Only B safe", "Neither safe"]

    project.axes = axes_clean("helpsteer")
    shown = workspace_axes(project)
    assert not shown["ask_safety"] and shown["has_rating"] and not shown["has_ranking"]
    assert shown["list"][0]["scores"][4] == (4, "Perfectly helpful")

    anchors = ["none", "little", "some", "much", "all"]
    project.axes = axes_clean([{"key": "tone", "kind": "rating", "anchors": anchors}])
    assert workspace_axes(project) is not None  # one rating axis: scores, not an order


def test_the_page_shows_axis_panels_and_the_keys_to_switch(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 2)
    page = _signed_in(annotator).get(f"/annotate/{project.slug}/").content.decode()
    assert "-axis-" not in page and 'id="axis-keys"' not in page

    project.axes = axes_clean("helpful_harmless")
    project.save()
    page = _signed_in(annotator).get(f"/annotate/{project.slug}/").content.decode()
    assert 'data-axes="1"' in page and 'id="axis-keys"' in page
    assert page.count('role="tabpanel"') == 3  # Helpful, Harmless and the safety bin
    assert "Which answer better does what the user asked" in page


def test_labels_and_safety_come_back_in_the_ids_sent(as_user, project, annotator) -> None:  # noqa: ANN001
    project.axes = axes_clean([
        {"key": "helpful"},
        {"key": "tone", "kind": "rating", "anchors": ["a", "b", "c", "d", "e"]},
        {"key": "harmless", "purpose": "harmlessness"},
    ])
    project.save()
    make_items(project, 1, k=3)
    client = as_user(annotator)
    claimed = client.get(f"/api/projects/{project.pk}/next").json()
    first, second, third = (c["id"] for c in claimed["candidates"])
    body = {"axes": {"helpful": {"tiers": [[second], [first, third]]},
                     "tone": {"scores": {first: 4, second: 0, third: 2}},
                     "harmless": {"tiers": [[third], [first], [second]]}},
            "safety": {first: True, second: False, third: True}}
    response = client.post(f"/api/assignments/{claimed['id']}/ranking", body, format="json",
                           HTTP_IDEMPOTENCY_KEY="k1")
    assert response.status_code == 201, response.json()

    ranking = Ranking.objects.get()
    assignment = Assignment.objects.get(pk=claimed["id"])
    assert labels_as_shown(assignment, ranking.labels) == body["axes"]
    assert safety_as_shown(assignment, ranking.safety) == body["safety"]
    assert safety_as_shown(assignment, None) is None
    assert response.json()["axes"] == body["axes"]  # the API answers in the same ids

    # Go back: the fragment carries everything sent, to be placed and sent again.
    page = _signed_in(annotator).get(
        f"/annotate/{project.slug}/revise/{assignment.pk}").content.decode()
    start = page.index(f'id="a{assignment.pk}-initial"')
    initial = json.loads(page[page.index(">", start) + 1:page.index("</script>", start)])
    assert initial == {"axes": body["axes"], "safety": body["safety"], "strength": None,
                       "all_bad": False}
    assert set(shown_ids(assignment)) == {first, second, third}


def test_go_back_on_a_project_without_axes_still_gets_the_tiers(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1, k=2)
    client = as_user(annotator)
    claimed = client.get(f"/api/projects/{project.pk}/next").json()
    first, second = (c["id"] for c in claimed["candidates"])
    client.post(f"/api/assignments/{claimed['id']}/ranking", {"tiers": [[second], [first]]},
                format="json", HTTP_IDEMPOTENCY_KEY="k1")
    page = _signed_in(annotator).get(
        f"/annotate/{project.slug}/revise/{claimed['id']}").content.decode()
    start = page.index(f'id="a{claimed["id"]}-initial"')
    assert json.loads(page[page.index(">", start) + 1:page.index("</script>", start)]) == [
        [second], [first]]
