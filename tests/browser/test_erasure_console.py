"""Erasure in the console, by keyboard only: a project admin finds a prompt, reads what
erasing it removes (with counts) and confirms by typing its id; staff erase an account,
choosing to remove its free text. Every page passes axe's serious checks."""

from __future__ import annotations

import re

import pytest

from erasure.models import ErasureRecord
from erasure.services.users import user_pseudonym
from labeling.models import AuditEvent, Prompt, Ranking
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import login
from tests.factories import UserFactory, make_items

pytestmark = pytest.mark.django_db(transaction=True)


def tab_to(page, selector: str, limit: int = 80) -> None:  # noqa: ANN001
    """Press Tab until `selector` has the focus (keyboard only, as a person would)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def assert_accessible(page, name: str) -> None:  # noqa: ANN001
    screenshot(page, name)
    violations = axe_violations(page)
    assert violations == [], describe_violations(violations)


def test_an_admin_erases_a_prompt_after_reading_what_goes(page, live_server, project, project_admin) -> None:  # noqa: ANN001
    make_items(project, 2, k=3)
    prompt = Prompt.objects.filter(project=project).first()
    login(page, live_server, project_admin)

    page.goto(f"{live_server.url}/console/projects/{project.pk}/erasure")
    assert_accessible(page, "console-erasure")
    tab_to(page, "input[name=prompt]")
    page.keyboard.type(str(prompt.pk))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/console/prompts/{prompt.pk}/erase$"))
    assert page.locator("caption", has_text="What will be removed").count() == 1
    assert page.locator("tr", has_text="Candidates").locator("td").inner_text() == "3"
    assert_accessible(page, "console-erase-prompt")
    tab_to(page, "input[name=confirm]")
    page.keyboard.type(str(prompt.pk))
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(rf".*/console/projects/{project.pk}/erasure$"))
    assert f"Prompt {prompt.pk} is erased" in page.locator(".messages").inner_text()
    assert not Prompt.objects.filter(pk=prompt.pk).exists()
    assert AuditEvent.objects.filter(action="prompt.erase", actor=project_admin).exists()
    assert page.js_errors == []


def test_staff_erase_an_account_and_remove_its_text(page, live_server, project, annotator) -> None:  # noqa: ANN001
    staff = UserFactory(username="staffer", is_staff=True)
    login(page, live_server, staff)

    page.goto(f"{live_server.url}/console/accounts/erasure")
    assert_accessible(page, "console-erasure-accounts")
    tab_to(page, "input[name=username]")
    page.keyboard.type(annotator.username)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf".*/console/accounts/erasure\?user={annotator.pk}$"))
    assert page.locator("tr", has_text="Rankings kept").locator("td").inner_text() == str(
        Ranking.objects.filter(annotator=annotator).count())
    assert_accessible(page, "console-erase-account")
    tab_to(page, "input[name=text][value=keep]")  # a radio group: Tab enters it, arrows choose
    page.keyboard.press("ArrowDown")
    assert page.is_checked("input[name=text][value=remove]")
    tab_to(page, "input[name=confirm]")
    page.keyboard.type(annotator.username)
    page.keyboard.press("Enter")

    page.wait_for_url(re.compile(r".*/console/accounts/erasure$"))
    annotator.refresh_from_db()
    assert annotator.username == user_pseudonym(annotator.pk) and not annotator.is_active
    assert ErasureRecord.objects.get().options == {"remove_text": True}
    assert f"it is now {annotator.username}" in page.locator(".messages").inner_text()
    assert page.js_errors == []
