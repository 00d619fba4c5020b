"""Erasing an account: afterwards no table (a dump of the whole database), no file under
the artifact root and no log line the app wrote holds the person's username, e-mail,
name, address or browser; their rankings stay under a pseudonym, so agreement figures
and datasets stay the same; their free text is kept (identifiers taken out) or removed
as the admin chose; the erasure log proves it with hashes only."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, OidcIdentity
from erasure.models import ErasureRecord
from erasure.services import erasure_hash
from erasure.services.users import user_pseudonym
from labeling.models import (
    AnnotatorQuality,
    Assignment,
    AuditEvent,
    Candidate,
    Demonstration,
    Item,
    Project,
    Ranking,
    Role,
)
from labeling.services.members import membership_set
from labeling.services.quality import quality_refresh
from tests.factories import MembershipFactory, PromptFactory, UserFactory, make_items
from tests.unit.test_snapshots import build

USERNAME, EMAIL, PASSWORD = "mallory.k", "Mallory.K@example.org", "pw-mallory-123456"
TRACES = [USERNAME, EMAIL, "Kettle", "MalloryBrowser", "203.0.113.9"]


@pytest.fixture
def person(db: None, staff):  # noqa: ANN001, ANN201
    """A simulated annotator who becomes Mallory, with everything a person leaves behind."""
    project = Project.objects.create(name="Sim", slug="sim", is_demo=True, overlap=3)
    make_items(project, 6, k=3)
    call_command("simulate_annotators", "--project", "sim", "--create", "3", "--noise", "0.1",
                 stdout=io.StringIO())
    user = Ranking.objects.filter(item__project=project).order_by("id").first().annotator
    user.username, user.email, user.first_name, user.last_name = USERNAME, EMAIL, "Mallory", "Kettle"
    user.set_password(PASSWORD)
    user.save()
    membership_set(project=project, user=user, role=Role.REVIEWER, actor=staff)  # audit: {"user": ...}
    Ranking.objects.filter(annotator=user).update(rationale=f"B is clearer, {USERNAME} thinks")
    Item.objects.filter(pk=Ranking.objects.filter(annotator=user).first().item_id).update(
        decided_by=user, decision_note=f"checked by {USERNAME} ({EMAIL})")
    Assignment.objects.filter(annotator=user).update(skip_reason="")
    Assignment.objects.filter(pk=Assignment.objects.filter(annotator=user).first().pk).update(
        skip_reason="too long for me")
    _demonstration(project, user, f"My own answer. -- {USERNAME}")
    ApiToken.objects.create(user=user, name=f"{USERNAME} laptop", key_hash="a" * 64, prefix="abc",
                            password_fingerprint="f" * 64, expires_at=timezone.now() + timedelta(days=9))
    OidcIdentity.objects.create(user=user, issuer="https://idp.example", subject=EMAIL)
    for model in (AccessLog, AccessFailureLog):  # kept by an earlier configuration
        model.objects.create(username=USERNAME, ip_address="203.0.113.9",
                             user_agent="MalloryBrowser/1.0", http_accept="*/*", path_info="/accounts/login/")
    LogEntry.objects.create(user=staff, content_type=ContentType.objects.get_for_model(user),
                            object_id=str(user.pk), object_repr=USERNAME, action_flag=CHANGE,
                            change_message=f"Changed email to {EMAIL}.")
    browser = Client(HTTP_USER_AGENT="MalloryBrowser/1.0", REMOTE_ADDR="203.0.113.9")
    browser.post("/accounts/login/", {"username": USERNAME, "password": "wrong"})
    assert AccessAttempt.objects.filter(ip_address="203.0.113.9").exists()
    browser.post("/accounts/login/", {"username": USERNAME, "password": PASSWORD})
    assert browser.session.get("_auth_user_id") == str(user.pk)  # a live session
    quality_refresh(project=project)
    return user


def _demonstration(project: Project, user, text: str) -> Demonstration:  # noqa: ANN001
    prompt = PromptFactory(project=project)
    item = Item.objects.create(project=project, prompt=prompt, kind=Item.Kind.DEMONSTRATION,
                               required_rankings=1, status=Item.Status.ACCEPTED)
    now = timezone.now()
    assignment = Assignment.objects.create(item=item, annotator=user, leased_at=now, expires_at=now,
                                           status=Assignment.Status.SUBMITTED)
    candidate = Candidate.objects.create(prompt=prompt, text=text, text_html=f"<p>{text}</p>",
                                         origin=Candidate.Origin.HUMAN, dedupe_key="demo:1")
    return Demonstration.objects.create(assignment=assignment, item=item, annotator=user,
                                        candidate=candidate, idempotency_key="d1")


def database_dump() -> str:
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    return out.getvalue()


def artifact_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def leaks(text: str) -> list[str]:
    return [trace for trace in TRACES if trace.lower() in text.lower()]


def quality_of(user_id: int) -> list[tuple]:
    return sorted(AnnotatorQuality.objects.filter(annotator_id=user_id)
                  .values_list("period", "rankings", "loo_agreement", "median_seconds"))


def test_after_erasure_no_table_file_or_log_line_names_the_person(person, staff, api, caplog, settings) -> None:  # noqa: ANN001, E501
    project = Project.objects.get(slug="sim")
    before_snapshot = build(project, kinds=["raw", "sft", "pairs"], formats=["jsonl"])
    rankings = sorted(Ranking.objects.filter(annotator=person).values_list("id", "tiers"))
    quality = quality_of(person.pk)
    assert leaks(database_dump()) == TRACES  # the fixture left every trace the test looks for

    caplog.set_level(logging.DEBUG)
    api.force_authenticate(staff)
    preview = api.get(f"/api/users/{person.pk}/erasure").json()
    answer = api.post(f"/api/users/{person.pk}/erasure", {"remove_text": False}, format="json")
    # Someone types the old name at the sign-in page afterwards: no row or log line names it.
    Client(HTTP_USER_AGENT="Firefox/140", REMOTE_ADDR="198.51.100.7").post(
        "/accounts/login/", {"username": USERNAME, "password": PASSWORD})
    after_snapshot = build(project, kinds=["raw", "sft", "pairs"], formats=["jsonl"])

    assert answer.status_code == 200, answer.content
    assert preview["counts"]["rankings_kept"] == len(rankings) and preview["counts"]["api_tokens"] == 1
    assert leaks(database_dump()) == []
    assert leaks(artifact_text(settings.ARTIFACT_ROOT)) == []
    assert leaks("\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)) == []
    # The labels stay, as the pseudonym's, and give the same figures and datasets.
    person.refresh_from_db()
    pseudonym = user_pseudonym(person.pk)
    assert (person.username, person.email, person.is_active, person.has_usable_password()) == (
        pseudonym, "", False, False)
    assert sorted(Ranking.objects.filter(annotator=person).values_list("id", "tiers")) == rankings
    quality_refresh(project=project)
    assert quality_of(person.pk) == quality
    assert after_snapshot.counts == before_snapshot.counts
    # Kept free text loses the identifiers only.
    assert set(Ranking.objects.filter(annotator=person).values_list("rationale", flat=True)) == {
        f"B is clearer, {pseudonym} thinks"}
    assert Demonstration.objects.get(annotator=person).candidate.text == f"My own answer. -- {pseudonym}"
    assert Assignment.objects.filter(annotator=person, skip_reason="too long for me").count() == 1
    assert not ApiToken.objects.filter(user=person).exists()
    assert not OidcIdentity.objects.filter(user=person).exists()
    # The audit log keeps what happened, under the pseudonym.
    promoted = AuditEvent.objects.get(action="member.role", target_id=str(person.memberships.get().pk))
    assert (promoted.before, promoted.after) == ({"user": pseudonym, "role": "annotator"},
                                                 {"user": pseudonym, "role": "reviewer"})
    erased = AuditEvent.objects.get(action="user.erase")
    assert (erased.actor, erased.target_id) == (staff, str(person.pk))
    record = ErasureRecord.objects.get()
    assert record.subject_hashes == {"username": erasure_hash(USERNAME), "email": erasure_hash(EMAIL)}
    assert record.options == {"remove_text": False} and record.erased_by == staff
    # The snapshot that held their demonstration as written is marked, its files gone.
    before_snapshot.refresh_from_db()
    assert record.snapshots == [before_snapshot.pk] and before_snapshot.contains_erased
    assert not Path(before_snapshot.path).exists()


def test_removing_free_text_empties_what_they_wrote(person, staff, api) -> None:  # noqa: ANN001
    api.force_authenticate(staff)
    answer = api.post(f"/api/users/{person.pk}/erasure", {"remove_text": True}, format="json")
    project = Project.objects.get(slug="sim")
    snapshot = build(project, kinds=["sft"], formats=["jsonl"])

    assert answer.status_code == 200, answer.content
    assert set(Ranking.objects.filter(annotator=person).values_list("rationale", flat=True)) == {""}
    assert not Item.objects.filter(decided_by=person).exclude(decision_note="").exists()
    assert not Assignment.objects.filter(annotator=person).exclude(skip_reason="").exists()
    demonstration = Demonstration.objects.get(annotator=person)
    assert (demonstration.candidate.text, demonstration.candidate.text_html) == ("", "")
    assert answer.json()["counts"]["demonstrations_removed"] == 1
    rows = [line for name in snapshot.files
            for line in (Path(snapshot.path) / name).read_text().splitlines()]
    assert rows and not any('"completion": ""' in row or "My own answer" in row for row in rows)


def test_only_staff_erase_accounts_and_never_their_own(person, staff, api) -> None:  # noqa: ANN001
    admin = UserFactory(username="padmin")
    MembershipFactory(user=admin, project=Project.objects.get(slug="sim"), role=Role.ADMIN)
    api.force_authenticate(admin)
    assert api.post(f"/api/users/{person.pk}/erasure", {"remove_text": True}, format="json").status_code == 403
    assert api.get(f"/api/users/{person.pk}/erasure").status_code == 403
    api.force_authenticate(staff)
    assert api.post(f"/api/users/{staff.pk}/erasure", {"remove_text": True}, format="json").status_code == 400
    assert api.post(f"/api/users/{person.pk}/erasure", {}, format="json").status_code == 400  # a choice
    assert api.post(f"/api/users/{person.pk}/erasure", {"remove_text": True, "x": 1},
                    format="json").status_code == 400
    assert get_user_model().objects.get(pk=person.pk).username == USERNAME
    assert ErasureRecord.objects.count() == 0


def test_cli_shows_then_erases(person) -> None:  # noqa: ANN001
    shown = io.StringIO()
    call_command("erase_user", USERNAME, "--keep-text", stdout=shown)
    assert "nothing changed" in shown.getvalue()
    assert get_user_model().objects.filter(username=USERNAME).exists()

    done = io.StringIO()
    call_command("erase_user", USERNAME, "--keep-text", "--yes", stdout=done)
    assert user_pseudonym(person.pk) in done.getvalue()
    assert not get_user_model().objects.filter(username=USERNAME).exists()
    assert AuditEvent.objects.get(action="user.erase", actor=None).note == "origin: cli"


def test_erasure_ends_sessions_held_in_the_session_cache(staff, settings) -> None:  # noqa: ANN001
    """With a shared cache, sessions are read from it (config/settings.py): erasing the
    account must take them out of the cache too, not only out of the table."""
    from django.contrib.sessions.backends.cached_db import KEY_PREFIX
    from django.core.cache import cache

    from erasure.services.users import user_erase

    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
    user = UserFactory(username="cached-person")
    browser = Client()
    browser.force_login(user)
    key = browser.session.session_key
    assert cache.get(KEY_PREFIX + key)["_auth_user_id"] == str(user.pk)  # served from the cache

    user_erase(user=user, actor=staff, remove_text=False)

    assert cache.get(KEY_PREFIX + key) is None
    assert not Session.objects.filter(session_key=key).exists()
