"""Writes to the labeling domain. Views, the API, commands and tasks call these; they
don't save domain models themselves."""

from __future__ import annotations

import hashlib
import itertools
import random
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.usernames import normalize_username
from core.errors import DomainError
from labeling.models import Invite, Item, ItemCandidate, Membership, Project, Role


def project_create(*, name: str, slug: str, **fields: object) -> Project:
    project = Project(name=name, slug=slug, **fields)
    project.full_clean()
    project.save()
    return project


def project_get_or_create_default(*, slug: str) -> tuple[Project, bool]:
    """The CLI's project lookup: create it with default settings when it doesn't exist."""
    project = Project.objects.filter(slug=slug).first()
    if project:
        return project, False
    return project_create(name=slug.replace("-", " ").title(), slug=slug), True


def membership_set(*, project: Project, user: AbstractUser, role: str) -> Membership:
    if role not in Role.values:
        raise DomainError(f"unknown role {role!r}; use one of {', '.join(Role.values)}")
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    return membership


def membership_remove(*, project: Project, user: AbstractUser) -> None:
    Membership.objects.filter(project=project, user=user).delete()


def items_create_for_prompt(*, project: Project, prompt_id: int, candidate_ids: list[int]) -> int:
    """Make the items annotators rank from a new set of candidates of one prompt."""
    return items_create_bulk(project=project, candidate_sets=[(prompt_id, candidate_ids)])


def items_create_bulk(*, project: Project, candidate_sets: list[tuple[int, list[int]]]) -> int:
    """Items for many prompts in two INSERTs (the import's and generation's path).

    Ranking mode: one item per (prompt, candidate set). Pairwise mode: one item per pair,
    all C(K,2) pairs or a random subset of `generation_settings["pairs_per_prompt"]`.
    An item's candidate set is fixed here and never changes. Returns items created.
    """
    groups: list[tuple[int, list[int]]] = []
    limit = project.generation_settings.get("pairs_per_prompt")
    for prompt_id, candidate_ids in candidate_sets:
        if len(candidate_ids) < 2:
            continue
        if project.mode != Project.Mode.PAIRWISE:
            groups.append((prompt_id, list(candidate_ids)))
            continue
        pairs = [list(pair) for pair in itertools.combinations(candidate_ids, 2)]
        if isinstance(limit, int) and 0 < limit < len(pairs):
            pairs = random.Random(prompt_id).sample(pairs, limit)  # noqa: S311
        groups.extend((prompt_id, pair) for pair in pairs)
    if not groups:
        return 0
    # Adaptive overlap starts at two rankings and escalates only on disagreement.
    required = min(2, project.overlap) if project.adaptive_overlap else project.overlap
    items = Item.objects.bulk_create(
        [Item(project=project, prompt_id=prompt_id, required_rankings=required)
         for prompt_id, _ in groups]
    )
    ItemCandidate.objects.bulk_create(
        [
            ItemCandidate(item_id=item.pk, candidate_id=candidate_id, position=position)
            for item, (_, group) in zip(items, groups, strict=True)
            for position, candidate_id in enumerate(group)
        ]
    )
    return len(items)


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
    return invite, token


def invite_lookup(*, token: str) -> Invite:
    digest = hashlib.sha256(token.encode()).hexdigest()
    invite = Invite.objects.filter(token_hash=digest).select_related("project").first()
    if invite is None or invite.used_at is not None or invite.expires_at <= timezone.now():
        raise DomainError("this invite link is invalid, expired or already used")
    return invite


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
    membership_set(project=invite.project, user=user, role=invite.role)
    return user


def stale_items_for(*, project: Project):  # noqa: ANN201 - (QuerySet[Item], version)
    """Items with rankings made under a version older than the latest major one."""
    from django.db.models import Count, Q

    from guidelines.models import GuidelineVersion

    major = (
        GuidelineVersion.objects.filter(guideline_id=project.guideline_id,
                                        published_at__isnull=False,
                                        change=GuidelineVersion.Change.MAJOR)
        .order_by("-number").first()
    )
    if major is None:
        return Item.objects.none(), None
    stale = Q(rankings__guideline_version__number__lt=major.number,
              rankings__superseded_by__isnull=True)
    items = (
        Item.objects.filter(project=project).filter(stale)
        .annotate(stale_rankings=Count("rankings", filter=stale, distinct=True))
        .select_related("prompt").order_by("id").distinct()
    )
    return items, major


@transaction.atomic
def items_reopen(*, project: Project, item_ids: list[int], reason: str, extra: int | None = None
                 ) -> int:
    """Ask for more rankings on these items: raise `required_rankings` (by `extra`, or by
    the project's overlap) and put them back in the pool."""
    from django.db.models import F

    items = Item.objects.select_for_update().filter(project=project, pk__in=item_ids).exclude(
        status=Item.Status.DISCARDED
    )
    count = 0
    for item in items:
        Item.objects.filter(pk=item.pk).update(
            required_rankings=F("required_rankings") + (extra or project.overlap),
            status=Item.Status.OPEN,
        )
        count += 1
    return count
