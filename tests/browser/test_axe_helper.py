"""The accessibility check itself: axe-core runs on our pages despite the CSP, and it
does report a serious violation where there is one (so a clean result means something)."""

from __future__ import annotations

from tests.browser.conftest import axe_violations, describe_violations


def test_axe_reports_a_critical_violation_where_there_is_one(page) -> None:  # noqa: ANN001
    page.set_content("<html lang='en'><head><title>t</title></head><body><main>"
                     "<img src='data:,'><button></button></main></body></html>")

    found = {v["id"] for v in axe_violations(page)}

    assert {"image-alt", "button-name"} <= found, found


def test_axe_runs_under_the_apps_content_security_policy(page, live_server) -> None:  # noqa: ANN001
    page.goto(f"{live_server.url}/accounts/login/")

    violations = axe_violations(page, impacts=("minor", "moderate", "serious", "critical"))

    assert page.evaluate("typeof axe.run") == "function"  # loaded despite script-src 'self'
    assert violations == [], describe_violations(violations)
