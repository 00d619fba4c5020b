"""Writing a demonstration in a real browser: start from the answer to improve, edit,
preview the markdown, submit with Ctrl+Enter, and the next item appears."""

from __future__ import annotations

import pytest

from labeling.models import Demonstration, Item, ItemCandidate
from tests.browser.conftest import screenshot
from tests.browser.test_annotate import login
from tests.factories import CandidateFactory, PromptFactory

pytestmark = pytest.mark.django_db(transaction=True)
SOURCE = "Water boils at 100 degrees."


def demo_items(project, count: int) -> None:  # noqa: ANN001
    for n in range(count):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {n}?"}])
        item = Item.objects.create(project=project, prompt=prompt, kind="demonstration",
                                   required_rankings=1)
        ItemCandidate.objects.create(item=item, position=0,
                                     candidate=CandidateFactory(prompt=prompt, text=SOURCE))


def test_rewrite_preview_and_submit_by_keyboard(page, live_server, project, annotator) -> None:  # noqa: ANN001
    demo_items(project, 2)
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    first = page.locator("#item-slot .item").get_attribute("data-assignment")
    page.locator("#prefetched .item").wait_for(state="attached")
    submit = page.locator("#item-slot .demonstration-panel button.submit")
    assert submit.is_disabled()

    page.locator("#item-slot .start-from-source").click()
    editor = page.locator("#item-slot .demonstration-text")
    editor.press("End")
    editor.type(" At sea level, **that is**.")
    page.locator("#item-slot .tab-preview").click()
    page.locator("#item-slot .demonstration-preview strong").wait_for()
    assert page.locator("#item-slot .demonstration-preview strong").inner_text() == "that is"
    screenshot(page, "demonstration-preview")
    page.locator("#item-slot .tab-write").click()
    editor.press("Control+Enter")

    page.wait_for_selector(f"#item-slot .item:not([data-assignment='{first}'])")
    demonstration = Demonstration.objects.get(assignment_id=int(first))
    assert demonstration.candidate.text == SOURCE + " At sea level, **that is**."
    assert demonstration.edit_distance == len(" At sea level, **that is**.")
    assert demonstration.candidate.origin == "human"
    assert page.locator("#done-today").inner_text() == "1"

    page.locator("#item-slot .demonstration-text").fill("My own answer, from scratch.")
    page.locator("#item-slot .demonstration-panel button.submit").click()
    page.wait_for_selector("#nothing-left")
    last = Demonstration.objects.order_by("-id").first()
    assert (last.candidate.text, last.source_candidate_id, last.edit_distance) == (
        "My own answer, from scratch.", None, None)
    assert page.js_errors == []
