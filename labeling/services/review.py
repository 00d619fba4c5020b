"""Reviewer and admin actions: adjudication, annotator management, and the audit log
every one of them writes to (in the same transaction as the change)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from labeling.models import Item
from labeling.services.rankings import validate_tiers


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


