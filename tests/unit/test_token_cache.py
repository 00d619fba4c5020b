"""The per-process token cache (accounts/tokens.py): a repeated check costs no query, and
a revoked token, a deactivated user or a changed password is refused on the very next
request of the process that made the change, never served from the cache."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts.tokens import ApiTokenAuthentication, _cache, token_create, token_revoke
from labeling.services.members import user_deactivate
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():  # noqa: ANN202
    _cache.clear()
    yield
    _cache.clear()


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _assert_refused(response) -> None:  # noqa: ANN001
    # DRF answers 403 here (the session authenticator comes first and has no header).
    assert response.status_code == 403
    assert response.json()["detail"] == "Invalid or expired token."


def test_a_second_check_reads_nothing_and_gives_a_fresh_user(annotator) -> None:  # noqa: ANN001
    _, key = token_create(user=annotator, name="t")
    auth = ApiTokenAuthentication()
    first_user, _ = auth.authenticate_credentials(key)
    with CaptureQueriesContext(connection) as second:
        user, token = auth.authenticate_credentials(key)
    assert len(second.captured_queries) == 0
    assert user == annotator and user is not first_user and token.user is user
    assert user.username == annotator.username and user.is_active


def test_revoked_token_is_refused_at_once(annotator, project) -> None:  # noqa: ANN001
    token, key = token_create(user=annotator, name="t")
    client = _client(key)
    first = client.get(f"/api/projects/{project.pk}/next")
    assert first.status_code in {200, 204}, first.content
    assert token_revoke(user=annotator, token_id=token.pk)
    _assert_refused(client.get(f"/api/projects/{project.pk}/next"))


def test_deactivated_user_is_refused_at_once(annotator, project) -> None:  # noqa: ANN001
    _, key = token_create(user=annotator, name="t")
    client = _client(key)
    first = client.get(f"/api/projects/{project.pk}/next")
    assert first.status_code in {200, 204}, first.content
    user_deactivate(user=annotator, actor=UserFactory(is_staff=True))
    _assert_refused(client.get(f"/api/projects/{project.pk}/next"))


def test_password_change_is_refused_at_once(annotator, project) -> None:  # noqa: ANN001
    _, key = token_create(user=annotator, name="t")
    client = _client(key)
    first = client.get(f"/api/projects/{project.pk}/next")
    assert first.status_code in {200, 204}, first.content
    annotator.set_password("a-new-password-0123")
    annotator.save()
    _assert_refused(client.get(f"/api/projects/{project.pk}/next"))


def test_a_check_that_raced_an_invalidation_is_not_stored(annotator) -> None:  # noqa: ANN001
    token, key = token_create(user=annotator, name="t")
    _cache.clear()
    generation = _cache.generation
    _cache.drop_user(annotator.pk)  # a deactivation lands while a check reads the database
    _cache.put(token.key_hash, token, generation)
    assert _cache.get(token.key_hash) is None


def test_off_when_the_setting_is_zero(annotator, settings) -> None:  # noqa: ANN001
    settings.API_TOKEN_CACHE_SECONDS = 0
    _, key = token_create(user=annotator, name="t")
    auth = ApiTokenAuthentication()
    auth.authenticate_credentials(key)
    with CaptureQueriesContext(connection) as second:
        auth.authenticate_credentials(key)
    assert len(second.captured_queries) == 1


def test_a_cached_token_still_expires(annotator, project, monkeypatch) -> None:  # noqa: ANN001
    from datetime import timedelta

    from django.utils import timezone

    token, key = token_create(user=annotator, name="t")
    client = _client(key)
    first = client.get(f"/api/projects/{project.pk}/next")
    assert first.status_code in {200, 204}, first.content
    later = token.expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    _assert_refused(client.get(f"/api/projects/{project.pk}/next"))
