"""People in projects: memberships (set, pause, remove), their leases, invites, accounts
(create, deactivate). Every action by a reviewer, admin or staff member is audited here."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.tokens import tokens_revoke_all
from accounts.usernames import normalize_username
from core.audit import audit
from core.errors import DomainError
from labeling.models import Assignment, Invite, Item, Membership, Project, Role


@transaction.atomic
def membership_set(*, project: Project, user: AbstractUser, role: str,
                   actor: AbstractBaseUser | None = None) -> Membership:
    """Add the user to the project with `role`, or change their role (audited)."""
    if role not in Role.values:
        raise DomainError(f"unknown role {role!r}; use one of {', '.join(Role.values)}")
    before = Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if before != role:
        audit(actor=actor, project=project, action="member.add" if before is None else "member.role",
              target=membership, before={"user": user.username, "role": before} if before else None,
              after={"user": user.username, "role": role})
    return membership


def invite_create(*, project: Project, role: str, created_by: AbstractUser) -> tuple[Invite, str]:
    """A one-time link; only the token's hash is stored. Returns (invite, raw token)."""
    if role not in Role.values:
        raise DomainError(f"unknown role {role!r}")
    token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        token_hash=hashlib.sha256(token.encode()).hexdigest(), project=project, role=role,
        created_by=created_by,
        expires_at=timezone.now() + timedelta(hours=settings.INVITE_TTL_HOURS),
    )
    audit(actor=created_by, project=project, action="invite.create", target=invite,
          after={"role": invite.role, "expires_at": invite.expires_at.isoformat()})
    return invite, token


def invite_lookup(*, token: str) -> Invite:
    digest = hashlib.sha256(token.encode()).hexdigest()
    invite = Invite.objects.filter(token_hash=digest).select_related("project").first()
    if (invite is None or invite.used_at is not None or invite.revoked_at is not None
            or invite.expires_at <= timezone.now()):
        raise DomainError("this invite link is invalid, expired, revoked or already used")
    return invite


@transaction.atomic
def invite_revoke(*, invite: Invite, actor: AbstractBaseUser) -> Invite:
    """The link stops working at once (audited); a used invite is refused (its account
    exists: remove the member instead)."""
    revoked = Invite.objects.filter(pk=invite.pk, used_at__isnull=True, revoked_at__isnull=True).update(
        revoked_at=timezone.now())
    invite.refresh_from_db()
    if not revoked:
        if invite.used_at is not None:
            raise DomainError("this invite was already used: remove the member instead")
        return invite  # already revoked: nothing changes, nothing to audit
    audit(actor=actor, project=invite.project, action="invite.revoke", target=invite,
          before={"role": invite.role, "state": "open"}, after={"state": "revoked"})
    return invite


@transaction.atomic
def member_add(*, project: Project, username: str, role: str, actor: AbstractBaseUser) -> Membership:
    """Add an existing, active account to the project with `role` (or change its role)."""
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise DomainError("no active user with this username")
    return membership_set(project=project, user=user, role=role, actor=actor)


def user_create(*, username: str, password: str) -> AbstractUser:
    """A new account; the username must pass accounts.usernames' rule (it is stored in
    NFKC form) and the password the configured validators."""
    if not settings.LOCAL_PASSWORDS:
        raise DomainError("passwords are off here (LOCAL_PASSWORDS=0): people sign in through single sign-on")
    try:
        username = normalize_username(username)
    except ValidationError as exc:
        raise DomainError(" ".join(exc.messages)) from None
    user_model = get_user_model()
    if user_model.objects.filter(username__iexact=username).exists():
        raise DomainError("that username is taken")
    user = user_model(username=username)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise DomainError(" ".join(exc.messages)) from None
    user.set_password(password)
    user.save()
    return user


@transaction.atomic
def invite_accept(*, token: str, username: str, password: str) -> AbstractUser:
    invite = invite_lookup(token=token)
    # Claim the invite with a conditional update so two tabs can't both use it.
    claimed = Invite.objects.filter(pk=invite.pk, used_at__isnull=True).update(
        used_at=timezone.now()
    )
    if not claimed:
        raise DomainError("this invite link was already used")
    user = user_create(username=username, password=password)
    Invite.objects.filter(pk=invite.pk).update(used_by=user)
    membership_set(project=invite.project, user=user, role=invite.role, actor=user)
    return user


@transaction.atomic
def membership_pause(*, project: Project, user: AbstractBaseUser, paused: bool,
                     actor: AbstractBaseUser, note: str = "") -> Membership:
    membership = Membership.objects.select_for_update().get(project=project, user=user)
    before = {"paused": membership.paused}
    membership.paused = paused
    membership.save(update_fields=["paused"])
    audit(actor=actor, project=project, action="member.pause" if paused else "member.resume",
          target=membership, before=before, after={"paused": paused}, note=note)
    if paused:
        leases_release(project=project, user=user, actor=actor, note="paused")
    return membership


@transaction.atomic
def member_remove(*, project: Project, user: AbstractBaseUser, actor: AbstractBaseUser,
                  note: str = "") -> None:
    membership = Membership.objects.filter(project=project, user=user).first()
    if membership is None:
        return
    leases_release(project=project, user=user, actor=actor, note="removed")
    audit(actor=actor, project=project, action="member.remove", target=membership,
          before={"user": user.username, "role": membership.role}, after=None, note=note)
    membership.delete()


@transaction.atomic
def leases_release(*, project: Project, user: AbstractBaseUser, actor: AbstractBaseUser,
                   note: str = "") -> int:
    """Return the user's active leases in the project to the pool.

    Locks the items, then their leases: the order ranking_submit uses. Taking the lease
    first deadlocked with a submission of that lease (tests/integration/
    test_stateful_concurrency.py). A lease claimed after the first read is left alone."""
    active = Assignment.objects.filter(annotator=user, item__project=project,
                                       status=Assignment.Status.ACTIVE)
    item_ids = list(active.values_list("item_id", flat=True))
    list(Item.objects.select_for_update().filter(pk__in=item_ids).order_by("id").values_list("id"))
    leases = list(active.select_for_update().filter(item_id__in=item_ids).order_by("id"))
    for lease in leases:
        Assignment.objects.filter(pk=lease.pk).update(status=Assignment.Status.EXPIRED,
                                                      finished_at=timezone.now())
        Item.objects.filter(pk=lease.item_id, active_leases__gt=0).update(
            active_leases=F("active_leases") - 1)
    if leases:
        audit(actor=actor, project=project, action="member.release_leases", target=user,
              before={"active_leases": len(leases)}, after={"active_leases": 0}, note=note)
    return len(leases)


@transaction.atomic
def user_deactivate(*, user: AbstractBaseUser, actor: AbstractBaseUser) -> None:
    """Staff only: the account can no longer sign in, its API tokens are deleted, and its
    leases go back to the pool."""
    if not actor.is_staff:
        raise DomainError("only staff can deactivate accounts")
    if user.pk == actor.pk:
        raise DomainError("you cannot deactivate your own account")
    for project in Project.objects.filter(memberships__user=user):
        leases_release(project=project, user=user, actor=actor, note="deactivated")
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    tokens_revoke_all(user=user)
    audit(actor=actor, project=None, action="user.deactivate", target=user,
          before={"is_active": True}, after={"is_active": False})
