"""Carry the tokens of DRF's authtoken app (one plain-text key per user, the API's tokens
before accounts.ApiToken) over as hashed ApiTokens, so clients keep working; then empty
its table, so no usable key is left in plain text. The app is no longer installed: its
table is read with SQL where it exists (databases made before this change)."""

import datetime
import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

DRF_TABLE = "authtoken_token"


def hash_drf_tokens(apps, schema_editor):  # noqa: ANN001, ANN201
    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {DRF_TABLE}")  # noqa: S608 - a constant
        rows = cursor.fetchall()
    api_token = apps.get_model("accounts", "ApiToken")
    user_model = apps.get_model(settings.AUTH_USER_MODEL)
    passwords = dict(user_model.objects.filter(pk__in=[user_id for _, user_id, _ in rows])
                     .values_list("pk", "password"))
    expires = timezone.now() + timedelta(days=settings.API_TOKEN_TTL_DAYS)
    for key, user_id, created in rows:
        token = api_token.objects.create(
            user_id=user_id, name="API token (from before named tokens)",
            key_hash=hashlib.sha256(key.encode()).hexdigest(), prefix=key[:8],
            password_fingerprint=hashlib.sha256(passwords[user_id].encode()).hexdigest(),
            expires_at=expires,
        )
        if timezone.is_naive(created):  # SQLite's cursor returns UTC without a zone
            created = timezone.make_aware(created, datetime.timezone.utc)
        api_token.objects.filter(pk=token.pk).update(created_at=created)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {DRF_TABLE}")  # noqa: S608 - a constant


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_api_tokens"),
    ]

    operations = [
        migrations.RunPython(hash_drf_tokens, migrations.RunPython.noop),
    ]
