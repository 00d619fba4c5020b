"""Authentication backends (AUTHENTICATION_BACKENDS, in this order): the lockout check,
then Django's password check. Both serve the login page and POST /api/auth/token."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.throttling import BaseThrottle

from accounts.tokens import tokens_follow_rehash


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check. A locked account is refused before any password is
    hashed, which made the refusal answer in 60 ms instead of about a second: the lock
    state could be read from the timing. The refusal now runs the hasher first, as
    ModelBackend does for a username that does not exist."""

    def authenticate(self, request: HttpRequest, username: str | None = None, password: str | None = None,
                     **kwargs: object) -> AbstractBaseUser | None:
        try:
            return super().authenticate(request, username=username, password=password, **kwargs)
        except AxesBackendPermissionDenied:
            make_password(password if isinstance(password, str) else "")
            raise


class PasswordBackend(ModelBackend):
    """Django's ModelBackend. When a sign-in re-hashes the stored password (a newer
    hasher, more iterations after a Django upgrade), the password itself did not change,
    so the user's API tokens, bound to the stored hash, are carried over to the new one."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: object) -> AbstractBaseUser | None:
        if not settings.LOCAL_PASSWORDS:  # single sign-on only (LOCAL_PASSWORDS=0)
            return None
        user_model = get_user_model()
        if username is None:
            username = kwargs.get(user_model.USERNAME_FIELD)
        if username is None or password is None:
            return None
        try:
            user = user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            user_model().set_password(password)  # the same time as a wrong password (Django's)
            return None
        stored = user.password
        if not (user.check_password(password) and self.user_can_authenticate(user)):
            return None
        if user.password != stored:
            tokens_follow_rehash(user=user, old_password=stored)
        return user


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, one rule for the lockout (AXES_CLIENT_IP_CALLABLE) and the
    sign-in throttle: REMOTE_ADDR, or with NUM_PROXIES=n the address the outermost of
    the n trusted proxies saw (n-th from the right in X-Forwarded-For)."""
    return BaseThrottle().get_ident(request)


def lockout_key(typed: str) -> str:
    """What django-axes stores as the username of a sign-in attempt: a keyed hash of what
    was typed (NFKC, case-folded), never the text, so its tables name nobody, not even
    someone whose account was erased and whose old name is typed again later."""
    key = hmac.new(settings.SECRET_KEY.encode(), b"ordinal-lockout-username", hashlib.sha256).digest()
    normalized = unicodedata.normalize("NFKC", typed).casefold()
    return "h:" + hmac.new(key, normalized.encode(), hashlib.sha256).hexdigest()[:40]


def lockout_username(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """AXES_USERNAME_CALLABLE: axes' own rule (credentials, else the POSTed field), hashed."""
    field = settings.AXES_USERNAME_FORM_FIELD
    typed = credentials.get(field) if credentials else getattr(request, "data", request.POST).get(field)
    return lockout_key(typed) if isinstance(typed, str) and typed else typed
