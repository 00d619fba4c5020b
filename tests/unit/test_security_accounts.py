"""Accounts and access: red-team findings of issue #15, one or more tests each.

- [x] 6. An admin of one project could rewrite a guideline other projects use (draft and
  publish a major version in the console), gating their annotators, and the audit row
  had no project. Now: staff, or an admin of every project it binds; the console says
  why it is read-only; each bound project's log gets the row.
- [x] 7. API tokens survived a password change, never expired, and could not be listed
  or revoked. Now: named, hashed tokens bound to the password, expiring after
  API_TOKEN_TTL_DAYS, deleted at deactivation; GET/DELETE /api/auth/tokens and the
  /accounts/tokens/ page (tests/browser/test_tokens.py drives it in Chromium).
- [x] 8. Invite sign-up took usernames with zero-width and bidi characters, or 5,000
  characters, which /api/users/ refused. Now one rule (accounts.usernames) on every
  path that makes an account.
- [x] 12. /metrics was open to anyone. Now it needs `Bearer <METRICS_TOKEN>` (or a staff
  session), and is closed when METRICS_TOKEN is unset.
- [x] 13. Token sign-in: a success did not reset the failure count, a locked account
  answered ~15x faster than a wrong password (its lock state readable), and there was no
  throttle. Now all three hold.

Module-level imports are of code that existed before the fixes, so on the old code each
test fails on its own assertion (or its own import of the new module), not at collection.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from guidelines.models import Guideline
from guidelines.services import draft_create, version_publish
from labeling.models import AuditEvent, Invite, Project, Role
from tests.factories import PASSWORD, MembershipFactory, UserFactory

NEW_PASSWORD = "another-Long-passw0rd"
ROOT = Path(__file__).resolve().parents[2]


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def sign_in(api, username: str, password: str = PASSWORD):  # noqa: ANN001, ANN201
    return api.post("/api/auth/token", {"username": username, "password": password}, format="json")


def token_for(api, user) -> str:  # noqa: ANN001
    response = sign_in(api, user.username)
    assert response.status_code == 200, response.content
    return response.json()["token"]


def with_token(api, key: str):  # noqa: ANN001, ANN201
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api.get("/api/projects/")


# --------------------------------------------------------------------------- 6. guidelines


@pytest.fixture
def shared_guideline(project: Project, other_project: Project) -> Guideline:
    """A guideline no project owns, used by both projects."""
    guideline = Guideline.objects.create(slug="shared-g", title="Shared guideline")
    version_publish(version=draft_create(guideline=guideline, body="# Shared\n\nRule one."), user=None)
    Project.objects.filter(pk__in=[project.pk, other_project.pk]).update(guideline=guideline)
    return guideline


def test_6_an_admin_of_one_project_cannot_draft_a_guideline_another_project_uses(
        shared_guideline, project_admin) -> None:  # noqa: ANN001
    client = login(project_admin)

    new_draft = client.post(f"/console/guidelines/{shared_guideline.pk}/drafts")
    page = client.get(f"/console/guidelines/{shared_guideline.pk}/")

    assert new_draft.status_code == 403
    assert not shared_guideline.versions.filter(number=2).exists()
    # The console hides the control and says why, without naming the other project.
    assert page.status_code == 200
    assert b"New draft" not in page.content
    assert b"you are not an admin of 1 of the 2 projects" in page.content and b"Beta" not in page.content


def test_6_an_admin_of_one_project_cannot_publish_a_draft_of_a_shared_guideline(
        shared_guideline, project_admin) -> None:  # noqa: ANN001
    draft = draft_create(guideline=shared_guideline)

    response = login(project_admin).post(
        f"/console/guidelines/versions/{draft.pk}/edit",
        {"body": "# Shared\n\nEverything is a tie now.", "changelog": "x", "change": "major", "publish": "1"})

    draft.refresh_from_db()
    assert response.status_code == 403
    assert not draft.is_published and "tie" not in draft.body


def test_6_the_owner_projects_admin_alone_cannot_change_it_once_another_project_uses_it(
        project, other_project, project_admin) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="alpha-owned", title="Alpha's", project=project)
    version_publish(version=draft_create(guideline=guideline, body="# A\n\nOne."), user=None)
    Project.objects.filter(pk=other_project.pk).update(guideline=guideline)

    response = login(project_admin).post(f"/console/guidelines/{guideline.pk}/drafts")

    assert response.status_code == 403


def test_6_an_admin_of_every_project_changes_it_and_each_projects_log_gets_the_rows(
        shared_guideline, project, other_project, project_admin) -> None:  # noqa: ANN001
    MembershipFactory(user=project_admin, project=other_project, role=Role.ADMIN)
    beta_reviewer = UserFactory(username="beta-reviewer")
    MembershipFactory(user=beta_reviewer, project=other_project, role=Role.REVIEWER)
    client = login(project_admin)

    created = client.post(f"/console/guidelines/{shared_guideline.pk}/drafts")
    draft = shared_guideline.versions.get(number=2)
    published = client.post(f"/console/guidelines/versions/{draft.pk}/edit",
                            {"body": "# Shared\n\nRule two.", "changelog": "two", "change": "major",
                             "publish": "1"})

    assert created.status_code == 302 and published.status_code == 302
    for action in ("guideline.draft", "guideline.publish"):
        rows = AuditEvent.objects.filter(action=action)
        assert sorted(rows.values_list("project_id", flat=True)) == sorted([project.pk, other_project.pk]), action
        assert {row.actor_id for row in rows} == {project_admin.pk}
    beta_log = login(beta_reviewer).get(f"/console/audit?project={other_project.pk}&action=guideline.publish")
    assert b"guideline.publish" in beta_log.content


def test_6_staff_may_change_any_guideline_and_an_unused_shared_one_is_staff_only(
        db, project_admin, staff) -> None:  # noqa: ANN001
    unused = Guideline.objects.create(slug="unused", title="Unused")
    version_publish(version=draft_create(guideline=unused, body="# U\n\nOne."), user=None)

    refused = login(project_admin).post(f"/console/guidelines/{unused.pk}/drafts")
    allowed = login(staff).post(f"/console/guidelines/{unused.pk}/drafts")

    assert refused.status_code == 403 and allowed.status_code == 302
    # No project to file it under: the row is still written, without one.
    assert AuditEvent.objects.filter(action="guideline.draft", project=None, actor=staff).count() == 1


# --------------------------------------------------------------------------- 7. API tokens


@pytest.mark.parametrize("change", ["set_password", "set_unusable_password"])
def test_7_a_password_change_by_any_path_ends_the_users_tokens(api, annotator, change: str) -> None:  # noqa: ANN001
    key = token_for(api, annotator)
    assert with_token(api, key).status_code == 200

    # What the admin, `changepassword` and every API do: set_password, then save.
    user = get_user_model().objects.get(pk=annotator.pk)
    user.set_password(NEW_PASSWORD) if change == "set_password" else user.set_unusable_password()
    user.save()

    assert with_token(api, key).status_code == 403


def test_7_tokens_ended_by_a_password_change_show_so_and_go_at_the_next_sign_in(api, as_user, annotator) -> None:  # noqa: ANN001
    token_for(api, annotator)
    user = get_user_model().objects.get(pk=annotator.pk)
    user.set_password(NEW_PASSWORD)
    user.save()

    listed = as_user(user).get("/api/auth/tokens").json()
    sign_in(api, user.username, NEW_PASSWORD)
    after = as_user(user).get("/api/auth/tokens").json()

    assert [row["live"] for row in listed] == [False]
    assert [row["live"] for row in after] == [True]  # the dead one is gone, the new one works


def test_7_the_changepassword_command_ends_the_users_tokens(api, annotator, monkeypatch) -> None:  # noqa: ANN001
    key = token_for(api, annotator)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": NEW_PASSWORD)

    call_command("changepassword", annotator.username)

    assert with_token(api, key).status_code == 403


def test_7_deactivation_deletes_the_users_tokens(api, annotator, staff) -> None:  # noqa: ANN001
    from accounts.models import ApiToken
    from labeling.services.members import user_deactivate

    key = token_for(api, annotator)

    user_deactivate(user=annotator, actor=staff)

    assert with_token(api, key).status_code == 403
    assert not ApiToken.objects.filter(user=annotator).exists()


def test_7_a_token_expires_after_the_configured_days(api, annotator, settings) -> None:  # noqa: ANN001
    from accounts.models import ApiToken

    settings.API_TOKEN_TTL_DAYS = 7
    key = token_for(api, annotator)
    token = ApiToken.objects.get(user=annotator)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    assert with_token(api, key).status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    # A direct edit of the row bypasses the process's token cache as it bypasses model
    # signals; the cache itself re-checks expiry on every hit (test_token_cache.py).
    from accounts.tokens import _cache
    _cache.clear()

    assert with_token(api, key).status_code == 403


def test_7_only_a_hash_of_the_key_is_stored(api, annotator) -> None:  # noqa: ANN001
    from accounts.models import ApiToken

    response = sign_in(api, annotator.username)
    key = response.json()["token"]

    assert set(response.json()) == {"token"}  # the sign-in's shape is unchanged
    stored = ApiToken.objects.values().get(user=annotator)
    assert not any(key in str(value) for value in stored.values())


def test_7_a_user_lists_and_revokes_their_own_tokens_only(api, as_user, annotator, outsider) -> None:  # noqa: ANN001
    from rest_framework.test import APIClient

    first, second = token_for(api, annotator), token_for(api, annotator)
    theirs = token_for(APIClient(), outsider)
    mine = as_user(annotator)

    listed = mine.get("/api/auth/tokens").json()
    their_id = as_user(outsider).get("/api/auth/tokens").json()[0]["id"]
    refused = mine.delete(f"/api/auth/tokens/{their_id}")
    revoked = mine.delete(f"/api/auth/tokens/{listed[0]['id']}")

    assert len(listed) == 2 and {"id", "name", "created_at", "last_used_at", "expires_at"} <= set(listed[0])
    assert not any(first in str(row) or second in str(row) for row in listed)  # never the key
    assert refused.status_code == 404 and with_token(APIClient(), theirs).status_code == 200
    assert revoked.status_code == 204
    # The newest is listed first: the second sign-in's token is gone, the first still works.
    assert with_token(APIClient(), second).status_code == 403
    assert with_token(APIClient(), first).status_code == 200


def test_7_token_list_and_revoke_need_a_signed_in_user(api, annotator) -> None:  # noqa: ANN001
    assert api.get("/api/auth/tokens").status_code == 403
    assert api.delete("/api/auth/tokens/1").status_code == 403


def test_7_checking_a_token_is_one_query_and_last_use_is_written_at_most_every_few_minutes(
        api, annotator) -> None:  # noqa: ANN001
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.tokens import ApiTokenAuthentication

    key = token_for(api, annotator)
    auth = ApiTokenAuthentication()

    with CaptureQueriesContext(connection) as first:
        user, token = auth.authenticate_credentials(key)
    with CaptureQueriesContext(connection) as second:
        auth.authenticate_credentials(key)

    assert user == annotator and token.last_used_at is not None
    assert [q["sql"].split()[0] for q in first.captured_queries] == ["SELECT", "UPDATE"]
    # The second check is served by the process's token cache (tests/unit/test_token_cache.py).
    assert len(second.captured_queries) == 0


def test_7_drf_tokens_from_before_are_carried_over_hashed(annotator) -> None:  # noqa: ANN001
    import importlib

    from django.apps import apps
    from django.db import connection
    from rest_framework.test import APIClient

    migration = importlib.import_module("accounts.migrations.0002_hash_drf_tokens")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token "
                       "(key varchar(40) PRIMARY KEY, user_id integer, created timestamp with time zone)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)",
                       ["0123456789abcdef0123456789abcdef01234567", annotator.pk, timezone.now()])
    try:
        # The function reads only the editor's connection (SQLite's editor cannot open here).
        migration.hash_drf_tokens(apps, SimpleNamespace(connection=connection))
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM authtoken_token")
            left = cursor.fetchone()[0]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE authtoken_token")

    assert left == 0
    assert with_token(APIClient(), "0123456789abcdef0123456789abcdef01234567").status_code == 200


def test_7_a_rehash_at_sign_in_is_not_a_password_change(api, annotator, settings) -> None:  # noqa: ANN001
    from django.contrib.auth.hashers import make_password

    from accounts.tokens import token_create

    # A hasher upgrade: the stored hash is of an older kind, re-hashed at the next sign-in.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    get_user_model().objects.filter(pk=annotator.pk).update(password=make_password(PASSWORD, hasher="md5"))
    _, key = token_create(user=get_user_model().objects.get(pk=annotator.pk), name="script")

    page = Client().post("/accounts/login/", {"username": annotator.username, "password": PASSWORD})

    assert page.status_code == 302
    assert get_user_model().objects.get(pk=annotator.pk).password.startswith("pbkdf2_")
    assert with_token(api, key).status_code == 200


# tokens page


def test_7_tokens_page_needs_sign_in(client: Client, db: None) -> None:
    response = client.get("/accounts/tokens/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_7_tokens_page_shows_the_key_once_and_only_the_users_own_tokens(annotator, outsider) -> None:  # noqa: ANN001
    from accounts.models import ApiToken

    login(outsider).post("/accounts/tokens/", {"name": "outsider-laptop"})
    client = login(annotator)

    created = client.post("/accounts/tokens/", {"name": "my-script"})
    shown = client.get("/accounts/tokens/")
    key = shown.context["key"]
    later = client.get("/accounts/tokens/")

    assert created.status_code == 302  # a reload of the page makes no second token
    assert key and key.encode() in shown.content and "no-store" in shown["Cache-Control"]
    assert later.status_code == 200 and b"my-script" in later.content
    assert key.encode() not in later.content and b"outsider-laptop" not in later.content
    assert ApiToken.objects.filter(user=annotator, name="my-script").count() == 1


def test_7_tokens_page_revokes_own_tokens_and_404s_on_anyone_elses(annotator, outsider) -> None:  # noqa: ANN001
    from accounts.models import ApiToken

    login(outsider).post("/accounts/tokens/", {"name": "theirs"})
    client = login(annotator)
    client.post("/accounts/tokens/", {"name": "mine"})
    mine, theirs = ApiToken.objects.get(name="mine"), ApiToken.objects.get(name="theirs")

    other = client.post(f"/accounts/tokens/{theirs.pk}/revoke")
    own = client.post(f"/accounts/tokens/{mine.pk}/revoke")
    by_get = client.get(f"/accounts/tokens/{theirs.pk}/revoke")

    assert other.status_code == 404 and ApiToken.objects.filter(pk=theirs.pk).exists()
    assert own.status_code == 302 and not ApiToken.objects.filter(pk=mine.pk).exists()
    assert by_get.status_code == 405


# --------------------------------------------------------------------------- 8. usernames

HIDDEN_USERNAMES = {
    "zero-width space": "bob\u200b",
    "zero-width joiner": "b\u200dob",
    "right-to-left override": "\u202eevil",
    "bidi isolate": "bo\u2066b\u2069",
    "byte order mark": "\ufeffbob",
    "hangul filler (a letter)": "bob\u3164",
    "line separator": "bo\u2028b",
    "5,000 characters": "a" * 5000,
}


def invite_link(as_user, project, admin) -> str:  # noqa: ANN001
    response = as_user(admin).post(f"/api/projects/{project.pk}/invites", {"role": "annotator"}, format="json")
    return response.json()["url"].split("/accounts/invite/")[1].rstrip("/")


@pytest.mark.parametrize("username", HIDDEN_USERNAMES.values(), ids=HIDDEN_USERNAMES.keys())
def test_8_invite_sign_up_refuses_hidden_characters_and_long_names(as_user, project, project_admin,  # noqa: ANN001
                                                                   username: str) -> None:
    token = invite_link(as_user, project, project_admin)

    response = Client().post(f"/accounts/invite/{token}/", {"username": username, "password": NEW_PASSWORD})

    assert response.status_code == 200 and b'class="error"' in response.content
    assert not get_user_model().objects.filter(username=username).exists()
    assert Invite.objects.get().used_at is None


@pytest.mark.parametrize("username", HIDDEN_USERNAMES.values(), ids=HIDDEN_USERNAMES.keys())
def test_8_api_user_create_refuses_the_same_names(as_user, staff, username: str) -> None:  # noqa: ANN001
    response = as_user(staff).post("/api/users/", {"username": username, "password": NEW_PASSWORD}, format="json")

    assert response.status_code == 400 and "username" in response.json()
    assert not get_user_model().objects.filter(username=username).exists()


def test_8_usernames_are_stored_in_nfkc_form_so_lookalikes_are_taken(as_user, project, project_admin,  # noqa: ANN001
                                                                    staff) -> None:
    UserFactory(username="bob")
    token = invite_link(as_user, project, project_admin)

    fullwidth_bob = Client().post(f"/accounts/invite/{token}/",
                                  {"username": "\uff42\uff4f\uff42", "password": NEW_PASSWORD})
    fullwidth_joe = as_user(staff).post("/api/users/", {"username": "\uff4a\uff4f\uff45", "password": NEW_PASSWORD},
                                        format="json")

    assert fullwidth_bob.status_code == 200 and b"taken" in fullwidth_bob.content
    assert get_user_model().objects.filter(username__iexact="bob").count() == 1
    assert fullwidth_joe.status_code == 201 and fullwidth_joe.json()["username"] == "joe"


def test_8_admin_forms_and_createsuperuser_apply_the_rule(db: None) -> None:
    from django.core.management.base import CommandError

    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    client = login(admin)

    added = client.post("/admin/auth/user/add/", {"username": "ev\u200bil", "usable_password": "true",
                                                  "password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    renamed = client.post(f"/admin/auth/user/{admin.pk}/change/", {
        "username": "root\u3164", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
        "is_active": "on", "is_staff": "on", "is_superuser": "on"})
    with pytest.raises(CommandError):
        call_command("createsuperuser", username="x\u3164", email="", interactive=False, verbosity=0)

    assert added.status_code == 200 and b"invisible" in added.content
    assert renamed.status_code == 200 and b"invisible" in renamed.content
    assert sorted(get_user_model().objects.values_list("username", flat=True)) == ["root"]


# --------------------------------------------------------------------------- 12. /metrics


def test_12_metrics_are_closed_when_no_token_is_configured(client: Client, db: None, settings) -> None:  # noqa: ANN001
    settings.METRICS_TOKEN = None

    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


def test_12_metrics_need_the_bearer_token_or_a_staff_session(client: Client, settings, annotator,  # noqa: ANN001
                                                              staff) -> None:
    settings.METRICS_TOKEN = "s3cret-metrics-token"

    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-metrics-token").status_code == 403
    assert login(annotator).get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-metrics-token").status_code == 200
    assert login(staff).get("/metrics").status_code == 200


# --------------------------------------------------------------------------- 13. token sign-in


def test_13_a_successful_sign_in_resets_the_failure_count(api, annotator, settings) -> None:  # noqa: ANN001
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert sign_in(api, annotator.username, "wrong").status_code == 400
    assert sign_in(api, annotator.username).status_code == 200

    for _ in range(2):
        assert sign_in(api, annotator.username, "wrong").status_code == 400

    # Four failures in all, but never three in a row: not locked.
    assert sign_in(api, annotator.username).status_code == 200


def test_13_the_sign_in_endpoint_is_throttled_per_client(api, db: None, settings) -> None:  # noqa: ANN001
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"token_signin": "3/minute"}}

    answers = [api.post("/api/auth/token", {}, format="json").status_code for _ in range(4)]
    other_client = api.post("/api/auth/token", {}, format="json", REMOTE_ADDR="10.0.0.9")
    forged = api.post("/api/auth/token", {}, format="json", HTTP_X_FORWARDED_FOR="10.0.0.10")

    assert answers == [400, 400, 400, 429]
    assert other_client.status_code == 400
    assert forged.status_code == 429  # a client-written X-Forwarded-For does not make a new client


def test_13_a_locked_account_takes_as_long_to_refuse_as_a_wrong_password(api, db, settings) -> None:  # noqa: ANN001
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"token_signin": "1000/minute"}}
    locked = UserFactory(username="locked")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(api, locked.username, "wrong")
    others = [UserFactory(username=f"other{n}") for n in range(5)]

    locked_times, wrong_times, bodies = [], [], set()
    for other in others:  # interleaved, so load on the machine hits both alike
        for times, username in ((locked_times, locked.username), (wrong_times, other.username)):
            started = time.perf_counter()
            response = sign_in(api, username, "wrong")
            times.append(time.perf_counter() - started)
            bodies.add((response.status_code, response.content))

    locked_median, wrong_median = statistics.median(locked_times), statistics.median(wrong_times)
    assert len(bodies) == 1  # the same answer too
    assert wrong_median / 2.5 <= locked_median <= wrong_median * 2.5, (locked_times, wrong_times)


def settings_in_a_fresh_process(expression: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "API_TOKEN_SIGNIN_RATE", "DEBUG"}}
    return subprocess.run([sys.executable, "-c", f"import config.settings as s; print({expression})"],
                          cwd=ROOT, env={**clean, "DEBUG": "1", **env}, capture_output=True, text=True, timeout=60)


def test_13_the_throttle_counts_in_redis_when_there_is_one() -> None:
    with_redis = settings_in_a_fresh_process("s.CACHES['default']['BACKEND']", REDIS_URL="redis://127.0.0.1:6379/6")
    without = settings_in_a_fresh_process("s.CACHES['default']['BACKEND']")
    bad_rate = settings_in_a_fresh_process("1", API_TOKEN_SIGNIN_RATE="lots")

    assert with_redis.stdout.strip() == "django.core.cache.backends.redis.RedisCache"
    assert without.stdout.strip() == "django.core.cache.backends.locmem.LocMemCache"
    assert bad_rate.returncode != 0 and "API_TOKEN_SIGNIN_RATE" in bad_rate.stderr
