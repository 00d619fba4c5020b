"""Token API: sign in for a token (programs), list and revoke your own tokens."""

from __future__ import annotations

import unicodedata

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.tokens import token_create, token_is_live, token_revoke, tokens_for
from core.api import ApiErrorSerializer


class SignInThrottle(ScopedRateThrottle):
    """ScopedRateThrottle whose rate is read per request (DRF's is read once, at import),
    so REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] applies however it was set. Counts in the
    default cache (Redis when REDIS_URL is set: shared by every web process)."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class SignInInput(AuthTokenSerializer):
    def validate_username(self, value: str) -> str:
        return unicodedata.normalize("NFKC", value)  # usernames are stored in NFKC form


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(help_text="The key: send it as `Authorization: Token <key>`. Shown once.")


class TokenObtain(APIView):
    """Exchange a username and password for a new API token (programs' sign-in).

    Each sign-in makes a new token (list and revoke them at /api/auth/tokens); it expires
    after API_TOKEN_TTL_DAYS and ends when the password changes. Needs no other
    credentials, so none are read: a stale token or session cookie sent along must not
    turn a sign-in into a 403. Failed attempts count toward the lockout; the endpoint is
    throttled per client address (API_TOKEN_SIGNIN_RATE)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [SignInThrottle]
    throttle_scope = "token_signin"
    parser_classes = [FormParser, MultiPartParser, JSONParser]

    @extend_schema(request=SignInInput, responses={200: TokenOutput, 403: ApiErrorSerializer, 429: ApiErrorSerializer})
    def post(self, request: Request) -> Response:
        if not settings.LOCAL_PASSWORDS:
            raise PermissionDenied("Passwords are off here (single sign-on): sign in on the site and make a "
                                   "token at /accounts/tokens/.", code="local_passwords_off")
        data = SignInInput(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        user = data.validated_data["user"]
        # What django.contrib.auth.login() sends for the login page: django-axes resets
        # this username and address's failure count on it (AXES_RESET_ON_SUCCESS), and
        # last_login is set. Without it failures only ever added up.
        user_logged_in.send(sender=type(user), request=request, user=user)
        _, key = token_create(user=user, name="api sign-in")
        return Response(TokenOutput({"token": key}).data)


class TokenInfo(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The first characters of the key.")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="Updated at most every few minutes.")
    expires_at = serializers.DateTimeField()
    live = serializers.BooleanField(help_text="False once expired or after a password change: it no longer works.")


class TokenList(APIView):
    @extend_schema(responses=TokenInfo(many=True))
    def get(self, request: Request) -> Response:
        """Your own API tokens (never their keys), newest first."""
        tokens = list(tokens_for(user=request.user))
        for token in tokens:
            token.live = token_is_live(token, user=request.user)
        return Response(TokenInfo(tokens, many=True).data)


class TokenRevoke(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        """Revoke one of your own tokens (another user's answers 404)."""
        if not token_revoke(user=request.user, token_id=token_id):
            raise NotFound("No such token.")
        return Response(status=status.HTTP_204_NO_CONTENT)
