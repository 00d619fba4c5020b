"""Datasets per axis in the console (issue #21), by keyboard alone and clean under axe:
the upload page sends an HH-RLHF file to the harmless axis, and the runs page builds a
snapshot of the harmless axis."""

from __future__ import annotations

import json

import pytest

from labeling.models import ImportJob
from labeling.services.projects import project_update
from tests.browser.conftest import axe_violations, describe_violations
from tests.browser.test_annotate import login
from tests.browser.test_console_keyboard import tab_to
from training.models import DatasetSnapshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_import_and_snapshot_an_axis_by_keyboard_only(page, live_server, project, project_admin,  # noqa: ANN001
                                                      tmp_path) -> None:  # noqa: ANN001
    project = project_update(project=project, actor=None, axes="helpful_harmless")
    path = tmp_path / "harmless.jsonl"
    path.write_text(json.dumps({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.",
                                "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}) + "\n")
    login(page, live_server, project_admin)

    page.goto(f"{live_server.url}/console/projects/{project.pk}/upload")
    assert axe_violations(page) == [], describe_violations(axe_violations(page))
    page.set_input_files("input[name=file]", str(path))  # the OS file dialog is outside the page
    tab_to(page, "id_axis")
    page.keyboard.press("ArrowDown")  # the primary axis (helpful) -> harmless
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    dry_run = ImportJob.objects.get()
    assert dry_run.dry_run and dry_run.axis == "harmless"

    page.goto(f"{live_server.url}/console/projects/{project.pk}/runs")
    assert axe_violations(page) == [], describe_violations(axe_violations(page))
    tab_to(page, "id_snapshot_axis")
    for _ in range(2):  # primary (as before axes) -> helpful -> harmless
        page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.value") == "harmless"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Build snapshot"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert DatasetSnapshot.objects.get().filters["axis"] == "harmless"
    assert page.js_errors == []
