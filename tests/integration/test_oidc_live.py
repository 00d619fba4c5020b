"""Single sign-on on a live server: gunicorn configured from the environment as an
operator would (OIDC_ISSUER, client id and secret, a group -> role mapping,
LOCAL_PASSWORDS=0) against a local OpenID Connect provider (tests/oidc_stub.py). A browser
(httpx with cookies) signs in through the authorization code flow with PKCE, makes an API
token on /accounts/tokens/, and the Python client works with it; the password paths are
refused."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.test_api_fuzz import Server
from tests.oidc_stub import CLIENT_ID, CLIENT_SECRET, OidcStub

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcStub]:
    stub = OidcStub()
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def sso_server(django_db_setup: None, django_db_blocker: Any, idp: OidcStub,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.integration import conftest as integration

    with django_db_blocker.unblock():
        database_url = integration.test_database_url()
    server = Server(database_url=database_url, redis_url=os.environ["REDIS_URL"],
                    folder=tmp_path_factory.mktemp("sso-server"), extra_env={
                        "OIDC_ISSUER": idp.issuer, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET,
                        "OIDC_GROUPS_CLAIM": "groups", "LOCAL_PASSWORDS": "0",
                        "OIDC_GROUP_ROLES": json.dumps({"ml-team": {"sso-demo": "admin"}})})
    yield server
    server.stop()


def test_a_person_signs_in_through_the_idp_and_uses_the_api_with_a_token(
        sso_server: Server, idp: OidcStub, transactional_db: None) -> None:
    from ordinal_client import Ordinal, PermissionDenied

    from labeling.models import Membership, Project
    from tests.factories import PASSWORD, UserFactory

    Project.objects.create(name="SSO demo", slug="sso-demo")
    UserFactory(username="local-user")
    idp.user = {"sub": "0f3a", "preferred_username": "grace", "email": "grace@example.com", "groups": ["ml-team"]}
    browser = httpx.Client(base_url=sso_server.base_url, follow_redirects=False, timeout=30)

    start = browser.get("/accounts/oidc/authenticate/")
    assert start.status_code == 302 and start.headers["location"].startswith(f"{idp.issuer}/authorize?")
    assert "code_challenge_method=S256" in start.headers["location"]
    back = httpx.get(start.headers["location"], follow_redirects=False)
    finished = browser.get(back.headers["location"])
    assert finished.status_code == 302, sso_server.errors()[-3000:]
    assert idp.token_requests[-1]["code_verifier"]

    page = browser.get("/accounts/tokens/")
    assert page.status_code == 200 and "grace" in page.text
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    made = browser.post("/accounts/tokens/", data={"name": "notebook", "csrfmiddlewaretoken": csrf},
                        headers={"Referer": f"{sso_server.base_url}/accounts/tokens/"})
    assert made.status_code == 302
    key = re.search(r'<code id="new-token-key">([^<]+)</code>', browser.get("/accounts/tokens/").text).group(1)

    ordinal = Ordinal(sso_server.base_url, token=key)
    assert [p.slug for p in ordinal.projects()] == ["sso-demo"]  # admin there through the ml-team group
    assert Membership.objects.get(user__username="grace").role == "admin"

    with pytest.raises(PermissionDenied) as refused:
        Ordinal.sign_in(sso_server.base_url, "local-user", PASSWORD)
    assert refused.value.code == "local_passwords_off"
    login = httpx.Client(base_url=sso_server.base_url, follow_redirects=False)
    form = login.get("/accounts/login/")
    assert 'name="password"' not in form.text and "/accounts/oidc/authenticate/" in form.text
