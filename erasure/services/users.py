"""Erase an annotator (or any account): staff only, from the API, the console or
`manage.py erase_user`.

The account stays (its id holds rankings and demonstrations, so agreement figures and
datasets stay reproducible) but everything that names the person goes: the username
becomes a stable pseudonym, e-mail and names are emptied, the password made unusable,
sessions, API tokens and single sign-on links deleted, sign-in records (django-axes:
username, address, browser) deleted, and the old username and e-mail scrubbed out of
audit payloads and the admin's log. Free text the person wrote (rationales, skip
reasons, review notes, demonstrations) is kept or removed as the admin chooses; kept
text still loses the identifiers. The erasure log keeps hashes only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import Q

from accounts.backends import lockout_key
from accounts.models import ApiToken, OidcIdentity
from core.audit import audit
from core.errors import DomainError
from core.rendering import render_markdown
from erasure.models import ErasureRecord
from erasure.services import erasure_hash, erasure_key, identifier_pattern, scrub
from erasure.services.snapshots import hub_copies, snapshot_files_delete, snapshots_holding, snapshots_mark
from labeling.models import Assignment, AuditEvent, Candidate, Demonstration, Item, Project, Ranking
from labeling.services.members import leases_release
from training.models import DatasetSnapshot

logger = logging.getLogger(__name__)
PSEUDONYM_PREFIX = "erased-"


def user_pseudonym(user_id: int) -> str:
    """Stable for one account (erasing again gives the same name), unlinkable to the
    person without the deployment's secret."""
    digest = hmac.new(erasure_key(), f"user:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"{PSEUDONYM_PREFIX}{digest[:12]}"


def is_erased(user: AbstractBaseUser) -> bool:
    return user.get_username() == user_pseudonym(user.pk)


@dataclass
class UserErasurePreview:
    """What erasing the account removes or keeps, for the confirmation."""

    user_id: int
    pseudonym: str
    counts: dict[str, int] = field(default_factory=dict)


def _free_text(user: AbstractBaseUser) -> dict[str, Any]:
    return {
        "rationales": Ranking.objects.filter(annotator=user).exclude(rationale=""),
        "skip_reasons": Assignment.objects.filter(annotator=user).exclude(skip_reason=""),
        "review_notes": Item.objects.filter(decided_by=user).exclude(decision_note=""),
        "demonstrations": Candidate.objects.filter(demonstration__annotator=user).exclude(text=""),
    }


def _sign_in_records(user: AbstractBaseUser) -> list[Any]:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog

    names = Q()
    for typed in filter(None, (user.get_username(), user.email)):
        # Rows from before usernames were hashed hold the text itself.
        names |= Q(username__iexact=typed) | Q(username=lockout_key(typed))
    return [model.objects.filter(names) for model in (AccessAttempt, AccessLog, AccessFailureLog)]


def _sessions_of(user: AbstractBaseUser) -> list[str]:
    # The session table holds signed, encoded data: decoding each is the only way to
    # find a user's sessions (no index on the user); erasure is rare.
    return [session.session_key for session in Session.objects.iterator()
            if session.get_decoded().get("_auth_user_id") == str(user.pk)]


def user_erasure_preview(*, user: AbstractBaseUser) -> UserErasurePreview:
    counts = {
        "rankings_kept": Ranking.objects.filter(annotator=user).count(),
        "demonstrations_kept": Demonstration.objects.filter(annotator=user).count(),
        **{name: rows.count() for name, rows in _free_text(user).items()},
        "api_tokens": ApiToken.objects.filter(user=user).count(),
        "sign_in_records": sum(rows.count() for rows in _sign_in_records(user)),
    }
    return UserErasurePreview(user_id=user.pk, pseudonym=user_pseudonym(user.pk), counts=counts)


def user_erase(*, user: AbstractBaseUser, actor: AbstractBaseUser | None,
               remove_text: bool) -> ErasureRecord:
    """Erase the account's personal data (see the module docstring). `actor` is the
    staff member (None from the CLI); the caller checks they may. Rows change in one
    transaction; the files of snapshots that hold the person's words as they were are
    deleted after it (a snapshot is marked first, so it is never served)."""
    with transaction.atomic():
        record, snapshots = _erase_account(user, actor, remove_text)
    files = sum(snapshot_files_delete(snapshot) for snapshot in snapshots)
    ErasureRecord.objects.filter(pk=record.pk).update(counts={**record.counts, "storage_objects": files})
    record.refresh_from_db()
    logger.info("erased account %s (now %s): %s snapshots marked, erasure %s", record.subject_id,
                record.pseudonym, len(snapshots), record.pk)
    return record


def _erase_account(user: AbstractBaseUser, actor: AbstractBaseUser | None,
                   remove_text: bool) -> tuple[ErasureRecord, list[DatasetSnapshot]]:
    user = get_user_model().objects.select_for_update().get(pk=user.pk)
    if actor is not None and actor.pk == user.pk:
        raise DomainError("you can't erase your own account; ask another staff member")
    if is_erased(user):
        raise DomainError(f"account {user.pk} is already erased (it is {user.get_username()})")
    pseudonym = user_pseudonym(user.pk)
    identifiers = [value for value in (user.get_username(), user.email) if value]
    hashes = {"username": erasure_hash(user.get_username())}
    if user.email:
        hashes["email"] = erasure_hash(user.email)
    pattern = identifier_pattern(identifiers)
    counts: dict[str, int] = {}

    # Snapshots hold demonstrations as written: those about to change (removed, or with
    # the person's name taken out) make the snapshots that hold them erased data.
    demonstrations = _free_text(user)["demonstrations"]
    if not remove_text:
        demonstrations = demonstrations.filter(_mentions("text", identifiers))
    old_texts = list(demonstrations.values_list("prompt__project_id", "text"))
    counts["leases_released"] = sum(
        leases_release(project=project, user=user, actor=actor, note="account erased")
        for project in Project.objects.filter(memberships__user=user))
    counts.update(_remove_or_scrub_text(user, identifiers, pattern, pseudonym,
                                        remove_text=remove_text))
    counts["sign_in_records"] = sum(rows.delete()[0] for rows in _sign_in_records(user))
    sessions = _sessions_of(user)
    counts["sessions"] = Session.objects.filter(session_key__in=sessions).delete()[0]
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for key in sessions:  # and from the session cache (cached_db), where there is one
        store(session_key=key).delete()
    counts["api_tokens"] = ApiToken.objects.filter(user=user).delete()[0]
    counts["sso_links"] = OidcIdentity.objects.filter(user=user).delete()[0]
    counts["audit_events_scrubbed"] = _scrub_audit(identifiers, pattern, pseudonym)
    counts["admin_log_scrubbed"] = _scrub_admin_log(identifiers, pattern, pseudonym)
    snapshots = snapshots_holding(
        DatasetSnapshot.objects.filter(project_id__in={project for project, _ in old_texts}),
        [text for _, text in old_texts]) if old_texts else []
    versions = snapshots_mark([snapshot.pk for snapshot in snapshots])
    counts["hub_copies_to_delete_by_hand"] = hub_copies([snapshot.pk for snapshot in snapshots])

    user.username = pseudonym
    user.email = ""
    user.first_name = user.last_name = ""
    user.is_active = user.is_staff = user.is_superuser = False
    user.last_login = None
    user.set_unusable_password()
    user.save()

    record = ErasureRecord.objects.create(
        kind=ErasureRecord.Kind.USER, subject_hashes=hashes, subject_id=user.pk,
        pseudonym=pseudonym, options={"remove_text": remove_text}, counts=counts,
        snapshots=[snapshot.pk for snapshot in snapshots], model_versions=versions,
        erased_by=actor if actor is not None and actor.is_authenticated else None,
    )
    audit(actor=actor, project=None, action="user.erase", target=user,
          after={"pseudonym": pseudonym, "remove_text": remove_text, "erasure": record.pk,
                 "counts": counts, "snapshots": record.snapshots, "model_versions": versions})
    return record, snapshots


def _mentions(column: str, identifiers: list[str]) -> Q:
    mentions = Q(pk__in=[])
    for value in identifiers:
        mentions |= Q(**{f"{column}__icontains": value})
    return mentions


def _remove_or_scrub_text(user: AbstractBaseUser, identifiers: list[str], pattern: Any,
                          pseudonym: str, *, remove_text: bool) -> dict[str, int]:
    fields = {"rationales": "rationale", "skip_reasons": "skip_reason",
              "review_notes": "decision_note", "demonstrations": "text"}
    counts = {}
    for name, rows in _free_text(user).items():
        column = fields[name]
        if remove_text:
            extra = {"text_html": ""} if column == "text" else {}
            counts[f"{name}_removed"] = rows.update(**{column: "", **extra})
            continue
        # Kept text still loses the person's username and e-mail where they wrote them.
        changed = 0
        for row in rows.filter(_mentions(column, identifiers)) if pattern else []:
            updates = {column: scrub(getattr(row, column), pattern, pseudonym)}
            if column == "text":
                updates["text_html"] = str(render_markdown(updates["text"]))
            type(row).objects.filter(pk=row.pk).update(**updates)
            changed += 1
        counts[f"{name}_scrubbed"] = changed
    return counts


def _scrub_audit(identifiers: list[str], pattern: Any, pseudonym: str) -> int:
    """Audit rows are append-only; erasure is the one exception, and it changes only the
    identifiers inside them (the action, actor id and time stay)."""
    matches = Q()
    for value in filter(None, identifiers):
        matches |= Q(before__icontains=value) | Q(after__icontains=value) | Q(note__icontains=value)
    changed = 0
    for event in AuditEvent.objects.filter(matches).iterator():
        fields = {"before": scrub(event.before, pattern, pseudonym),
                  "after": scrub(event.after, pattern, pseudonym),
                  "note": scrub(event.note, pattern, pseudonym)}
        if any(fields[name] != getattr(event, name) for name in fields):
            AuditEvent.objects.filter(pk=event.pk).update(**fields)  # not save(): append-only
            changed += 1
    return changed


def _scrub_admin_log(identifiers: list[str], pattern: Any, pseudonym: str) -> int:
    matches = Q()
    for value in filter(None, identifiers):
        matches |= Q(object_repr__icontains=value) | Q(change_message__icontains=value)
    changed = 0
    for entry in LogEntry.objects.filter(matches).iterator():
        LogEntry.objects.filter(pk=entry.pk).update(
            object_repr=scrub(entry.object_repr, pattern, pseudonym),
            change_message=scrub(entry.change_message, pattern, pseudonym))
        changed += 1
    return changed
