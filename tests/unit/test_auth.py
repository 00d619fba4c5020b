"""Sign-in: lockout after repeated failures, session rotated at login, CSRF enforced on
session writes, no open sign-up."""

from __future__ import annotations

from django.test import Client
from django.urls import get_resolver

from tests.factories import PASSWORD


def sign_in(client: Client, username: str, password: str):  # noqa: ANN201
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_lockout_after_repeated_failures(annotator, settings) -> None:  # noqa: ANN001
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, annotator.username, "wrong").status_code == 200
    assert sign_in(client, annotator.username, "wrong").status_code == 429  # the limit-th

    locked = sign_in(client, annotator.username, PASSWORD)  # even the right password

    assert locked.status_code == 429 and b"Too many failed sign-ins" in locked.content
    assert "_auth_user_id" not in client.session


def test_token_endpoint_is_locked_out_too(api, annotator, settings) -> None:  # noqa: ANN001
    for _ in range(settings.AXES_FAILURE_LIMIT):
        api.post("/api/auth/token", {"username": annotator.username, "password": "nope"})

    response = api.post("/api/auth/token", {"username": annotator.username, "password": PASSWORD})

    assert response.status_code in {400, 403, 429} and "token" not in response.json()


def test_session_is_rotated_at_login(annotator) -> None:  # noqa: ANN001
    client = Client()
    client.get("/accounts/login/")
    client.session.save()
    before = client.session.session_key

    response = sign_in(client, annotator.username, PASSWORD)

    assert response.status_code == 302
    assert client.session.session_key != before


def test_csrf_is_enforced_on_session_writes(annotator, project) -> None:  # noqa: ANN001
    client = Client(enforce_csrf_checks=True)
    client.force_login(annotator)

    api_write = client.post(f"/api/projects/{project.pk}/guideline/acknowledge")
    form_write = client.post("/accounts/logout/")

    assert api_write.status_code == 403 and "CSRF" in api_write.json()["detail"]
    assert form_write.status_code == 403


def test_there_is_no_sign_up_route() -> None:
    routes = [str(p.pattern) for p in get_resolver().url_patterns]

    assert not any("signup" in r or "register" in r for r in routes)
    assert Client().get("/accounts/signup/").status_code == 404
