"""The workspace's features in a real browser (issue 17): keyboard only from ranking to
Go back, progress, the drawer at desktop and phone widths, long answers side by side,
and a session that ends mid-item."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session

from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, version_publish
from labeling.models import Assignment, Candidate, Ranking
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import labels_to_ids, login
from tests.factories import PASSWORD, make_items

pytestmark = pytest.mark.django_db(transaction=True)


def _ready(page, live_server, project) -> str:  # noqa: ANN001
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    page.locator("#prefetched .item").wait_for(state="attached")
    page.wait_for_load_state("networkidle")  # the SQLite test database locks under concurrent writes
    return page.locator("#item-slot .item").get_attribute("data-assignment")


def _next(page, current: str) -> str:  # noqa: ANN001
    page.wait_for_selector(f"#item-slot .item:not([data-assignment='{current}'])")
    page.wait_for_load_state("networkidle")
    return page.locator("#item-slot .item").get_attribute("data-assignment")


def _tab_to(page, element_id: str, limit: int = 60) -> None:  # noqa: ANN001
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def test_keyboard_only_rank_skip_go_back_and_submit(page, live_server, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 4, k=3)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    ids = labels_to_ids(page)

    page.keyboard.press("b")
    page.keyboard.press("a")
    assert "Answer A placed 2nd" in page.locator("#announce").inner_text()
    assert page.locator(f"#a{first}-chip-B").get_attribute("aria-label") == "Answer B, placed 1st"
    page.keyboard.press("Enter")
    second = _next(page, first)

    page.keyboard.press("s")  # the reason list gets the focus
    page.keyboard.press("Tab")  # to "Skip this item"
    page.keyboard.press("Enter")
    third = _next(page, second)

    _tab_to(page, "go-back-open")
    page.keyboard.press("Enter")  # the list opens with the focus on its first "Change"
    page.wait_for_selector("#recent-list button[data-url]")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#a{first}.revising")
    assert page.locator(f"#a{first}-badge-B").inner_text() == "#1"  # what they sent is placed
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focused answer shows it
    for _ in range(3):
        page.keyboard.press("Backspace")
    page.keyboard.press("c")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#item-slot #a{third}")  # back to the item that waited
    page.keyboard.press("a")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    _next(page, third)

    changed = Ranking.objects.get(assignment_id=int(first), superseded_by__isnull=True)
    assert changed.tiers == [[ids["C"]], [ids["B"]], [ids["A"]]]
    assert Ranking.objects.filter(assignment_id=int(first)).count() == 2
    assert Assignment.objects.get(pk=int(second)).status == Assignment.Status.SKIPPED
    assert Ranking.objects.filter(assignment_id=int(third)).count() == 1
    assert page.locator("#done-total").inner_text() == "2"
    assert page.js_errors == []


def test_progress_counts_n_of_n_and_left_does_not_drop_on_preload(page, live_server, project,  # noqa: ANN001
                                                                  annotator) -> None:
    make_items(project, 4, k=2)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)

    assert page.locator("#left").inner_text() == "4"  # the pre-loaded item is still left
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator("#left").inner_text() == "4"  # and the server agrees
    assert page.locator("#total-all").inner_text() == "4"
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    _next(page, first)

    assert page.locator("#left").inner_text() == "3"
    assert page.locator("#done-total").inner_text() == "1" and page.locator("#total-all").inner_text() == "4"
    assert page.locator("#done-today").inner_text() == "1"
    assert page.locator("#progress-total").get_attribute("max") == "4"
    assert page.evaluate("document.getElementById('progress-total').value") == 1


WIDE = "# Rules\n\n" + "\n\n".join(
    f"## Section {n}\n\nText for section {n}.\n\n```\n{'x' * 300}\n```" for n in range(12))


def _guideline(project, annotator) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="wide", title="Wide", project=project)
    version = version_publish(version=draft_create(guideline=guideline, body=WIDE), user=None)
    project.guideline = guideline
    project.save()
    acknowledge(user=annotator, version=version)


@pytest.mark.parametrize("width", [1280, 390])
def test_the_drawer_fits_and_folds(browser, live_server, project, annotator, width) -> None:  # noqa: ANN001
    _guideline(project, annotator)
    make_items(project, 2, k=3)
    context = browser.new_context(viewport={"width": width, "height": 850})
    page = context.new_page()
    login(page, live_server, annotator)
    _ready(page, live_server, project)
    drawer = page.locator("#drawer")
    toggle = page.locator("#drawer-toggle")

    if width < 1100:  # a toggle, not 7,000 px of guideline under the item
        assert not drawer.is_visible() and toggle.get_attribute("aria-expanded") == "false"
        assert page.evaluate("document.documentElement.scrollHeight") < 3000
        toggle.click()
    assert drawer.is_visible() and toggle.get_attribute("aria-expanded") == "true"
    box = drawer.bounding_box()
    assert box["width"] <= (320 if width >= 1100 else width)
    assert drawer.evaluate("d => d.scrollWidth <= d.clientWidth")  # nothing cut off
    for card in drawer.locator(".card").all():
        assert card.bounding_box()["width"] <= box["width"] + 0.5
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert drawer.locator("nav a[href='#guideline-section-3']").count() == 1  # the section list
    drawer.locator("nav a[href='#guideline-section-3']").click()
    found = axe_violations(page)
    assert found == [], describe_violations(found)
    screenshot(page, f"workspace-drawer-{width}")
    toggle.click()
    assert not drawer.is_visible() and toggle.get_attribute("aria-expanded") == "false"
    context.close()


def test_long_answers_side_by_side_scroll_together_and_expand(page, live_server, project,  # noqa: ANN001
                                                             annotator) -> None:
    item = make_items(project, 1, k=3)[0]
    long = "\n\n".join(f"Paragraph {n} " + "word " * 40 for n in range(60))
    Candidate.objects.filter(pk__in=item.item_candidates.values("candidate_id")).update(
        text=long, text_html="".join(f"<p>Paragraph {n} {'word ' * 40}</p>" for n in range(60)))
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    page.wait_for_load_state("networkidle")
    cards = page.locator("#item-slot .answer")
    boxes = [cards.nth(i).bounding_box() for i in range(3)]

    assert len({round(b["y"]) for b in boxes}) == 1  # one row
    cards.nth(0).evaluate("c => { c.scrollTop = 600; c.dispatchEvent(new Event('scroll')); }")
    page.wait_for_timeout(200)
    assert cards.nth(1).evaluate("c => c.scrollTop") > 300  # the others followed
    label = cards.nth(0).get_attribute("data-label")
    page.locator(f"#item-slot [id$='-expand-{label}']").click()
    assert cards.nth(0).bounding_box()["width"] > 2 * boxes[1]["width"]
    screenshot(page, "workspace-side-by-side")


def test_a_session_that_ends_keeps_the_work_and_signs_in_in_place(page, live_server, project,  # noqa: ANN001
                                                                   annotator) -> None:
    make_items(project, 2, k=2)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    page.keyboard.press("b")
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for key in list(Session.objects.values_list("session_key", flat=True)):
        store(session_key=key).delete()  # the session ends: its row, and its cached copy (cached_db)

    page.keyboard.press("Enter")

    page.locator("#signin-panel").wait_for()
    assert "Your session ended" in page.locator("#signin-panel").inner_text()
    assert page.locator(f"#a{first}-badge-B").inner_text() == "#1"  # the work is on screen
    page.keyboard.type(annotator.username)  # the username field has the focus
    page.fill("#signin-password", PASSWORD)
    page.keyboard.press("Enter")
    _next(page, first)

    assert page.locator("#signin-panel").is_hidden()
    assert Ranking.objects.filter(assignment_id=int(first)).count() == 1
    assert page.js_errors == []
