"""The annotator workspace in a real browser: keyboard, ties, drag, submit, the next
item appearing, and hostile answers rendered inert."""

from __future__ import annotations

import pytest

from core.rendering import render_markdown
from labeling.blind import shown_ids
from labeling.models import Assignment, Candidate, Item, Ranking
from tests.browser.conftest import screenshot
from tests.factories import PASSWORD, make_items

pytestmark = pytest.mark.django_db(transaction=True)

XSS = [
    "<script>window.__xss = 1</script>",
    '<img src=x onerror="window.__xss = 1">',
    "[click](javascript:window.__xss=1)",
    '<svg onload="window.__xss = 1"></svg>',
]


def login(page, live_server, user) -> None:  # noqa: ANN001
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def labels_to_ids(page) -> dict[str, int]:  # noqa: ANN001
    """Label -> candidate id, mapped back from the opaque ids the page shows."""
    article = page.locator("#item-slot .item")
    shown = shown_ids(Assignment.objects.get(pk=int(article.get_attribute("data-assignment"))))
    cards = page.locator("#item-slot .answer")
    return {cards.nth(i).get_attribute("data-label"): shown[cards.nth(i).get_attribute("data-id")]
            for i in range(cards.count())}


def test_rank_by_keyboard_with_a_tie_then_next_item_appears(page, live_server, project,
                                                            annotator) -> None:  # noqa: ANN001
    make_items(project, 2, k=3)
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    first_assignment = page.locator("#item-slot .item").get_attribute("data-assignment")
    ids = labels_to_ids(page)
    # Selectors, not wait_for_function: the enforced CSP forbids the eval it needs.
    page.locator("#prefetched .item").wait_for(state="attached")

    page.keyboard.press("b")
    page.keyboard.press("=")
    page.keyboard.press("a")
    page.keyboard.press("Enter")

    page.wait_for_selector(f"#item-slot .item:not([data-assignment='{first_assignment}'])")
    ranking = Ranking.objects.get(assignment_id=int(first_assignment))
    assert ranking.tiers == [[ids["B"], ids["A"]], [ids["C"]]]
    assert page.locator("#done-today").inner_text() == "1"
    assert page.locator("ul.messages").count() == 0  # no stray flash messages
    assert page.js_errors == []
    screenshot(page, "annotate-after-submit")


def test_backspace_undoes_and_drag_sets_the_order(page, live_server, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1, k=3)
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    ids = labels_to_ids(page)

    page.keyboard.press("a")
    page.keyboard.press("Backspace")
    page.locator(".board .chip[data-label=C]").drag_to(page.locator(".board .chip[data-label=A]"))
    order = page.locator(".board .chip").evaluate_all("els => els.map(e => e.dataset.label)")
    page.locator("button.submit").click()

    page.wait_for_selector("#nothing-left")
    ranking = Ranking.objects.get()
    assert order[0] == "C"
    assert ranking.tiers == [[ids[label]] for label in order]


def test_hostile_answers_render_inert(page, live_server, project, annotator) -> None:  # noqa: ANN001
    item = make_items(project, 1, k=4)[0]
    for candidate_id, payload in zip(
        item.item_candidates.values_list("candidate_id", flat=True), XSS, strict=True
    ):
        Candidate.objects.filter(pk=candidate_id).update(
            text=payload, text_html=str(render_markdown(payload)))
    login(page, live_server, annotator)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    page.locator(".answer a").first.click() if page.locator(".answer a").count() else None

    assert page.evaluate("window.__xss") is None
    assert dialogs == []
    assert page.locator("#item-slot .answer").count() == 4
    assert Item.objects.get().rankings_count == 0


def test_hostile_answer_cannot_stand_in_for_the_submit_button(page, live_server, project,
                                                              annotator) -> None:  # noqa: ANN001
    item = make_items(project, 1, k=3)[0]
    first, second, _ = item.item_candidates.values_list("candidate_id", flat=True)
    hostile = '<div class="submit">Submit</div>'  # the sanitizer used to keep this class
    Candidate.objects.filter(pk=first).update(text=hostile, text_html=str(render_markdown(hostile)))
    # Even markup that got past the sanitizer with a control's classes can't replace it.
    Candidate.objects.filter(pk=second).update(
        text_html='<button type="button" class="submit skip-open skip-confirm">Submit</button>')
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")

    page.keyboard.press("a")
    page.keyboard.press("b")
    page.locator("#item-slot .ranking-panel button.submit").click(timeout=5000)

    page.wait_for_selector("#nothing-left")
    assert Ranking.objects.count() == 1
    assert page.js_errors == []


def test_pairwise_choice_by_keyboard(page, live_server, annotator, db) -> None:  # noqa: ANN001
    from labeling.models import Membership, Project

    project = Project.objects.create(name="Pairs", slug="pairs", mode=Project.Mode.PAIRWISE)
    Membership.objects.create(user=annotator, project=project, role="annotator")
    make_items(project, 1, k=2)
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/pairs/")
    ids = labels_to_ids(page)

    page.keyboard.press("7")  # B better (strength 3)
    page.keyboard.press("Enter")

    page.wait_for_selector("#nothing-left")
    ranking = Ranking.objects.get()
    assert ranking.tiers == [[ids["B"]], [ids["A"]]] and ranking.strength == 3
