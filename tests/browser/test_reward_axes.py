"""The reward models page of a helpful + harmless project (issue #21): each axis's newest
reward model beside that axis's agreement ceiling, clean under axe, and a harmless-axis
model promoted from the keyboard alone (Tab to its button, Enter)."""

from __future__ import annotations

import pytest

from labeling.models import Membership, Role
from labeling.services.projects import project_update
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import login
from tests.unit.test_axes_training import reward_version, snapshot_row
from training.models import ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


def test_reward_models_by_axis_clean_and_promotable_by_keyboard(page, live_server, project,  # noqa: ANN001
                                                                 project_admin) -> None:
    project = project_update(project=project, actor=None, axes="helpful_harmless")
    Membership.objects.filter(user=project_admin, project=project).update(role=Role.ADMIN)
    reward_version(project, "helpful", 0.81, snapshot_row(project))
    harmless = reward_version(project, "harmless", 0.64, snapshot_row(project, "harmless"))
    login(page, live_server, project_admin)

    page.goto(f"{live_server.url}/console/projects/{project.pk}/reward-models")

    rows = page.locator("#reward-axes tbody tr")
    assert rows.count() == 2
    assert "0.640" in page.locator("#reward-axes tr[data-axis='harmless']").inner_text()
    assert page.locator("#reward-models td.axis").all_inner_texts() == ["Harmless", "Helpful"]
    screenshot(page, "reward-models-by-axis")
    violations = axe_violations(page)
    assert violations == [], describe_violations(violations)

    label = f"Promote {harmless}"
    for _ in range(80):
        if page.evaluate("document.activeElement && document.activeElement.getAttribute('aria-label')") == label:
            break
        page.keyboard.press("Tab")
    else:
        pytest.fail(f"{label} is not reachable with Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")

    harmless.refresh_from_db()
    assert harmless.is_current
    assert ModelVersion.objects.filter(is_current=True).count() == 1
