"""The adjudication flow in a real browser, with screenshots of the dashboard and the
adjudication view (kept under test-artifacts/, not committed)."""

from __future__ import annotations

import pytest

from labeling.models import AuditEvent, Item
from labeling.services.quality import quality_refresh
from tests.browser.conftest import screenshot
from tests.browser.test_annotate import login
from tests.unit.test_console_review import disputed_item  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def test_reviewer_adjudicates_a_dispute_by_keyboard(page, live_server, project, reviewer,  # noqa: ANN001
                                                    disputed_item) -> None:  # noqa: F811
    quality_refresh(project=project)
    login(page, live_server, reviewer)
    page.goto(f"{live_server.url}/console/projects/{project.pk}/")
    assert page.locator("svg.chart").count() == 2
    screenshot(page, "console-dashboard")

    page.goto(f"{live_server.url}/console/projects/{project.pk}/disputes")
    page.click(f"a[href='/console/items/{disputed_item.pk}']")
    # answer, model, three annotators, consensus, reward model score
    assert page.locator("table.adjudication th").count() == 2 + 3 + 1 + 1
    screenshot(page, "console-adjudication")
    labels = page.locator("#final-board .chip").evaluate_all("els => els.map(e => e.dataset.label)")
    ids = page.locator("#final-board .chip").evaluate_all("els => els.map(e => +e.dataset.id)")
    by_label = dict(zip(labels, ids, strict=True))

    page.keyboard.press("c")  # typing a letter puts that answer first
    page.keyboard.press("=")
    page.keyboard.press("a")
    page.keyboard.press("Enter")

    page.wait_for_url(f"{live_server.url}/console/projects/{project.pk}/disputes")
    item = Item.objects.get(pk=disputed_item.pk)
    assert item.status == "accepted" and item.decided_by == reviewer
    assert set(item.consensus[0]) == {by_label["C"], by_label["A"]}
    assert len(item.consensus) == 2
    assert AuditEvent.objects.filter(action="item.set_ranking", actor=reviewer).count() == 1
    page.goto(f"{live_server.url}/console/audit")
    assert "item.set_ranking" in page.content()
