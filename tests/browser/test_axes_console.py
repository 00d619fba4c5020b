"""Axes in the console (issue #21), in a real browser: a reviewer adjudicates the one
axis that disagrees by keyboard alone, and every page that shows axes is axe-clean."""

from __future__ import annotations

import pytest

from guidelines.models import Guideline
from guidelines.services import draft_create, version_publish
from labeling.models import Item
from labeling.services.projects import project_update
from labeling.services.quality import quality_refresh
from tests.browser.test_annotate import login
from tests.browser.test_axe_pages import _check, _watch_404
from tests.browser.test_console_keyboard import tab_to
from tests.unit.test_axes_review import _helpful_harmless

pytestmark = pytest.mark.django_db(transaction=True)


def _letters(item: Item) -> dict[str, int]:
    """The page's letters (A, B, C: the item's candidates in order) to candidate ids."""
    ids = list(item.item_candidates.values_list("candidate_id", flat=True))
    return {chr(ord("A") + n): cid for n, cid in enumerate(ids)}


def test_reviewer_adjudicates_the_disputed_axis_by_keyboard_only(page, live_server, as_user, project,  # noqa: ANN001
                                                                  reviewer) -> None:
    _helpful_harmless(as_user, project)
    item = Item.objects.get()
    assert item.axes["harmless"]["status"] == "disputed" and item.status == Item.Status.DISPUTED
    login(page, live_server, reviewer)
    page.goto(f"{live_server.url}/console/projects/{project.pk}/disputes")

    tab_to(page, f"dispute-{item.pk}")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("?axis=harmless")
    tab_to(page, "axis-tab-helpful")  # the tabs are links: look at the other axis, then back
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Deciding Helpful" in page.inner_text("#axis-now")
    tab_to(page, "axis-tab-harmless")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "Deciding Harmless" in page.inner_text("#axis-now")

    page.evaluate("document.activeElement.blur()")  # letters name answers only off the controls
    for key in ("c", "=", "b", "a"):  # C and B tie, A last
        page.keyboard.press(key)
    with page.expect_navigation():
        page.keyboard.press("Enter")  # set this ranking

    item.refresh_from_db()
    letters = _letters(item)
    assert item.axes["harmless"]["consensus"] == [[letters["C"], letters["B"]], [letters["A"]]]
    assert item.axes["harmless"]["status"] == "accepted" and item.status == Item.Status.ACCEPTED
    assert page.url.endswith(f"/console/projects/{project.pk}/disputes")  # nothing left to decide
    assert "on harmless saved" in page.inner_text("body")
    assert page.js_errors == []


def test_axes_pages_are_axe_clean(page, live_server, as_user, project, project_admin, reviewer,  # noqa: ANN001
                                  annotator) -> None:
    guideline = Guideline.objects.create(slug="g", title="G", project=project)
    version_publish(version=draft_create(guideline=guideline, body="# Rules\n\nBe kind."), user=None)
    project, people = _helpful_harmless(as_user, project, items=2)
    project = project_update(project=project, actor=None, guideline=guideline)
    quality_refresh(project=project)
    item = Item.objects.filter(status=Item.Status.DISPUTED).first()
    project_admin.is_staff = True
    project_admin.save()
    missing = _watch_404(page)
    problems: list[str] = []
    login(page, live_server, project_admin)
    base = f"{live_server.url}/console"
    for url in (f"/projects/{project.pk}/", f"/projects/{project.pk}/disputes", f"/items/{item.pk}",
                f"/items/{item.pk}?axis=helpful", f"/projects/{project.pk}/annotators",
                f"/projects/{project.pk}/annotators/{people[0].pk}", f"/projects/{project.pk}/settings",
                "/projects/new", f"/guidelines/{guideline.pk}/"):
        _check(page, base + url, problems, missing)
    page.context.clear_cookies()
    login(page, live_server, annotator)
    _check(page, f"{live_server.url}/annotate/{project.slug}/guideline", problems, missing)
    assert problems == [], "\n".join(problems)
