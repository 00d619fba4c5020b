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
On PostgreSQL that claim is one hand-written statement (`_held_and_claimed`, #19) that
also reads the annotator's held leases (a one-time filter: holding any but the wanted
number scans and locks nothing) and, after the LIMIT, the claimed item's candidates.
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

from core import rows
from core.errors import DomainError
from guidelines.services import (
    acknowledgement_needed,
    guideline_current_version,
)
from labeling.models import Assignment, Item, Membership, Project, Prompt

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
    wanted = 1 if prefetch else 0
    try:
        held, assignment = _claim(annotator=annotator, project=project, wanted=wanted)
    except IntegrityError:
        # This annotator's concurrent request (two tabs, a double-fired request)
        # claimed the same item between our snapshot and our row lock: answer as a
        # refresh would.
        held, assignment = _held_ids(annotator, project), None
    if len(held) > wanted:  # a refresh: the one on screen (or pre-loaded) again
        assignment = Assignment.objects.select_related("item__prompt", "guideline_version").get(
            pk=held[wanted])
    if assignment is not None:
        assignment.item.project = project
    return assignment


def _held_ids(annotator: AbstractBaseUser, project: Project) -> list[int]:
    # Ids only: after a submit nothing is held, and this narrow query costs a fraction
    # of the joined one to build (#19); a refresh loads the one it shows.
    return list(active_assignments(annotator=annotator, project=project)
                .values_list("pk", flat=True)[:MAX_ACTIVE_LEASES])


def _claim(*, annotator: AbstractBaseUser, project: Project, wanted: int
           ) -> tuple[list[int], Assignment | None]:
    """The ids of the leases the annotator holds (oldest first, at most
    MAX_ACTIVE_LEASES) and, when they hold exactly `wanted`, a new claim: None when
    nothing is left for them (or they hold more or fewer)."""
    postgresql = connection.vendor == "postgresql"
    if not postgresql:  # read outside the claim's (IMMEDIATE, on SQLite) transaction
        held = _held_ids(annotator, project)
        if len(held) != wanted:
            return held, None
    gold = bool(project.gold_rate) and random.random() < project.gold_rate  # noqa: S311
    with transaction.atomic():
        if postgresql:
            held, item, texts = _held_and_claimed(annotator, project, wanted, gold=gold)
            if gold and item is None and len(held) == wanted:  # no gold left for them
                held, item, texts = _held_and_claimed(annotator, project, wanted, gold=False)
        else:
            item = _lock_first(_gold_items(annotator, project)) if gold else None
            if item is None:
                item = _lock_first(_open_items(annotator, project))
            texts = {} if item is None else {
                cid: (text, html) for cid, text, html in item.item_candidates.values_list(
                    "candidate_id", "candidate__text", "candidate__text_html")}
        if item is None:
            return held, None
        now = timezone.now()
        candidate_ids = list(texts)
        random.shuffle(candidate_ids)  # blind and shuffled per annotator; recorded
        assignment = Assignment(
            item=item, annotator=annotator, display_order=candidate_ids,
            guideline_version=guideline_current_version(project=project),
            leased_at=now, expires_at=now + timedelta(minutes=project.lease_minutes),
        )
        if postgresql:
            _insert_with_lease(assignment)
        else:
            assignment.save(force_insert=True)
            Item.objects.filter(pk=item.pk).update(active_leases=F("active_leases") + 1)
        assignment.candidate_texts = texts  # the workspace shows them without a re-read
    return held, assignment


CandidateTexts = dict[int, tuple[str, str]]  # candidate id -> (text, its stored HTML)


def _held_and_claimed(annotator: AbstractBaseUser, project: Project, wanted: int, *,
                      gold: bool) -> tuple[list[int], Item | None, CandidateTexts]:
    """PostgreSQL: the held lease ids, and (only when exactly `wanted` are held) the
    claimed item, locked, with its prompt and its candidates' texts: one statement
    where the ORM took three (#19). The same rows as `_open_items` / `_gold_items` and
    the same partial indexes (item_open_*, item_gold): their predicates are repeated
    verbatim so the planner can use them."""
    now = timezone.now()
    params = {"user": annotator.pk, "project": project.pk, "active": Assignment.Status.ACTIVE,
              "now": now, "max": MAX_ACTIVE_LEASES, "wanted": wanted, "open": Item.Status.OPEN}
    if gold:  # exempt from the overlap: everyone who draws one ranks it
        rule, order = "i.is_gold", "i.id"
    else:
        rule = "NOT i.is_gold AND i.rankings_count < (i.required_rankings - i.active_leases)"
        order = _ORDER.get(project.assignment_strategy, "i.id")
        if project.unsafe_daily_cap is not None:
            # Evaluated once per statement (an uncorrelated subquery), as the ORM path's count.
            rule += (" AND (NOT i.flagged_unsafe OR (SELECT count(*) FROM labeling_assignment s"
                     " JOIN labeling_item si ON si.id = s.item_id WHERE s.annotator_id = %(user)s"
                     " AND si.project_id = %(project)s AND si.flagged_unsafe"
                     " AND s.leased_at >= %(today)s) < %(cap)s)")
            params["today"] = now.replace(hour=0, minute=0, second=0, microsecond=0)
            params["cap"] = project.unsafe_daily_cap
    # `held.n = %(wanted)s` is a one-time filter: holding another number scans and locks
    # nothing. The candidates are read after the LIMIT, for the one locked row, each by
    # its primary key: OFFSET 0 keeps the planner from joining labeling_candidate as a
    # whole, which it did with stale statistics (a hash join over a sequential scan of
    # every candidate: 2.6 of the statement's 2.9 ms at 8,000 candidates).
    sql = (
        "WITH held AS (SELECT a.id, a.leased_at FROM labeling_assignment a"  # noqa: S608 - no input in the SQL text
        " JOIN labeling_item h ON h.id = a.item_id WHERE a.annotator_id = %(user)s"
        " AND h.project_id = %(project)s AND a.status = %(active)s AND a.expires_at > %(now)s"
        " ORDER BY a.leased_at, a.id LIMIT %(max)s)"
        " SELECT held.ids, claim.*, cands.ids, cands.texts, cands.htmls"
        " FROM (SELECT array_agg(id ORDER BY leased_at, id) AS ids, count(*) AS n FROM held) held"
        f" LEFT JOIN LATERAL (SELECT i.id AS claimed, {rows.select_list(Item, 'i')},"
        f" {rows.select_list(Prompt, 'p')}"
        " FROM labeling_item i JOIN labeling_prompt p ON p.id = i.prompt_id"
        " WHERE held.n = %(wanted)s AND i.project_id = %(project)s AND i.status = %(open)s"
        f" AND {rule} AND NOT EXISTS (SELECT 1 FROM labeling_assignment u"
        " WHERE u.item_id = i.id AND u.annotator_id = %(user)s)"
        f" ORDER BY {order} LIMIT 1 FOR UPDATE OF i SKIP LOCKED) claim ON true"
        " LEFT JOIN LATERAL (SELECT array_agg(ic.candidate_id ORDER BY ic.position) AS ids,"
        " array_agg(c.text ORDER BY ic.position) AS texts,"
        " array_agg(c.text_html ORDER BY ic.position) AS htmls FROM labeling_itemcandidate ic"
        " JOIN LATERAL (SELECT c.text, c.text_html FROM labeling_candidate c"
        " WHERE c.id = ic.candidate_id OFFSET 0) c ON true"
        " WHERE ic.item_id = claim.claimed) cands ON true"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    held = row[0] or []
    if row[1] is None:
        return held, None, {}
    start = 2 + rows.width(Item)
    item = rows.instance(Item, row[2:start])
    item.prompt = rows.instance(Prompt, row[start:start + rows.width(Prompt)])
    ids, texts, htmls = (value or [] for value in row[-3:])
    return held, item, {cid: (text, html) for cid, text, html in zip(ids, texts, htmls, strict=True)}


_ORDER = {  # the ORM path's orderings (_open_items), as SQL
    Project.Strategy.COMPLETE_FIRST: "i.rankings_count DESC, i.id",
    # Items the reward model is least sure about first; unscored ones after them.
    Project.Strategy.UNCERTAIN_FIRST: "i.uncertainty ASC NULLS LAST, i.id",
}


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
