"""Production hardening: CSP enforced, security headers, metrics, readiness, JSON logs,
a schema without warnings."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

from django.core.management import call_command
from django.test import Client

from config.observability import JsonFormatter, RequestIdFilter, request_id_var

ROOT = Path(__file__).resolve().parents[2]


def test_csp_is_enforced_without_unsafe_inline(client: Client, db: None) -> None:
    response = client.get("/accounts/login/")

    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "Content-Security-Policy-Report-Only" not in response
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_no_template_has_an_inline_script() -> None:
    inline = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)
    offenders = [str(p) for p in (ROOT / "templates").rglob("*.html")
                 if inline.search(p.read_text())]
    assert offenders == []


def test_api_docs_work_under_the_csp(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/")
    script = re.search(r'<script src="([^"]*\?script=)"', page.content.decode())

    assert page.status_code == 200 and script
    assert admin_client.get(script.group(1)).status_code == 200


def test_schema_has_no_warnings(tmp_path: Path, db: None) -> None:
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))

    assert (tmp_path / "s.yml").stat().st_size > 1000


def test_metrics_expose_the_listed_series(client: Client, db: None, settings) -> None:  # noqa: ANN001
    settings.METRICS_TOKEN = "s3cret"
    client.get("/healthz")

    body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").content.decode()

    for series in ("django_http_requests_latency_seconds_by_view_method", "ordinal_queue_depth",
                   "ordinal_runs", "ordinal_run_duration_seconds_avg", "ordinal_items",
                   "ordinal_active_annotators"):
        assert series in body, series


def test_metrics_token(client: Client, db: None, settings) -> None:  # noqa: ANN001
    settings.METRICS_TOKEN = "s3cret"

    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_readyz_reports_migrations(client: Client, db: None) -> None:
    assert client.get("/readyz").json()["checks"]["migrations"] == "ok"


def test_request_id_is_returned_and_logged(client: Client, db: None) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    token = request_id_var.set("abc-123")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)

    assert response["X-Request-ID"] == "abc-123"
    assert line["message"] == "hello world" and line["request_id"] == "abc-123"


def test_check_deploy_passes_with_production_env() -> None:
    env = {"SECRET_KEY": "k" * 20 + "-production-like-secret-0123456789", "ALLOWED_HOSTS":
           "ordinal.example.com", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level",
                             "WARNING"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
