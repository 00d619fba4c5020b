"""Single sign-on against a local OpenID Connect provider (tests/oidc_stub.py): the code
flow with PKCE, accounts matched on (issuer, subject), the username rule, group -> role
mapping, and LOCAL_PASSWORDS=0."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import OidcIdentity
from accounts.usernames import validate_username
from labeling.models import AuditEvent, Membership
from tests.factories import PASSWORD, UserFactory
from tests.oidc_stub import CLIENT_ID, CLIENT_SECRET, OidcStub

BACKENDS = ["accounts.backends.LockoutBackend", "accounts.backends.PasswordBackend", "accounts.oidc.OidcBackend"]


@pytest.fixture
def stub(settings) -> Iterator[OidcStub]:  # noqa: ANN001 - pytest-django
    stub = OidcStub()
    settings.OIDC_ISSUER = stub.issuer
    settings.OIDC_CLIENT_ID = settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_GROUP_ROLES = {"ml": {"alpha": "admin"}, "labelers": {"alpha": "annotator", "beta": "annotator"}}
    yield stub
    stub.close()


def sso_sign_in(client: Client) -> httpx.Response:
    """Browser steps: start at Ordinal, the IdP sends the browser back with a code."""
    start = client.get("/accounts/oidc/authenticate/")
    assert start.status_code == 302, start.content
    authorize = httpx.get(start["Location"], follow_redirects=False)
    assert authorize.status_code == 302, authorize.text
    back = urlsplit(authorize.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def signed_in_as(client: Client) -> str | None:
    response = client.get("/accounts/tokens/")
    return response.context["user"].username if response.status_code == 200 else None


def test_the_first_sign_in_makes_an_account_through_the_code_flow_with_pkce(stub: OidcStub, db: None) -> None:
    client = Client()

    start = client.get("/accounts/oidc/authenticate/")
    query = parse_qs(urlsplit(start["Location"]).query)
    assert start["Location"].startswith(f"{stub.issuer}/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert "nonce" in query and "state" in query
    finished = sso_sign_in(client)

    assert finished.status_code == 302 and "login" not in finished["Location"]
    assert signed_in_as(client) == "ada"
    assert len(stub.token_requests[-1]["code_verifier"]) >= 43
    user = get_user_model().objects.get(username="ada")
    assert not user.has_usable_password() and user.email == "ada@example.com"
    assert OidcIdentity.objects.get(user=user).subject == "u-1"
    assert AuditEvent.objects.filter(action="user.create_sso", actor=user).exists()


def test_the_same_subject_signs_in_to_the_same_account(stub: OidcStub, db: None) -> None:
    sso_sign_in(Client())
    sso_sign_in(Client())

    assert get_user_model().objects.count() == 1 and OidcIdentity.objects.count() == 1


def test_an_idp_account_never_takes_over_a_local_account_with_its_name_or_email(stub: OidcStub, db: None) -> None:
    local = UserFactory(username="ada", email="ada@example.com")
    client = Client()

    sso_sign_in(client)

    assert signed_in_as(client) == "ada-2"
    assert not OidcIdentity.objects.filter(user=local).exists()


@pytest.mark.parametrize("claimed, expected", [("Ada Lovelace", "Ada.Lovelace"), ("a\u200bd\u202ea", "ada"),
                                               ("ｆｕｌｌ", "full"), ("", "ada@example.com"), ("<>", "sso-user")])
def test_new_account_names_pass_the_one_username_rule(stub: OidcStub, db: None, claimed: str, expected: str) -> None:
    stub.user = {**stub.user, "preferred_username": claimed, "email": "ada@example.com" if claimed == "" else ""}
    client = Client()

    sso_sign_in(client)

    name = signed_in_as(client)
    assert name == expected
    validate_username(name)


def test_groups_map_to_project_roles_at_every_sign_in(stub: OidcStub, project, other_project) -> None:  # noqa: ANN001
    stub.user = {**stub.user, "groups": ["ml"]}
    sso_sign_in(Client())
    user = get_user_model().objects.get(username="ada")
    roles = lambda: dict(Membership.objects.filter(user=user).values_list("project__slug", "role"))  # noqa: E731

    assert roles() == {"alpha": "admin"}
    stub.user = {**stub.user, "groups": ["labelers"]}
    sso_sign_in(Client())
    assert roles() == {"alpha": "annotator", "beta": "annotator"}
    stub.user = {**stub.user, "groups": ["labelers", "ml"]}
    sso_sign_in(Client())
    assert roles() == {"alpha": "admin", "beta": "annotator"}
    stub.user = {**stub.user, "groups": []}
    sso_sign_in(Client())
    assert roles() == {}
    assert AuditEvent.objects.filter(action="membership.sso", project=project).count() == 4


def test_an_id_token_from_another_issuer_is_refused(stub: OidcStub, db: None) -> None:
    stub.forge_issuer = "https://evil.example.com"
    client = Client(raise_request_exception=False)

    response = sso_sign_in(client)

    assert response.status_code == 400
    assert signed_in_as(client) is None and not get_user_model().objects.exists()


def test_a_deactivated_account_cannot_sign_in(stub: OidcStub, db: None) -> None:
    sso_sign_in(Client())
    get_user_model().objects.filter(username="ada").update(is_active=False)
    client = Client()

    response = sso_sign_in(client)

    assert "login" in response["Location"] and signed_in_as(client) is None


def test_without_an_issuer_the_sso_routes_answer_404(client: Client, db: None) -> None:
    assert client.get("/accounts/oidc/authenticate/").status_code == 404
    assert client.get("/accounts/oidc/callback/?code=x&state=y").status_code == 404
    assert b"single sign-on" not in client.get("/accounts/login/").content


def test_the_login_page_offers_sso(stub: OidcStub, client: Client) -> None:
    page = client.get("/accounts/login/").content.decode()

    assert "/accounts/oidc/authenticate/" in page and 'name="password"' in page


# --------------------------------------------------------------------------- passwords off


@pytest.fixture
def passwords_off(stub: OidcStub, settings) -> OidcStub:  # noqa: ANN001
    settings.LOCAL_PASSWORDS = False
    return stub


def test_with_passwords_off_the_login_form_is_refused(passwords_off: OidcStub, annotator) -> None:  # noqa: ANN001
    client = Client()

    page = client.get("/accounts/login/").content.decode()
    posted = client.post("/accounts/login/", {"username": "ann1", "password": PASSWORD})

    assert 'name="password"' not in page and "/accounts/oidc/authenticate/" in page
    assert posted.status_code == 403 and signed_in_as(client) is None


def test_with_passwords_off_the_token_sign_in_is_refused_and_sso_users_make_tokens(
        passwords_off: OidcStub, annotator) -> None:  # noqa: ANN001
    refused = APIClient().post("/api/auth/token", {"username": "ann1", "password": PASSWORD}, format="json")
    assert refused.status_code == 403 and refused.json()["code"] == "local_passwords_off"

    browser = Client()
    sso_sign_in(browser)
    browser.post("/accounts/tokens/", {"name": "notebook"})
    key = browser.get("/accounts/tokens/").context["key"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")

    assert api.get("/api/auth/tokens").status_code == 200


def test_with_passwords_off_no_password_account_can_be_made(passwords_off: OidcStub, staff) -> None:  # noqa: ANN001
    api = APIClient()
    api.force_authenticate(staff)

    response = api.post("/api/users/", {"username": "newbie", "password": "a-Long-test-passw0rd"}, format="json")

    assert response.status_code == 400 and "LOCAL_PASSWORDS" in response.json()["detail"]
