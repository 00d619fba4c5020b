"""Go back: an annotator changes a ranking they sent, while its item is not decided yet.

The new ranking supersedes the old one (rankings are immutable; the old row points at the
new one, so agreement, consensus and exports read only the live one), the change is
audited, and the item's agreement (when it has one) and the annotator figures are
recomputed. Only their last few submissions can be changed (`REVISABLE_LAST`), and only
while the item is still open: once decided, a reviewer's decision stands on the rankings
it saw."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit
from labeling.blind import shown_ids
from labeling.models import Assignment, Item, Project, Ranking
from labeling.services.assignment import InvalidRanking, SubmissionConflict
from labeling.services.quality import item_figures, quality_refresh_soon
from labeling.services.rankings import RankingInput, _validate_pairwise, resolve_labels
from labeling.services.submission import locked_item_of

REVISABLE_LAST = 5  # how many of their latest submissions an annotator can go back to


@dataclass(frozen=True)
class Sent:
    ranking: Ranking
    revisable: bool


def recent_rankings(*, annotator: AbstractBaseUser, project: Project) -> list[Sent]:
    """Their last few live rankings in the project, newest first, each with whether it
    can still be changed (its item is open)."""
    rankings = (Ranking.objects.filter(annotator=annotator, item__project=project,
                                       superseded_by__isnull=True)
                .select_related("item__prompt", "assignment").order_by("-id")[:REVISABLE_LAST])
    return [Sent(r, r.item.status == Item.Status.OPEN) for r in rankings]


def ranking_revise(*, annotator: AbstractBaseUser, assignment_id: int, data: RankingInput,
                   idempotency_key: str) -> tuple[Ranking, bool]:
    """Replace the annotator's ranking of this assignment's item; (new ranking, created).
    A retry with the same Idempotency-Key returns the stored one. SubmissionConflict (409)
    when the item is decided, the ranking is not among their last few, or nothing was sent."""
    if not idempotency_key or len(idempotency_key) > 100:
        raise InvalidRanking("an Idempotency-Key of 1 to 100 characters is required")
    with transaction.atomic():
        item = locked_item_of(annotator, assignment_id)  # lock order: the item, then the rest
        assignment = Assignment.objects.select_for_update().get(pk=assignment_id)
        existing = Ranking.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.assignment_id != assignment.pk:
                raise SubmissionConflict("this Idempotency-Key was used for another item",
                                         code="idempotency_key_reused")
            return existing, False
        old = Ranking.objects.select_for_update().filter(
            assignment=assignment, superseded_by__isnull=True).first()
        if old is None:
            raise SubmissionConflict("there is no ranking of yours to change on this item",
                                     code="nothing_to_change")
        if item.status != Item.Status.OPEN:
            raise SubmissionConflict(f"this item is already {item.status}: its ranking can't "
                                     "be changed any more", code="item_decided")
        latest = set(Ranking.objects.filter(annotator=annotator, item__project=item.project,
                                            superseded_by__isnull=True)
                     .order_by("-id").values_list("id", flat=True)[:REVISABLE_LAST])
        if old.pk not in latest:
            raise SubmissionConflict(f"only your last {REVISABLE_LAST} items can be changed",
                                     code="too_old")
        project = item.project
        shown = shown_ids(assignment)
        resolved = resolve_labels(project, data, shown)
        tiers = resolved.tiers
        if project.mode == Project.Mode.PAIRWISE:
            _validate_pairwise(data, tiers)
        # One live ranking per (item, annotator) is a constraint: the old one steps aside
        # (pointing at itself) before the new one is written, then points at the new one.
        Ranking.objects.filter(pk=old.pk).update(superseded_by=old.pk)
        new = Ranking.objects.create(
            assignment=assignment, item=item, annotator=annotator, tiers=tiers,
            labels=resolved.labels, safety=resolved.safety,
            guideline_version_id=old.guideline_version_id, unsafe=data.unsafe,
            all_bad=data.all_bad, needs_expert=data.needs_expert, rationale=data.rationale,
            strength=data.strength, duration_ms=data.duration_ms, idempotency_key=idempotency_key,
        )
        Ranking.objects.filter(pk=old.pk).update(superseded_by=new.pk)
        if data.unsafe and not item.flagged_unsafe:
            Item.objects.filter(pk=item.pk).update(flagged_unsafe=True)
        _agreement_refresh(item)
        audit(actor=annotator, project=project, action="ranking.revise", target=new,
              before={"ranking": old.pk, "tiers": old.tiers, "strength": old.strength,
                      **({"labels": old.labels} if old.labels else {})},
              after={"ranking": new.pk, "tiers": new.tiers, "strength": new.strength,
                     **({"labels": new.labels} if new.labels else {})})
    quality_refresh_soon(project_id=project.pk)
    return new, True


def _agreement_refresh(item: Item) -> None:
    """An open item that has agreement figures (adaptive overlap asked for one more
    ranking) gets them recomputed from its live rankings."""
    if item.agreement is None:
        return
    rankings = list(Ranking.objects.filter(item=item, superseded_by__isnull=True).order_by("id"))
    fields, _ = item_figures(item, rankings)
    Item.objects.filter(pk=item.pk).update(**fields)
