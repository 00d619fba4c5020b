"""API tokens: several named tokens per user, stored as the SHA-256 of a random key (the
key itself is shown once, when the token is made), each bound to the user's password of
that moment and expiring after API_TOKEN_TTL_DAYS."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    # hex SHA-256 of the key: the one indexed lookup of every token-authenticated request.
    key_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the key, so a person can tell their tokens apart.
    prefix = models.CharField(max_length=8)
    # Hash of user.password when the token was made: any password change (admin,
    # changepassword, set_password anywhere) changes it, and the token stops working.
    password_fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="api_token_user_recent")]

    def __str__(self) -> str:
        return f"{self.user_id}:{self.name} ({self.prefix}…)"


class OidcIdentity(models.Model):
    """The IdP account (issuer, subject) an account signs in with through SSO
    (accounts/oidc.py); accounts are matched on it, never on e-mail."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="oidc_identity_unique")]

    def __str__(self) -> str:
        return f"{self.issuer} {self.subject}"
