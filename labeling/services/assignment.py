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

Submissions (labeling/services/submission.py, rankings.py, demonstrations.py) take the
lease back; `assignments_expire` returns the leases of annotators who walked away.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone

from core.errors import DomainError
from guidelines.services import (
    acknowledgement_needed,
    guideline_current_version,
)
from labeling.models import Assignment, Item, Membership, Project

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
    # Ids first: after a submit nothing is held, and this narrow query costs a fraction
    # of the joined one to build (#19); a refresh loads the one it shows.
    held = list(active_assignments(annotator=annotator, project=project)
                .values_list("pk", flat=True)[:MAX_ACTIVE_LEASES])
    wanted = 1 if prefetch else 0
    if len(held) > wanted:
        assignment = Assignment.objects.select_related("item__prompt", "guideline_version").get(
            pk=held[wanted])
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
        assignment = Assignment(
            item=item, annotator=annotator, display_order=candidate_ids,
            guideline_version=guideline_current_version(project=project),
            leased_at=now, expires_at=now + timedelta(minutes=project.lease_minutes),
        )
        if connection.vendor == "postgresql":
            _insert_with_lease(assignment)
        else:
            assignment.save(force_insert=True)
            Item.objects.filter(pk=item.pk).update(active_leases=F("active_leases") + 1)
        assignment.candidate_texts = texts  # the workspace shows them without a re-read
    return assignment


def _insert_with_lease(assignment: Assignment) -> None:
    """PostgreSQL: the assignment's INSERT and its item's `active_leases + 1` in one
    statement (a data-modifying CTE: both or neither, the item row already locked by the
    claim), with the model's own column values, so a field added later is written too."""
    fields = [f for f in Assignment._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(assignment, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH lease AS (UPDATE labeling_item SET active_leases = active_leases + 1 "  # noqa: S608 - column names from the model
            "WHERE id = %s) "
            f"INSERT INTO labeling_assignment ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id",
            [assignment.item_id, *values],
        )
        assignment.pk = cursor.fetchone()[0]
    assignment._state.adding = False
    assignment._state.db = connection.alias


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
