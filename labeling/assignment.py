"""The hot path: hand an annotator their next item, take their ranking back.

`next_item` claims an item with a lease. On PostgreSQL the claim is
`SELECT ... FOR UPDATE SKIP LOCKED` over a partial index that holds only items with a
free slot (rankings + active leases < required), so two annotators never take the
last slot of one item and the scan stays short at millions of items. On SQLite the
IMMEDIATE transaction serializes claims, which is enough for the demo.

Query plan on PostgreSQL 15 at 1,000,000 items (bench/hot_path_bench.py, after ANALYZE):

    Limit -> LockRows -> Merge Anti Join (labeling_item.id = u0.item_id)
      -> Index Scan using item_open_fifo on labeling_item  (project_id = $1)
      -> Index Scan using assignment_once_per_item on labeling_assignment u0
           (annotator_id = $2)
    Execution Time: 0.26 ms

Since the claim also brings the item's prompt (the workspace renders it without another
query), the open-item side is a nested loop: the same partial index scan, then one
labeling_prompt_pkey lookup for the one row the LIMIT keeps (0.04 ms at 3,000 items).
The open-item side walks the partial index from the oldest item with a free slot. The
anti-join side's cost grows with this annotator's assignments; with about a million
assignments and stale statistics the planner's merge anti-join read ~26k buffers
(222 ms warm), and after VACUUM ANALYZE it switched to a nested-loop anti-join
(0.09 ms, 9 buffers). Keep autovacuum on (or VACUUM ANALYZE item and assignment on a
schedule) for large projects.

`ranking_submit` validates the ranking against the item's fixed candidate set, is
idempotent on (annotator, idempotency key), releases the lease and updates the item's
counts under the item's row lock, so the overlap is never exceeded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from core.errors import DomainError
from guidelines.services import (
    acknowledgement_needed,
    guideline_current_version,
    version_is_outdated,
)
from labeling.blind import shown_ids
from labeling.models import Assignment, Item, Membership, Project, Ranking
from labeling.quality import item_decide

MAX_ACTIVE_LEASES = 2  # the item on screen and the one pre-loaded behind it


class InvalidRanking(DomainError):
    code = "invalid_ranking"


class SubmissionConflict(DomainError):
    """The ranking cannot be stored as things stand (HTTP 409)."""

    code = "conflict"
    http_status = 409

    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message)
        self.code = code


class GuidelineAckRequired(SubmissionConflict):
    """The annotator must read and acknowledge the guideline first (HTTP 409)."""

    def __init__(self, version_number: int) -> None:
        super().__init__(
            f"read and acknowledge guideline version {version_number} before the next item",
            code="guideline_ack_required",
        )
        self.version_number = version_number


@dataclass(frozen=True)
class RankingInput:
    tiers: list[list[str]]  # the annotator's opaque ids (labeling.blind), best first
    unsafe: bool = False
    all_bad: bool = False
    needs_expert: bool = False
    rationale: str = ""
    strength: int | None = None
    duration_ms: int | None = None


# --------------------------------------------------------------------------- claim


def active_assignments(*, annotator: AbstractBaseUser, project: Project) -> QuerySet[Assignment]:
    return (
        Assignment.objects.filter(
            annotator=annotator, item__project=project, status=Assignment.Status.ACTIVE,
            expires_at__gt=timezone.now(),
        )
        .select_related("item__prompt", "guideline_version")
        .order_by("leased_at", "id")
    )


def next_item(*, annotator: AbstractBaseUser, project: Project, prefetch: bool = False
              ) -> Assignment | None:
    """The annotator's current assignment (a refresh shows the same item), or a new
    claim. With `prefetch`, the one behind it, so the next item is ready before the
    current one is submitted. None when nothing is left for this annotator.

    The assignment comes with its item, prompt, project and guideline version loaded
    (the workspace renders it without reading them again)."""
    paused = getattr(project, "member_paused", None)  # access.project_for read it already
    if paused is None:
        paused = Membership.objects.filter(user=annotator, project=project, paused=True).exists()
    if paused:
        raise SubmissionConflict("an admin paused your work in this project; ask them why",
                                 code="paused")
    pending = acknowledgement_needed(user=annotator, project=project)
    if pending is not None:
        raise GuidelineAckRequired(pending.number)
    held = list(active_assignments(annotator=annotator, project=project)[:MAX_ACTIVE_LEASES])
    wanted = 1 if prefetch else 0
    if len(held) > wanted:
        assignment = held[wanted]
    elif prefetch and not held:
        return None  # nothing on screen: the caller asks for the current item first
    else:
        try:
            assignment = _claim(annotator=annotator, project=project)
        except IntegrityError:
            # This annotator's concurrent request (two tabs, a double-fired request)
            # claimed the same item between our snapshot and our row lock: answer as a
            # refresh would.
            held = list(active_assignments(annotator=annotator, project=project)[:MAX_ACTIVE_LEASES])
            assignment = held[wanted] if len(held) > wanted else None
    if assignment is not None:
        assignment.item.project = project
    return assignment


def _claim(*, annotator: AbstractBaseUser, project: Project) -> Assignment | None:
    with transaction.atomic():
        item = None
        if project.gold_rate and random.random() < project.gold_rate:  # noqa: S311
            item = _lock_first(_gold_items(annotator, project))
        if item is None:
            item = _lock_first(_open_items(annotator, project))
        if item is None:
            return None
        now = timezone.now()
        texts = {cid: (text, html) for cid, text, html in item.item_candidates.values_list(
            "candidate_id", "candidate__text", "candidate__text_html")}
        candidate_ids = list(texts)
        random.shuffle(candidate_ids)  # blind and shuffled per annotator; recorded
        assignment = Assignment.objects.create(
            item=item, annotator=annotator, display_order=candidate_ids,
            guideline_version=guideline_current_version(project=project),
            leased_at=now, expires_at=now + timedelta(minutes=project.lease_minutes),
        )
        assignment.candidate_texts = texts  # the workspace shows them without a re-read
        Item.objects.filter(pk=item.pk).update(active_leases=F("active_leases") + 1)
    return assignment


def _lock_first(items: QuerySet[Item]) -> Item | None:
    items = items.select_related("prompt")
    if connection.features.has_select_for_update_skip_locked:
        items = items.select_for_update(skip_locked=True, of=("self",))
    return items.first()


def _unseen(annotator: AbstractBaseUser) -> Exists:
    return Exists(Assignment.objects.filter(item=OuterRef("pk"), annotator=annotator))


def _open_items(annotator: AbstractBaseUser, project: Project) -> QuerySet[Item]:
    items = Item.objects.filter(
        project=project, status=Item.Status.OPEN, is_gold=False,
        rankings_count__lt=F("required_rankings") - F("active_leases"),
    ).exclude(_unseen(annotator))
    if project.unsafe_daily_cap is not None and _unsafe_seen_today(annotator, project) >= (
        project.unsafe_daily_cap
    ):
        items = items.filter(flagged_unsafe=False)
    if project.assignment_strategy == Project.Strategy.COMPLETE_FIRST:
        return items.order_by("-rankings_count", "id")
    if project.assignment_strategy == Project.Strategy.UNCERTAIN_FIRST:
        # Items the reward model is least sure about first; unscored ones after them.
        return items.order_by(F("uncertainty").asc(nulls_last=True), "id")
    return items.order_by("id")


def _gold_items(annotator: AbstractBaseUser, project: Project) -> QuerySet[Item]:
    # Gold items are exempt from the overlap: everyone who draws one ranks it.
    return Item.objects.filter(
        project=project, status=Item.Status.OPEN, is_gold=True
    ).exclude(_unseen(annotator)).order_by("id")


def _unsafe_seen_today(annotator: AbstractBaseUser, project: Project) -> int:
    start = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return Assignment.objects.filter(
        annotator=annotator, item__project=project, item__flagged_unsafe=True,
        leased_at__gte=start,
    ).count()


def assignments_expire(*, now: timezone.datetime | None = None, limit: int = 1000) -> int:
    """Return expired leases to the pool. Run by Celery beat; returns how many.

    Locks in the hot path's order, the item then the assignment: a submit holds its
    item's lock while it locks its assignment, so a sweep that locked the assignment
    first and then waited for the item deadlocked with it (bench/load_bench.py). An item
    another transaction holds is skipped; the next sweep takes its leases."""
    now = now or timezone.now()
    expired = 0
    due = Assignment.objects.filter(status=Assignment.Status.ACTIVE, expires_at__lte=now)
    for assignment_id, item_id in list(due.values_list("id", "item_id")[:limit]):
        with transaction.atomic():
            items = Item.objects.filter(pk=item_id)
            if connection.features.has_select_for_update_skip_locked:
                items = items.select_for_update(skip_locked=True)
            if items.values_list("pk", flat=True).first() is None:
                continue  # a submit or claim holds the item: next sweep
            if Assignment.objects.filter(
                pk=assignment_id, status=Assignment.Status.ACTIVE, expires_at__lte=now
            ).update(status=Assignment.Status.EXPIRED, finished_at=now):
                Item.objects.filter(pk=item_id, active_leases__gt=0).update(
                    active_leases=F("active_leases") - 1
                )
                expired += 1
    return expired


# --------------------------------------------------------------------------- submit


def validate_tiers(tiers: object, candidate_ids: set[int] | set[str], *, allow_ties: bool,
                   id_type: type = int) -> list[list]:
    """The ranking must be a permutation of the item's candidates, ties as groups. Ids are
    candidate ids (int) or, from annotators, the opaque ids they were shown (str)."""
    if not isinstance(tiers, list) or not tiers or not all(
        isinstance(tier, list) and tier for tier in tiers
    ):
        raise InvalidRanking("tiers must be a non-empty list of non-empty lists of candidate ids")
    flat = [cid for tier in tiers for cid in tier]
    if not all(isinstance(cid, id_type) and not isinstance(cid, bool) for cid in flat):
        raise InvalidRanking("candidate ids must be integers" if id_type is int else
                             "candidate ids must be the ids shown with the answers (strings)")
    duplicated = sorted({cid for cid in flat if flat.count(cid) > 1})
    missing = sorted(candidate_ids - set(flat))
    extra = sorted(set(flat) - candidate_ids)
    problems = [
        f"{label}: {ids}" for label, ids in
        (("missing", missing), ("not in this item", extra), ("duplicated", duplicated)) if ids
    ]
    if problems:
        raise InvalidRanking("the ranking must cover each candidate once; " + "; ".join(problems))
    if not allow_ties and any(len(tier) > 1 for tier in tiers):
        raise InvalidRanking("this project does not allow ties")
    return [list(tier) for tier in tiers]


def _validate_pairwise(data: RankingInput, tiers: list[list[int]]) -> None:
    tie = len(tiers) == 1
    if data.all_bad and not tie:
        raise InvalidRanking("'both bad' is a tie: send both answers in one tier")
    if not tie and data.strength not in {1, 2, 3, 4}:
        raise InvalidRanking(
            "pairwise mode needs a strength: 1 negligibly/unsure, 2 slightly, 3 better, "
            "4 significantly better"
        )


def ranking_submit(
    *, annotator: AbstractBaseUser, assignment_id: int, data: RankingInput, idempotency_key: str
) -> tuple[Ranking, bool]:
    """Store one ranking; returns (ranking, created). A retry with the same key returns
    the stored ranking. Raises InvalidRanking (400) or SubmissionConflict (409)."""
    if not idempotency_key or len(idempotency_key) > 100:
        raise InvalidRanking("an Idempotency-Key of 1 to 100 characters is required")
    try:
        ranking, created, conflict = _submit(annotator, assignment_id, data, idempotency_key)
    except IntegrityError:
        # A concurrent twin with the same key won the insert: return what it stored.
        existing = Ranking.objects.filter(annotator=annotator, idempotency_key=idempotency_key)
        if existing.exists():
            return existing.get(), False
        raise
    if conflict is not None:
        raise conflict  # after the commit, so the lease release it made is kept
    return ranking, created


@transaction.atomic
def _submit(annotator: AbstractBaseUser, assignment_id: int, data: RankingInput,
            idempotency_key: str) -> tuple[Ranking | None, bool, SubmissionConflict | None]:
    # Lock order everywhere: the item, then the assignment. One statement finds the
    # caller's own assignment's item, locks it and brings its project along.
    item = _locked_item_of(annotator, assignment_id)
    project = item.project
    assignment = Assignment.objects.select_for_update().get(pk=assignment_id)
    existing = Ranking.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.assignment_id != assignment.pk:
            raise SubmissionConflict("this Idempotency-Key was used for another item",
                                     code="idempotency_key_reused")
        return existing, False, None
    if item.kind != Item.Kind.RANKING:
        raise InvalidRanking("this item asks for a written answer, not a ranking")
    # The annotator ranks the opaque ids they were shown; errors name only those.
    shown = shown_ids(assignment)  # from the recorded display order: no query
    tiers = [[shown[sid] for sid in tier] for tier in validate_tiers(
        data.tiers, set(shown), id_type=str,
        allow_ties=project.allow_ties or project.mode == Project.Mode.PAIRWISE,
    )]
    if project.mode == Project.Mode.PAIRWISE:
        _validate_pairwise(data, tiers)
    holds_lease, conflict = submission_gate(assignment, item, what="ranking")
    if conflict is not None:
        return None, False, conflict
    ranking = Ranking.objects.create(
        assignment=assignment, item=item, annotator=annotator, tiers=tiers,
        guideline_version_id=assignment.guideline_version_id, unsafe=data.unsafe,
        all_bad=data.all_bad, needs_expert=data.needs_expert, rationale=data.rationale,
        strength=data.strength, duration_ms=data.duration_ms, idempotency_key=idempotency_key,
    )
    Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.SUBMITTED,
                                                       finished_at=timezone.now())
    item.rankings_count += 1
    updates = {"rankings_count": F("rankings_count") + 1}
    if holds_lease:  # the lease goes back in the same UPDATE (the item row is locked)
        updates["active_leases"] = Greatest(F("active_leases") - 1, 0)
        item.active_leases = max(0, item.active_leases - 1)
    if data.unsafe:
        updates["flagged_unsafe"] = True
    if not item.is_gold and item.rankings_count >= item.required_rankings:
        updates["status"] = Item.Status.COMPLETE
    Item.objects.filter(pk=item.pk).update(**updates)
    if updates.get("status") == Item.Status.COMPLETE:
        item_completed(item_id=item.pk)
    return ranking, True, None


def submission_gate(assignment: Assignment, item: Item, *, what: str
                    ) -> tuple[bool, SubmissionConflict | None]:
    """The checks every submission on a locked item and assignment passes (rankings and
    demonstrations alike). Returns whether the assignment still holds its lease, and a
    conflict to raise after the commit: the lease release it made must be kept."""
    if assignment.status in {Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED}:
        raise SubmissionConflict(f"this assignment was already {assignment.status}",
                                 code=f"already_{assignment.status}")
    holds_lease = assignment.status == Assignment.Status.ACTIVE
    if item.status != Item.Status.OPEN:
        raise SubmissionConflict(f"this item no longer takes {what}s", code="item_closed")
    if version_is_outdated(assignment.guideline_version):
        _release(assignment, item, holds_lease, status=Assignment.Status.EXPIRED)
        return holds_lease, SubmissionConflict(
            "a major guideline change was published after you opened this item; read it, "
            f"then continue (this {what} was not stored)", code="guideline_changed")
    lease_live = holds_lease and assignment.expires_at > timezone.now()
    # An expired lease no longer reserves a slot: accept only if one is free.
    free = item.required_rankings - item.rankings_count - item.active_leases + int(holds_lease)
    if not lease_live and not item.is_gold and free <= 0:
        _release(assignment, item, holds_lease, status=Assignment.Status.EXPIRED)
        return holds_lease, SubmissionConflict(
            "your time on this item ran out and others have filled it; "
            f"your {what} was not stored", code="lease_expired")
    return holds_lease, None


def _locked_item_of(annotator: AbstractBaseUser, assignment_id: int) -> Item:
    """The item of the annotator's own assignment, locked (FOR UPDATE of the item only),
    with its project. Assignment.DoesNotExist when the assignment isn't theirs."""
    items = Item.objects.select_related("project").filter(
        assignments__pk=assignment_id, assignments__annotator=annotator)
    if connection.features.has_select_for_update_of:
        items = items.select_for_update(of=("self",))
    else:
        items = items.select_for_update()
    item = items.first()
    if item is None:
        raise Assignment.DoesNotExist(f"assignment {assignment_id} is not this annotator's")
    return item


def _release(assignment: Assignment, item: Item, holds_lease: bool, *, status: str) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(status=status, finished_at=timezone.now())
    if holds_lease:
        Item.objects.filter(pk=item.pk, active_leases__gt=0).update(
            active_leases=F("active_leases") - 1
        )
        item.active_leases = max(0, item.active_leases - 1)


def item_completed(*, item_id: int) -> None:
    """An item reached its required rankings: the agreement step decides it (accepted,
    disputed, or back to open for one more ranking under adaptive overlap); an accepted
    item of a project that asks for demonstrations "after" ranking gets one."""
    from labeling.demonstrations import demonstration_after_accept

    if item_decide(item_id=item_id) == Item.Status.ACCEPTED:
        item = Item.objects.select_related("project").get(pk=item_id)
        demonstration_after_accept(item=item)


@transaction.atomic
def assignment_skip(*, annotator: AbstractBaseUser, assignment_id: int, reason: str) -> Assignment:
    """Give the item back; this annotator will not be shown it again."""
    if not reason.strip():
        raise InvalidRanking("say why you skip (e.g. 'needs expertise', 'broken text')")
    # Lock order everywhere: the item, then the assignment.
    item_id = Assignment.objects.values_list("item_id", flat=True).get(pk=assignment_id,
                                                                      annotator=annotator)
    item = Item.objects.select_for_update().get(pk=item_id)
    assignment = Assignment.objects.select_for_update().get(pk=assignment_id)
    if assignment.status != Assignment.Status.ACTIVE:
        raise SubmissionConflict(f"this assignment was already {assignment.status}",
                                 code=f"already_{assignment.status}")
    Assignment.objects.filter(pk=assignment.pk).update(skip_reason=reason[:500])
    _release(assignment, item, True, status=Assignment.Status.SKIPPED)
    assignment.refresh_from_db()
    return assignment
