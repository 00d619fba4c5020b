"""The loop's admin forms work from the keyboard alone: Tab reaches each control in order,
Space ticks, Enter submits (members: add a user with a role; upload: skip the invalid rows
and import)."""

from __future__ import annotations

import json

import pytest

from labeling.models import ImportJob, Membership
from tests.browser.test_annotate import login
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def tab_to(page, element_id: str, limit: int = 80) -> None:  # noqa: ANN001
    """Press Tab until the element has focus (fails if the keyboard can't reach it)."""
    for _ in range(limit):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    pytest.fail(f"#{element_id} is not reachable with Tab")


def test_members_and_import_by_keyboard_only(page, live_server, project, project_admin, tmp_path) -> None:  # noqa: ANN001
    UserFactory(username="kim")
    login(page, live_server, project_admin)
    page.goto(f"{live_server.url}/console/projects/{project.pk}/members")
    tab_to(page, "id_add-username")
    page.keyboard.type("kim")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowDown")  # annotator -> reviewer
    page.keyboard.press("Tab")  # the Add member button
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert Membership.objects.get(project=project, user__username="kim").role == "reviewer"

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "One?"}) + "\n{broken\n")
    page.goto(f"{live_server.url}/console/projects/{project.pk}/upload")
    page.set_input_files("input[name=file]", str(path))  # the OS file dialog is outside the page
    tab_to(page, "id_file")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    tab_to(page, "skip_invalid")
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    job = ImportJob.objects.get(dry_run=False)
    assert job.skip_invalid and job.status == "done" and project.prompts.count() == 1
    assert page.js_errors == []
