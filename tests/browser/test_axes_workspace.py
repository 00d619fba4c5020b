"""The workspace of a project with axes (issue #21) in a real browser: two ranking axes and
Llama 2's safety bin by keyboard only, the pairwise four-bin choice, HelpSteer's 0..4
ratings, a submit refused until every axis is labelled, Go back resending every axis, a
lost answer retried with the same Idempotency-Key, and axe-core on every panel."""

from __future__ import annotations

import pytest

from labeling.axes import axes_clean
from labeling.models import Ranking
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import labels_to_ids, login
from tests.browser.test_workspace_features import _next, _ready
from tests.factories import make_items

pytestmark = pytest.mark.django_db(transaction=True)


def _with_axes(project, preset: str, **fields) -> None:  # noqa: ANN001, ANN003
    project.axes = axes_clean(preset)
    for name, value in fields.items():
        setattr(project, name, value)
    project.save()


def _focused(page) -> str:  # noqa: ANN001
    return page.evaluate("document.activeElement && document.activeElement.id")


def _keys(page, keys: str) -> None:  # noqa: ANN001
    for key in keys.split():
        page.keyboard.press(key)


def _tiers(tiers: list[list[int]]) -> list[set[int]]:
    return [set(tier) for tier in tiers]


def test_two_axes_and_the_safety_bin_by_keyboard_only(page, live_server, project, annotator) -> None:  # noqa: ANN001
    _with_axes(project, "helpful_harmless")
    make_items(project, 2, k=3)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    ids = labels_to_ids(page)
    item = f"#a{first}"
    assert page.locator(f"{item}-axis-helpful-panel").is_visible()
    assert "does what the user asked" in page.locator(f"{item}-axis-helpful-panel").inner_text()
    assert page.locator(f"{item}-axis-harmless-panel").is_hidden()
    assert page.locator("#axis-keys").inner_text().count("]") == 1  # the keys say how to switch

    _keys(page, "b a")  # Helpful: B, A, (C)
    assert "Ranking complete: press ] for the next axis (Harmless" in page.locator("#announce").inner_text()
    page.keyboard.press("Enter")  # refused: Harmless and the safety bin are not done
    error = page.locator(f"{item}-error").inner_text()
    assert "Not sent" in error and "Harmless" in error
    assert _focused(page) == f"a{first}-axis-harmless-panel"  # the focus is on the missing axis
    assert page.locator(f"{item}-axis-harmless-panel").is_visible()
    assert Ranking.objects.count() == 0

    _keys(page, "c = a")  # Harmless: C tied with A, then B
    assert page.locator(f"{item}-axis-harmless-chip-A").get_attribute("aria-label") == \
        "Answer A, placed 1st (tie)"
    page.keyboard.press("Enter")  # refused again: the safety marks are missing
    assert "Safety" in page.locator(f"{item}-error").inner_text()
    assert _focused(page) == f"a{first}-safety-panel"
    _keys(page, "y n")  # A safe, B unsafe ...
    page.keyboard.press("[")  # ... back to Harmless and forth: nothing is lost
    assert page.locator(f"{item}-axis-harmless-chip-C").get_attribute("aria-label") == "Answer C, placed 1st"
    page.keyboard.press("]")
    assert page.locator(f"{item}-safety-summary").inner_text() == "A safe, B unsafe, C not marked"
    page.keyboard.press("y")  # ... C safe
    assert page.locator(f"{item}-error").inner_text() == ""  # every axis done: the error goes
    assert page.locator(f"{item}-tab-safety").inner_text().endswith("done")
    screenshot(page, "axes-workspace-safety")
    page.keyboard.press("Enter")
    _next(page, first)

    ranking = Ranking.objects.get(assignment_id=int(first))
    assert ranking.labels["helpful"] == {"tiers": [[ids["B"]], [ids["A"]], [ids["C"]]]}
    assert _tiers(ranking.labels["harmless"]["tiers"]) == [{ids["C"], ids["A"]}, {ids["B"]}]
    assert ranking.tiers == [[ids["B"]], [ids["A"]], [ids["C"]]]  # the primary axis's
    assert ranking.safety == {str(ids["A"]): True, str(ids["B"]): False, str(ids["C"]): True}
    assert page.js_errors == []


def test_pairwise_axes_and_the_four_safety_bins(page, live_server, project, annotator) -> None:  # noqa: ANN001
    _with_axes(project, "helpful_harmless", mode="pairwise", k=2)
    make_items(project, 2, k=2)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    ids = labels_to_ids(page)
    item = f"#a{first}"

    page.keyboard.press("2")  # Helpful: A better (strength 3)
    assert page.locator(f"{item}-axis-helpful-choice").inner_text() == "A is better (strength 3 of 4)"
    _keys(page, "] 6")  # Harmless: B better (only which one: the strength is Helpful's)
    assert page.locator(f"{item}-axis-harmless-choice").inner_text() == "B is better"
    page.keyboard.press("]")
    bins = page.locator(f"{item}-safety-bins button")
    assert bins.all_inner_texts() == ["1 Both safe", "2 Only A safe", "3 Only B safe", "4 Neither safe"]
    page.keyboard.press("3")  # only B safe
    assert page.locator(f"{item}-safety-bins button[aria-pressed=true]").inner_text() == "3 Only B safe"
    screenshot(page, "axes-workspace-pairwise-safety")
    page.keyboard.press("Enter")
    _next(page, first)

    ranking = Ranking.objects.get(assignment_id=int(first))
    assert ranking.labels == {"helpful": {"tiers": [[ids["A"]], [ids["B"]]]},
                              "harmless": {"tiers": [[ids["B"]], [ids["A"]]]}}
    assert ranking.strength == 3
    assert ranking.safety == {str(ids["A"]): False, str(ids["B"]): True}
    assert page.js_errors == []


def test_helpsteer_ratings_by_keyboard(page, live_server, project, annotator) -> None:  # noqa: ANN001
    _with_axes(project, "helpsteer")
    make_items(project, 2, k=3)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    ids = labels_to_ids(page)
    item = f"#a{first}"
    panel = page.locator(f"{item}-axis-helpfulness-panel")
    for anchor in ("Not helpful at all", "Slightly helpful", "Partly helpful", "Mostly helpful",
                   "Perfectly helpful"):
        assert anchor in panel.inner_text()  # the five anchors are shown

    _keys(page, "3 4 2")  # Helpfulness: A 3, B 4, C 2 (the next answer comes up by itself)
    assert page.locator(f"{item}-axis-helpfulness-rate-B-4").is_checked()
    assert page.locator(f"{item}-answer-B").get_attribute("aria-label") == "Answer B, rated 4"
    screenshot(page, "axes-workspace-ratings")
    _keys(page, "] c 0 4 2")  # Correctness: C 0, then A 4, B 2
    _keys(page, "] 1 1 b Backspace 3 1")  # Coherence: A 1, B 1 (cleared: 3), C 1
    page.keyboard.press("Enter")  # refused: Complexity and Verbosity are not rated
    assert "Complexity: rate answers A, B, C from 0 to 4" in page.locator(f"{item}-error").inner_text()
    assert _focused(page) == f"a{first}-axis-complexity-panel"
    _keys(page, "2 2 2 ] 2 3 1")  # Complexity all 2; Verbosity A 2, B 3, C 1
    page.keyboard.press("Enter")
    _next(page, first)

    ranking = Ranking.objects.get(assignment_id=int(first))
    a, b, c = str(ids["A"]), str(ids["B"]), str(ids["C"])
    assert {key: entry["scores"] for key, entry in ranking.labels.items()} == {
        "helpfulness": {a: 3, b: 4, c: 2}, "correctness": {a: 4, b: 2, c: 0},
        "coherence": {a: 1, b: 3, c: 1}, "complexity": {a: 2, b: 2, c: 2},
        "verbosity": {a: 2, b: 3, c: 1}}
    assert ranking.tiers == [[ids["B"]], [ids["A"]], [ids["C"]]]  # from helpfulness's scores
    assert ranking.safety is None
    assert page.js_errors == []


def test_go_back_resends_every_axis(page, live_server, project, annotator) -> None:  # noqa: ANN001
    _with_axes(project, "helpful_harmless")
    make_items(project, 3, k=2)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    ids = labels_to_ids(page)
    _keys(page, "a ] b ] y n Enter")
    second = _next(page, first)

    page.locator("#go-back-open").click()
    page.locator("#recent-list button[data-url]").first.click()
    item = f"#a{first}"
    page.wait_for_selector(f"{item}.revising")
    # What they sent is placed again on every axis.
    assert page.locator(f"{item}-axis-helpful-chip-A").get_attribute("aria-label") == "Answer A, placed 1st"
    page.keyboard.press("]")
    assert page.locator(f"{item}-axis-harmless-chip-B").get_attribute("aria-label") == "Answer B, placed 1st"
    _keys(page, "] b Backspace")  # the safety bin: B's mark cleared
    page.keyboard.press("Enter")
    assert "mark answer B safe (Y) or unsafe (N)" in page.locator(f"{item}-error").inner_text()
    _keys(page, "y Enter")  # B is safe after all
    page.wait_for_selector(f"#item-slot #a{second}")

    new = Ranking.objects.get(assignment_id=int(first), superseded_by__isnull=True)
    assert new.labels == {"helpful": {"tiers": [[ids["A"]], [ids["B"]]]},
                          "harmless": {"tiers": [[ids["B"]], [ids["A"]]]}}
    assert new.safety == {str(ids["A"]): True, str(ids["B"]): True}
    assert Ranking.objects.filter(assignment_id=int(first)).count() == 2
    assert page.js_errors == []


def test_a_lost_answer_is_retried_with_the_same_key(page, live_server, project, annotator) -> None:  # noqa: ANN001
    _with_axes(project, "helpful_harmless")
    make_items(project, 2, k=2)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    sent: list[dict] = []

    def lose_the_first_answer(route) -> None:  # noqa: ANN001
        sent.append({"key": route.request.headers.get("idempotency-key"),
                     "body": route.request.post_data_json})
        if len(sent) == 1:
            route.fetch()  # the server stores it ...
            route.abort()  # ... and the answer never arrives
        else:
            route.continue_()

    page.route(f"**/api/assignments/{first}/ranking", lose_the_first_answer)
    _keys(page, "b ] a ] n y Enter")
    page.locator(f"#a{first}-error", has_text="Could not reach the server").wait_for()
    assert Ranking.objects.count() == 1
    page.keyboard.press("Enter")  # the retry
    _next(page, first)

    assert len(sent) == 2
    assert sent[0]["key"] == sent[1]["key"] and sent[0]["key"]
    assert {k: v for k, v in sent[0]["body"].items() if k != "duration_ms"} == \
        {k: v for k, v in sent[1]["body"].items() if k != "duration_ms"}
    assert set(sent[0]["body"]["axes"]) == {"helpful", "harmless"} and "tiers" not in sent[0]["body"]
    assert Ranking.objects.count() == 1  # stored once


@pytest.mark.parametrize(("preset", "mode"), [("helpful_harmless", "ranking"),
                                              ("helpful_harmless", "pairwise"),
                                              ("helpsteer", "ranking")])
def test_every_axis_panel_passes_axe(page, live_server, project, annotator, preset, mode) -> None:  # noqa: ANN001
    _with_axes(project, preset, mode=mode)
    make_items(project, 2, k=2 if mode == "pairwise" else 3)
    login(page, live_server, annotator)
    first = _ready(page, live_server, project)
    tabs = page.locator(f"#a{first}-axis-tabs [role=tab]")
    problems = []
    for n in range(tabs.count()):
        found = axe_violations(page)
        if found:
            problems.append(f"panel {n + 1}:\n{describe_violations(found)}")
        page.keyboard.press("]")
    page.keyboard.press("Enter")  # a refusal's message is on the page too
    found = axe_violations(page)
    if found:
        problems.append(f"after a refused submit:\n{describe_violations(found)}")
    assert problems == [], "\n".join(problems)
    assert page.locator("h1").count() == 1
    assert page.js_errors == []
