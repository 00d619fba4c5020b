"""A project admin registers a webhook in the console: the secret is shown once, the page
passes axe's serious checks (screenshot under test-artifacts/)."""

from __future__ import annotations

import re

import pytest

from labeling.models import AuditEvent
from tests.browser.conftest import axe_violations, describe_violations, screenshot
from tests.browser.test_annotate import login
from webhooks.models import Webhook

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_admin_registers_a_webhook_and_sees_its_secret_once(page, live_server, project, project_admin,  # noqa: ANN001
                                                               settings) -> None:
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]
    login(page, live_server, project_admin)

    page.goto(f"{live_server.url}/console/projects/{project.pk}/webhooks")
    page.fill("input[name=url]", "https://hooks.example.com/ordinal")
    page.check("input[name=events][value='snapshot.ready']")
    page.check("input[name=events][value='model.promoted']")
    page.click("button:has-text('Add webhook')")

    page.wait_for_url(re.compile(r".*/console/webhooks/\d+$"))
    hook = Webhook.objects.get()
    assert page.locator(".new-secret").inner_text() == hook.secret
    screenshot(page, "console-webhook")
    violations = axe_violations(page)
    assert violations == [], describe_violations(violations)
    page.reload()
    assert page.locator(".new-secret").count() == 0
    assert hook.events == ["snapshot.ready", "model.promoted"]
    assert AuditEvent.objects.filter(action="webhook.create", actor=project_admin).exists()
    assert page.js_errors == []
