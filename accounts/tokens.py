"""API tokens: make, list, revoke, and check one (the DRF authentication class).

A key is 32 random bytes, URL-safe; only its SHA-256 is stored, so a copy of the
database holds no usable key, and checking one is a single lookup on a unique index
(the annotators' API hot path). A token stops working when it expires
(API_TOKEN_TTL_DAYS after it was made), when its user's password changes by any path
(the token keeps a hash of user.password, as Django's sessions keep a hash of it), when
the user is deactivated, or when it is revoked.

Checking a key costs one query, and on the annotators' hot path that query (the ORM
compiling it, building a token and a user) was a tenth of a request's CPU. So each
process keeps the token and its user for API_TOKEN_CACHE_SECONDS (default 5; 0: off)
after a successful check, and drops them when this process saves or deletes the token or
saves or deletes the user (revocation, deactivation, which revokes every token, a
password change): after such a change no request of this process gets through with the
old state. Other processes hold theirs at most API_TOKEN_CACHE_SECONDS longer; each hit
still checks expiry, is_active and the password fingerprint of what it holds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Coalesce
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from accounts.models import ApiToken
from core.audit import audit

# A token used within this long is not written again: last_used_at is a hint for people
# reviewing their tokens, and a write per request would load the hot path.
LAST_USED_GRANULARITY = timedelta(minutes=5)
# Each sign-in makes a token; past this many, the least recently used ones go.
MAX_TOKENS_PER_USER = 100


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def password_fingerprint(user: AbstractBaseUser) -> str:
    return hashlib.sha256(user.password.encode()).hexdigest()


@transaction.atomic
def token_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`; returns it and its key, which is not stored and cannot be
    shown again. The user's tokens that can never work again (expired, or made under an
    earlier password) go, and past MAX_TOKENS_PER_USER the least recently used."""
    dead = [token.pk for token in tokens_for(user=user) if not token_is_live(token, user=user)]
    ApiToken.objects.filter(pk__in=dead).delete()
    key = secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:100] or "token", key_hash=key_digest(key), prefix=key[:8],
        password_fingerprint=password_fingerprint(user),
        expires_at=timezone.now() + timedelta(days=settings.API_TOKEN_TTL_DAYS),
    )
    surplus = list(tokens_for(user=user).order_by(Coalesce("last_used_at", "created_at").desc(), "-id")
                   .values_list("pk", flat=True)[MAX_TOKENS_PER_USER:])
    if surplus:
        ApiToken.objects.filter(pk__in=surplus).delete()
    _audit(user, "token.create", token, after={"name": token.name, "expires_at": token.expires_at.isoformat()})
    return token, key


def tokens_for(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first (expired ones included until revoked)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


@transaction.atomic
def token_revoke(*, user: AbstractBaseUser, token_id: int) -> bool:
    """Delete one of the user's own tokens; False when they have none with that id."""
    token = ApiToken.objects.filter(pk=token_id, user=user).first()
    if token is None:
        return False
    _audit(user, "token.revoke", token, before={"name": token.name})
    token.delete()
    return True


def tokens_revoke_all(*, user: AbstractBaseUser) -> int:
    """Delete every token of `user` (deactivation)."""
    deleted, _ = ApiToken.objects.filter(user=user).delete()
    return deleted


def token_is_live(token: ApiToken, *, user: AbstractBaseUser) -> bool:
    """Not expired, its user active, and made under the user's current password."""
    return (token.expires_at > timezone.now() and user.is_active
            and hmac.compare_digest(token.password_fingerprint, password_fingerprint(user)))


def token_authenticate(*, key: str) -> ApiToken | None:
    """The live token with this key (its user loaded), or None."""
    digest = key_digest(key)
    token = _cache.get(digest)
    if token is None:
        generation = _cache.generation
        token = ApiToken.objects.select_related("user").filter(key_hash=digest).first()
        if token is None or not token_is_live(token, user=token.user):
            return None
        _cache.put(digest, token, generation)
    elif not token_is_live(token, user=token.user):
        _cache.drop(digest)
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
        _cache.touch(digest, now)
    return token


class _TokenCache:
    """key digest -> (deadline, token's field values, user's field values). Every hit
    builds a new token and user (a request may change its request.user). `generation`
    moves on every invalidation, and a check that read the database before an
    invalidation does not store what it read (it may be the state before the change)."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, tuple, tuple]] = {}
        self.generation = 0
        self.lock = threading.Lock()

    def get(self, digest: str) -> ApiToken | None:
        entry = self.entries.get(digest)
        if entry is None:
            return None
        deadline, token_values, user_values = entry
        if deadline < time.monotonic():
            self.drop(digest)
            return None
        user_model = get_user_model()
        user = user_model.from_db("default", _attnames(user_model), user_values)
        token = ApiToken.from_db("default", _attnames(ApiToken), token_values)
        token.user = user
        return token

    def put(self, digest: str, token: ApiToken, generation: int) -> None:
        seconds = settings.API_TOKEN_CACHE_SECONDS
        if not seconds:
            return
        entry = (time.monotonic() + seconds,
                 tuple(getattr(token, name) for name in _attnames(ApiToken)),
                 tuple(getattr(token.user, name) for name in _attnames(type(token.user))))
        with self.lock:
            if generation != self.generation:
                return  # something changed while we read: the next check reads again
            if len(self.entries) >= self.MAX_ENTRIES:
                self.entries.clear()
            self.entries[digest] = entry

    def touch(self, digest: str, last_used_at: object) -> None:
        with self.lock:
            entry = self.entries.get(digest)
            if entry is not None:
                names = _attnames(ApiToken)
                values = list(entry[1])
                values[names.index("last_used_at")] = last_used_at
                self.entries[digest] = (entry[0], tuple(values), entry[2])

    def drop(self, digest: str) -> None:
        with self.lock:
            self.generation += 1
            self.entries.pop(digest, None)

    def drop_user(self, user_id: object) -> None:
        user_index = _attnames(ApiToken).index("user_id")
        with self.lock:
            self.generation += 1
            for digest, entry in list(self.entries.items()):
                if entry[1][user_index] == user_id:
                    del self.entries[digest]

    def clear(self) -> None:
        with self.lock:
            self.generation += 1
            self.entries.clear()


_cache = _TokenCache()
_ATTNAMES: dict[type, list[str]] = {}


def _attnames(model: type) -> list[str]:
    names = _ATTNAMES.get(model)
    if names is None:
        names = _ATTNAMES[model] = [field.attname for field in model._meta.concrete_fields]
    return names


def _token_changed(sender: type, instance: ApiToken, **kwargs: object) -> None:
    _cache.drop(instance.key_hash)
    _cache.drop_user(instance.user_id)


def _user_changed(sender: type, instance: AbstractBaseUser, **kwargs: object) -> None:
    _cache.drop_user(instance.pk)


post_save.connect(_token_changed, sender=ApiToken, dispatch_uid="api_token_cache_save")
post_delete.connect(_token_changed, sender=ApiToken, dispatch_uid="api_token_cache_delete")
post_save.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_token_cache_user_save")
post_delete.connect(_user_changed, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_token_cache_user_delete")


def tokens_follow_rehash(*, user: AbstractBaseUser, old_password: str) -> int:
    """A sign-in re-hashed the stored password (a newer hasher or more iterations): the
    password did not change, so the tokens made under the old hash stay valid."""
    old = hashlib.sha256(old_password.encode()).hexdigest()
    return ApiToken.objects.filter(user=user, password_fingerprint=old).update(
        password_fingerprint=password_fingerprint(user))


def _audit(user: AbstractBaseUser, action: str, token: ApiToken, *, before: object = None,
           after: object = None) -> None:
    audit(actor=user, project=None, action=action, target=token, before=before, after=after)


class ApiTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>` (DRF's header, so clients and the schema's tokenAuth
    scheme are unchanged), checked against ApiToken."""

    def authenticate_credentials(self, key: str) -> tuple[AbstractBaseUser, ApiToken]:
        token = token_authenticate(key=key)
        if token is None:
            raise AuthenticationFailed("Invalid or expired token.")
        return token.user, token
