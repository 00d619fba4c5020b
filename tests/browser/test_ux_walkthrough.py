"""The walkthrough's defects in a real browser (issue 17): pause, keyboard focus, the
styled 403, the favicon."""

from __future__ import annotations

import pytest

from labeling.models import Assignment, AuditEvent, Item, Ranking
from labeling.services.members import membership_pause
from tests.browser.test_annotate import login
from tests.factories import make_items
from tests.unit.test_console_review import disputed_item  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def _open_workspace(page, live_server, project) -> str:  # noqa: ANN001
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    page.locator("#prefetched .item").wait_for(state="attached")
    page.wait_for_load_state("networkidle")  # the SQLite test database locks under concurrent writes
    return page.locator("#item-slot .item").get_attribute("data-assignment")


def test_paused_mid_item_the_ranking_is_refused_and_the_page_says_why(
        page, live_server, project, annotator, project_admin) -> None:  # noqa: ANN001
    make_items(project, 3, k=2)
    login(page, live_server, annotator)
    _open_workspace(page, live_server, project)
    membership_pause(project=project, user=annotator, paused=True, actor=project_admin)

    page.keyboard.press("a")
    page.keyboard.press("Enter")

    page.locator("#paused").wait_for()
    assert "is paused" in page.locator("h1").inner_text()
    assert page.locator(".answer").count() == 0  # the pre-loaded item is not shown
    assert not Ranking.objects.exists()
    assert page.js_errors == []


def test_enter_on_a_focused_link_or_button_does_what_it_says(page, live_server, project,  # noqa: ANN001
                                                             annotator) -> None:
    make_items(project, 3, k=2)
    login(page, live_server, annotator)
    _open_workspace(page, live_server, project)

    page.locator("a", has_text="My feedback").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/annotate/{project.slug}/feedback")

    first = _open_workspace(page, live_server, project)
    page.keyboard.press("a")  # the ranking is complete: Enter on the page would submit it
    page.keyboard.press("s")
    page.locator(f"#a{first}-skip-confirm").focus()
    page.keyboard.press("Enter")

    page.wait_for_selector(f"#item-slot .item:not([data-assignment='{first}'])")
    assert Assignment.objects.get(pk=int(first)).status == Assignment.Status.SKIPPED
    assert not Ranking.objects.exists()


def test_enter_on_a_focused_discard_discards(page, live_server, project, reviewer,  # noqa: ANN001
                                             disputed_item) -> None:  # noqa: F811
    login(page, live_server, reviewer)
    page.goto(f"{live_server.url}/console/items/{disputed_item.pk}")

    page.locator("#action-discard").focus()
    page.keyboard.press("Enter")

    page.wait_for_url(f"{live_server.url}/console/projects/{project.pk}/disputes")
    assert Item.objects.get(pk=disputed_item.pk).status == Item.Status.DISCARDED
    assert AuditEvent.objects.filter(action="item.discard").count() == 1
    assert not AuditEvent.objects.filter(action="item.set_ranking").exists()


def test_the_guideline_diff_is_rendered_and_fits_a_phone(browser, live_server, project,  # noqa: ANN001
                                                         annotator) -> None:
    from guidelines.models import Guideline
    from guidelines.services import acknowledge, draft_create, draft_update, version_publish

    guideline = Guideline.objects.create(slug="g", title="G", project=project)
    body = "# Rules\n\nBe kind.\n\n## Code\n\n```\n" + "y" * 200 + "\n```"
    v1 = version_publish(version=draft_create(guideline=guideline, body=body), user=None)
    project.guideline = guideline
    project.save()
    acknowledge(user=annotator, version=v1)
    draft = draft_create(guideline=guideline)
    version_publish(version=draft_update(version=draft, change="major", changelog="sources",
                                         body=body.replace("Be kind.", "Be kind and cite **sources**.")),
                    user=None)
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    login(page, live_server, annotator)

    page.goto(f"{live_server.url}/annotate/{project.slug}/")

    page.wait_for_url(f"{live_server.url}/annotate/{project.slug}/guideline")
    added = page.locator(".diff-added")
    assert added.count() == 1 and added.locator("strong").inner_text() == "sources"
    assert "**" not in page.locator(".rendered-diff").inner_text()
    assert page.locator(".diff-removed").inner_text().count("Be kind.") == 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    context.close()
