"""A project admin adds an AI judge and runs it from the console with the keyboard only;
the page then shows the run and the judge's figures, and axe finds nothing serious."""

from __future__ import annotations

import pytest

from judges.models import Judge, JudgeRanking
from labeling.models import AuditEvent, Item
from labeling.services.items import items_create_for_prompt
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import login
from tests.factories import CandidateFactory, PromptFactory
from tests.judge_stub import judge_stub

pytestmark = pytest.mark.django_db(transaction=True)


def tab_to(page, selector: str, limit: int = 80) -> None:  # noqa: ANN001
    """Press Tab until `selector` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"document.activeElement && document.activeElement.matches({selector!r})"):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_an_admin_adds_and_runs_a_judge_with_the_keyboard(page, live_server, project, project_admin,  # noqa: ANN001
                                                          settings) -> None:
    for _ in range(3):
        prompt = PromptFactory(project=project)
        ids = [CandidateFactory(prompt=prompt, text=text * (i + 1)).pk for i, text in enumerate(["a", "bb"])]
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    with judge_stub() as stub:
        settings.GENERATION_ENDPOINTS = {"stub": {"base_url": stub.url, "allow_private": True}}
        login(page, live_server, project_admin)
        page.goto(f"{live_server.url}/console/projects/{project.pk}/judges")

        tab_to(page, "input[name=name]")
        page.keyboard.type("house-judge")
        tab_to(page, "input[name=endpoint]")
        page.keyboard.type("stub")
        tab_to(page, "input[name=model]")
        page.keyboard.type("judge-model")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert Judge.objects.filter(name="house-judge", kind="endpoint").exists(), page.inner_text("main")

        tab_to(page, "button.run-judge")
        assert "Judge the items house-judge" in page.evaluate("document.activeElement.textContent")
        with page.expect_navigation():
            page.keyboard.press("Enter")

    assert JudgeRanking.objects.filter(status="ranked").count() == Item.objects.count() == 3
    page.goto(f"{live_server.url}/console/projects/{project.pk}/judges")
    assert "3/3" in page.locator("section.card").first.inner_text()
    screenshot(page, "console-judges")
    violations = axe_violations(page)
    assert violations == [], describe_violations(violations)
    assert AuditEvent.objects.filter(action="judge.create", actor=project_admin).exists()
    assert AuditEvent.objects.filter(action="judge.run_start", actor=project_admin).exists()
    assert page.js_errors == []
