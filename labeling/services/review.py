"""Reviewer and admin actions: adjudication, annotator management, and the audit log
every one of them writes to (in the same transaction as the change)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from labeling.axes import Axis, axes_from_config
from labeling.models import Item
from labeling.services.rankings import validate_tiers
from labeling.stats.axes import ACCEPTED, item_status


def _item_state(item: Item, axis: str | None = None) -> dict[str, Any]:
    state = {"status": item.status, "consensus": item.consensus,
             "required_rankings": item.required_rankings}
    if axis is not None:
        entry = (item.axes or {}).get(axis, {})
        state.update(axis=axis, axis_status=entry.get("status"), axis_consensus=entry.get("consensus"))
    return state


class Adjudication:
    SET_RANKING = "set_ranking"
    ACCEPT_CONSENSUS = "accept_consensus"
    DISCARD = "discard"
    SEND_BACK = "send_back"
    ALL = (SET_RANKING, ACCEPT_CONSENSUS, DISCARD, SEND_BACK)


@transaction.atomic
def item_adjudicate(*, item_id: int, reviewer: AbstractBaseUser, action: str, note: str = "",
                    tiers: list[list[int]] | None = None, extra_rankings: int = 1,
                    axis: str | None = None) -> Item:
    """A reviewer's decision on an item: set the final ranking, accept the consensus,
    discard it, or send it back for `extra_rankings` more rankings.

    In a project with axes, setting a ranking or accepting the consensus decides one axis
    (`axis`, the primary one when omitted): that axis becomes accepted, and the item is
    accepted once every required axis is, so a reviewer settles only what disagrees.
    Discarding and sending back act on the whole item."""
    if action not in Adjudication.ALL:
        raise DomainError(f"unknown action {action!r}; use one of {', '.join(Adjudication.ALL)}")
    item = Item.objects.select_for_update().select_related("project").get(pk=item_id)
    decides_axis = bool(item.project.axes) and action in (Adjudication.SET_RANKING,
                                                           Adjudication.ACCEPT_CONSENSUS)
    axes = axes_from_config(item.project.axes)
    if axis is not None and not item.project.axes:
        raise DomainError("this project has no axes; leave the axis out")
    if decides_axis:
        axis = _axis_of(axes, axis).key
    elif axis is not None:
        raise DomainError(f"{action.replace('_', ' ')} acts on the whole item; leave the axis out")
    before = _item_state(item, axis)
    now = timezone.now()
    if decides_axis:
        _decide_axis(item, axes, axis, action, tiers)
        if item.status == Item.Status.ACCEPTED:
            item.decided_by, item.decided_at = reviewer, now
    elif action == Adjudication.SET_RANKING:
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
                             "required_rankings", "decision_note", "axes"])
    audit(actor=reviewer, project=item.project, action=f"item.{action}", target=item,
          before=before, after=_item_state(item, axis), note=note)
    return item


def _axis_of(axes: list[Axis], key: str | None) -> Axis:
    if key is None:
        return axes[0]
    for axis in axes:
        if axis.key == key:
            return axis
    raise DomainError(f"unknown axis {key!r}; this project's axes are "
                      f"{', '.join(a.key for a in axes)}")


def _decide_axis(item: Item, axes: list[Axis], key: str, action: str,
                 tiers: list[list[int]] | None) -> None:
    """Accept one axis (with the reviewer's ranking, or its consensus), then the item's
    status from every required axis. The primary axis's consensus is Item.consensus."""
    figures = {k: dict(v) for k, v in (item.axes or {}).items()}
    entry = figures.setdefault(key, {})
    if action == Adjudication.SET_RANKING:
        candidate_ids = set(item.item_candidates.values_list("candidate_id", flat=True))
        entry["consensus"] = validate_tiers(tiers, candidate_ids, allow_ties=True)
    elif not entry.get("consensus"):
        raise DomainError(f"axis {key} has no consensus yet; set its ranking instead")
    entry["status"] = ACCEPTED
    entry["adjudicated"] = True
    item.axes = figures
    if key == axes[0].key:
        item.consensus = entry["consensus"]
    if item_status(axes, figures) == ACCEPTED:
        item.status = Item.Status.ACCEPTED


# --------------------------------------------------------------------------- people


