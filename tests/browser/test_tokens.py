"""The API tokens page in a real browser: sign in, make a token (its key shown once), use
it from a program, revoke it (issue #15, item 7)."""

from __future__ import annotations

import pytest

from accounts.tokens import token_create
from tests.browser.conftest import screenshot
from tests.browser.test_annotate import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_user_makes_uses_and_revokes_a_token(page, live_server, annotator, outsider) -> None:  # noqa: ANN001
    token_create(user=outsider, name="outsider-laptop")
    page.goto(f"{live_server.url}/accounts/tokens/")
    assert "/accounts/login/" in page.url  # anonymous: the sign-in page first
    login(page, live_server, annotator)

    page.click("text=API tokens")
    page.fill("input[name=name]", "export-script")
    page.click("text=Create token")
    key = page.locator("#new-token-key").inner_text().strip()
    screenshot(page, "account-tokens")
    api = page.context.request  # a program: no cookies of the page, only the key
    used = api.get(f"{live_server.url}/api/projects/", headers={"Authorization": f"Token {key}", "Cookie": ""})

    assert len(key) >= 40 and used.status == 200
    assert page.locator("#tokens tbody tr").count() == 1
    assert "outsider-laptop" not in page.content()
    page.reload()
    assert key not in page.content()  # shown once
    assert page.locator("#tokens tbody tr").count() == 1  # and the reload made no other

    page.click("#tokens button:text('Revoke')")
    page.wait_for_url(f"{live_server.url}/accounts/tokens/")
    after = api.get(f"{live_server.url}/api/projects/", headers={"Authorization": f"Token {key}", "Cookie": ""})

    assert "You have no API tokens." in page.content()
    assert after.status == 403
    assert not page.js_errors
