"""The OpenAPI schema is a product: it must validate and the docs must work offline."""

from __future__ import annotations

from django.test import Client
from openapi_spec_validator import validate


def test_schema_is_valid_openapi(client: Client, db: None) -> None:
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert "/api/projects/{project_id}/imports" in document["paths"]


def test_swagger_ui_uses_vendored_assets(admin_client: Client) -> None:
    response = admin_client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
