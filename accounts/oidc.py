"""Single sign-on with OpenID Connect, on mozilla-django-oidc: the authorization code flow
with PKCE (S256), state and nonce, the ID token's signature checked against the issuer's
keys (JWKS).

Configured from the environment (config/settings.py): OIDC_ISSUER, whose discovery
document (/.well-known/openid-configuration, fetched when someone signs in and cached
for an hour) gives the endpoints; the client id and secret; the scopes. On top of the
library's checks the ID token's issuer, audience and expiry are verified, and the
userinfo answer must be about the same subject.

An account is found by its (issuer, subject) pair, never by e-mail: an IdP account whose
address matches a local account's does not take that account over. A new one is named
from OIDC_USERNAME_CLAIM through the one username rule (accounts/usernames.py), with a
number added when the name is taken; it has no usable password. With OIDC_GROUPS_CLAIM
and OIDC_GROUP_ROLES set, each sign-in sets the user's role in every project the mapping
names to the highest role their groups grant there, and removes it when none does
(audited as membership.sso); projects the mapping does not name are left alone.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts.models import OidcIdentity
from accounts.usernames import MAX_LENGTH, normalize_username

logger = logging.getLogger(__name__)
DISCOVERY_TTL = 3600
CLOCK_SKEW = 60
ENDPOINT_KEYS = {"OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
                 "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
                 "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
                 "OIDC_OP_JWKS_ENDPOINT": "jwks_uri"}


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def discovery() -> dict[str, Any]:
    """The issuer's discovery document (cached): its endpoints. Only the operator's
    OIDC_ISSUER is ever fetched; the document must name that same issuer."""
    key = f"oidc-discovery:{settings.OIDC_ISSUER}"
    document = cache.get(key)
    if document is None:
        response = requests.get(f"{settings.OIDC_ISSUER}/.well-known/openid-configuration",
                                timeout=settings.OIDC_TIMEOUT, allow_redirects=False)
        response.raise_for_status()
        document = response.json()
        if document.get("issuer", "").rstrip("/") != settings.OIDC_ISSUER:
            raise SuspiciousOperation("the discovery document names another issuer")
        missing = [name for name in ENDPOINT_KEYS.values() if not document.get(name)]
        if missing:
            raise SuspiciousOperation(f"the discovery document lacks {', '.join(missing)}")
        cache.set(key, document, DISCOVERY_TTL)
    return document


def oidc_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings lookup, with the endpoints from discovery."""
    if attr in ENDPOINT_KEYS:
        return discovery()[ENDPOINT_KEYS[attr]]
    return getattr(settings, attr, *default) if default else getattr(settings, attr)


class OidcBackend(OIDCAuthenticationBackend):
    """The SSO backend. Nothing is fetched until someone signs in: Django builds backends
    for every session lookup too, and an IdP that is down must not break those."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        if request is None or not sso_enabled() or "code" not in request.GET:
            return None
        for attr in ENDPOINT_KEYS:
            if attr != "OIDC_OP_AUTHORIZATION_ENDPOINT":
                setattr(self, attr, oidc_setting(attr))
        self.OIDC_RP_CLIENT_ID, self.OIDC_RP_CLIENT_SECRET = settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO, self.OIDC_RP_IDP_SIGN_KEY = settings.OIDC_RP_SIGN_ALGO, None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """The library checks the signature and the nonce; the issuer, the audience and
        the expiry are checked here."""
        payload = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        now = time.time()
        if str(payload.get("iss", "")).rstrip("/") != settings.OIDC_ISSUER:
            raise SuspiciousOperation("the ID token comes from another issuer")
        if settings.OIDC_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the ID token is for another client")
        if not isinstance(payload.get("exp"), int | float) or payload["exp"] < now - CLOCK_SKEW:
            raise SuspiciousOperation("the ID token has expired")
        if not payload.get("sub"):
            raise SuspiciousOperation("the ID token names no subject")
        return payload

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]
                           ) -> AbstractBaseUser | None:
        claims = self.get_userinfo(access_token, id_token, payload)
        if claims.get("sub") != payload["sub"]:
            raise SuspiciousOperation("userinfo is about another subject than the ID token")
        return user_for_claims({**payload, **claims})


@transaction.atomic
def user_for_claims(claims: dict[str, Any]) -> AbstractBaseUser | None:
    """The account of (issuer, subject), made on first sign-in; None if deactivated."""
    from core.audit import audit

    identity = (OidcIdentity.objects.select_for_update().select_related("user")
                .filter(issuer=settings.OIDC_ISSUER, subject=str(claims["sub"])).first())
    if identity is None:
        user = get_user_model().objects.create_user(username=free_username(claims),
                                                    email=str(claims.get("email") or "")[:254])
        identity = OidcIdentity.objects.create(user=user, issuer=settings.OIDC_ISSUER, subject=str(claims["sub"]))
        audit(actor=user, project=None, action="user.create_sso", target=user,
              after={"username": user.username, "issuer": settings.OIDC_ISSUER})
    user = identity.user
    if not user.is_active:
        return None
    if settings.OIDC_GROUPS_CLAIM and settings.OIDC_GROUP_ROLES:
        memberships_sync(user=user, groups=claim_groups(claims))
    return user


def free_username(claims: dict[str, Any]) -> str:
    """A username for a new SSO account that passes the username rule and is not taken."""
    raw = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or "").strip()
    base = re.sub(r"[^\w.@+-]", "", unicodedata.normalize("NFKC", raw).replace(" ", "."))[:MAX_LENGTH - 8]
    try:
        base = normalize_username(base)
    except ValidationError:
        base = "sso-user"
    taken = get_user_model().objects
    name, number = base, 1
    while taken.filter(username__iexact=name).exists():
        number += 1
        name = f"{base}-{number}"
    return name


def claim_groups(claims: dict[str, Any]) -> set[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if isinstance(value, str):
        return {value}
    return {group for group in value if isinstance(group, str)} if isinstance(value, list) else set()


def memberships_sync(*, user: AbstractBaseUser, groups: set[str]) -> None:
    """Set the roles OIDC_GROUP_ROLES grants `groups` in the projects it names."""
    from core.audit import audit
    from labeling.models import ROLE_RANK, Membership, Project

    granted: dict[str, str | None] = {}
    for group, grants in settings.OIDC_GROUP_ROLES.items():
        for slug, role in grants.items():
            best = granted.get(slug)
            if group in groups and (best is None or ROLE_RANK[role] > ROLE_RANK[best]):
                granted[slug] = role
            else:
                granted.setdefault(slug, None)
    for project in Project.objects.filter(slug__in=granted):
        role = granted[project.slug]
        current = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
        if role == current:
            continue
        if role is None:
            Membership.objects.filter(project=project, user=user).delete()
        else:
            Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
        audit(actor=user, project=project, action="membership.sso", target=user,
              before={"role": current}, after={"role": role}, note="from the IdP's groups")


class OidcStart(OIDCAuthenticationRequestView):
    """GET /accounts/oidc/authenticate/: off (404) unless OIDC_ISSUER is set."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_CLIENT_ID
        return super().get(request)


class OidcCallback(OIDCAuthenticationCallbackView):
    """GET /accounts/oidc/callback/: the IdP sends the browser back here with a code."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not sso_enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except (requests.RequestException, ValueError) as exc:  # the IdP's answer was unusable
            logger.warning("SSO sign-in failed: %s", exc)
            return self.login_failure()
