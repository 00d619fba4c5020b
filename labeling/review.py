"""Reviewer and admin actions: adjudication, annotator management, and the audit log
every one of them writes to (in the same transaction as the change)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.tokens import tokens_revoke_all
from core.audit import audit
from core.errors import DomainError
from labeling.assignment import validate_tiers
from labeling.models import Assignment, Item, Membership, Project


def _item_state(item: Item) -> dict[str, Any]:
    return {"status": item.status, "consensus": item.consensus,
            "required_rankings": item.required_rankings}


class Adjudication:
    SET_RANKING = "set_ranking"
    ACCEPT_CONSENSUS = "accept_consensus"
    DISCARD = "discard"
    SEND_BACK = "send_back"
    ALL = (SET_RANKING, ACCEPT_CONSENSUS, DISCARD, SEND_BACK)


@transaction.atomic
def item_adjudicate(*, item_id: int, reviewer: AbstractBaseUser, action: str, note: str = "",
                    tiers: list[list[int]] | None = None, extra_rankings: int = 1) -> Item:
    """A reviewer's decision on an item: set the final ranking, accept the consensus,
    discard it, or send it back for `extra_rankings` more rankings."""
    if action not in Adjudication.ALL:
        raise DomainError(f"unknown action {action!r}; use one of {', '.join(Adjudication.ALL)}")
    item = Item.objects.select_for_update().select_related("project").get(pk=item_id)
    before = _item_state(item)
    now = timezone.now()
    if action == Adjudication.SET_RANKING:
        candidate_ids = set(item.item_candidates.values_list("candidate_id", flat=True))
        item.consensus = validate_tiers(tiers, candidate_ids, allow_ties=True)
        item.status, item.decided_by, item.decided_at = Item.Status.ACCEPTED, reviewer, now
    elif action == Adjudication.ACCEPT_CONSENSUS:
        if not item.consensus:
            raise DomainError("this item has no consensus yet; set the ranking instead")
        item.status, item.decided_by, item.decided_at = Item.Status.ACCEPTED, reviewer, now
    elif action == Adjudication.DISCARD:
        item.status, item.decided_by, item.decided_at = Item.Status.DISCARDED, reviewer, now
    else:
        if not 1 <= extra_rankings <= 20:
            raise DomainError("ask for 1 to 20 more rankings")
        item.required_rankings += extra_rankings
        item.status, item.decided_at = Item.Status.OPEN, None
    item.decision_note = note
    item.save(update_fields=["consensus", "status", "decided_by", "decided_at",
                             "required_rankings", "decision_note"])
    audit(actor=reviewer, project=item.project, action=f"item.{action}", target=item,
          before=before, after=_item_state(item), note=note)
    return item


# --------------------------------------------------------------------------- people


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


def disputes_for(*, project: Project):  # noqa: ANN201 - QuerySet[Item]
    """The dispute queue: most disagreement first."""
    return (Item.objects.filter(project=project, status=Item.Status.DISPUTED)
            .select_related("prompt").order_by(F("agreement").asc(nulls_first=True), "id"))
