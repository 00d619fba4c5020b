"""What every submission shares, rankings and written answers alike: the idempotent
skeleton (`submit_once`), the checks on a locked item and assignment
(`submission_gate`), giving the lease back, and skipping an item."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F
from django.utils import timezone

from core import rows
from guidelines.services import version_is_outdated
from labeling.models import Assignment, Item, Membership, Project
from labeling.services.assignment import InvalidRanking, SubmissionConflict

StoreResult = tuple[Any, bool, "SubmissionConflict | None"]


def submit_once(*, annotator: AbstractBaseUser, assignment_id: int, idempotency_key: str,
                model: type[models.Model], store: Callable[[Item, Assignment], StoreResult],
                members_only: bool = False) -> tuple[Any, bool]:
    """The skeleton every submission follows (a ranking, a written answer): one per
    (annotator, Idempotency-Key), a retry returns what was stored, a conflict is raised
    after the commit (the lease release it made must be kept).

    `store(item, assignment)` runs with the item and the assignment locked (in that
    order, everywhere) once the key is known to be new; it validates, calls
    `submission_gate` and writes, returning (row or None, created, conflict). `model` is
    the row's model, unique on (annotator, idempotency_key).

    Assignment.DoesNotExist when the assignment is not the annotator's, or with
    `members_only` (the API: its view no longer reads the assignment first) when they
    are no longer in its project; either is checked before the key."""
    try:
        stored, created, conflict = _submit_locked(annotator, assignment_id, idempotency_key, model,
                                                   store, members_only)
    except IntegrityError:
        # A concurrent twin with the same key won the insert: return what it stored.
        # (Or, on a leased assignment, whose key is not looked up first: the key was used
        # for another item. Nothing was stored; the answer is the look-up's.)
        existing = model.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        if existing.assignment_id != assignment_id:
            raise SubmissionConflict("this Idempotency-Key was used for another item",
                                     code="idempotency_key_reused") from None
        return existing, False
    if conflict is not None:
        raise conflict  # after the commit, so the lease release it made is kept
    return stored, created


@transaction.atomic
def _submit_locked(annotator: AbstractBaseUser, assignment_id: int, idempotency_key: str,
                   model: type[models.Model], store: Callable[[Item, Assignment], StoreResult],
                   members_only: bool) -> StoreResult:
    item, assignment = locked_assignment_of(annotator, assignment_id, members_only=members_only)
    # After the ownership check, so that someone else's assignment answers 404 first.
    if not idempotency_key or len(idempotency_key) > 100:
        raise InvalidRanking("an Idempotency-Key of 1 to 100 characters is required")
    # A retry finds its assignment already submitted. On a leased assignment no row of
    # this key can be for it, so the look-up is skipped (the hot path): a key already
    # used for another item fails the insert on ranking_idempotent /
    # demonstration_idempotent, and submit_once answers idempotency_key_reused.
    if assignment.status == Assignment.Status.ACTIVE:
        return store(item, assignment)
    existing = model.objects.filter(annotator=annotator, idempotency_key=idempotency_key).first()
    if existing is not None:
        if existing.assignment_id != assignment.pk:
            raise SubmissionConflict("this Idempotency-Key was used for another item",
                                     code="idempotency_key_reused")
        existing.assignment = assignment
        return existing, False, None
    return store(item, assignment)


def submission_gate(assignment: Assignment, item: Item, *, what: str
                    ) -> tuple[bool, SubmissionConflict | None]:
    """The checks every submission on a locked item and assignment passes (rankings and
    demonstrations alike). Returns whether the assignment still holds its lease, and a
    conflict to raise after the commit: the lease release it made must be kept."""
    if assignment.status in {Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED}:
        raise SubmissionConflict(f"this assignment was already {assignment.status}",
                                 code=f"already_{assignment.status}")
    holds_lease = assignment.status == Assignment.Status.ACTIVE
    if not holds_lease and Membership.objects.filter(
        project_id=item.project_id, user_id=assignment.annotator_id, paused=True
    ).exists():
        # Pausing releases every lease, so only a lease-less submission can come from a
        # paused annotator (the hot path, with its lease, pays no query). Work sent after
        # the pause is refused: pausing stops the annotator's work, including the item
        # that was on screen (README, "Annotators").
        raise SubmissionConflict("an admin paused your work in this project; this "
                                 f"{what} was not stored", code="paused")
    if item.status != Item.Status.OPEN:
        raise SubmissionConflict(f"this item no longer takes {what}s", code="item_closed")
    if version_is_outdated(assignment.guideline_version):
        release_lease(assignment, item, holds_lease, status=Assignment.Status.EXPIRED)
        return holds_lease, SubmissionConflict(
            "a major guideline change was published after you opened this item; read it, "
            f"then continue (this {what} was not stored)", code="guideline_changed")
    lease_live = holds_lease and assignment.expires_at > timezone.now()
    # An expired lease no longer reserves a slot: accept only if one is free.
    free = item.required_rankings - item.rankings_count - item.active_leases + int(holds_lease)
    if not lease_live and not item.is_gold and free <= 0:
        release_lease(assignment, item, holds_lease, status=Assignment.Status.EXPIRED)
        return holds_lease, SubmissionConflict(
            "your time on this item ran out and others have filled it; "
            f"your {what} was not stored", code="lease_expired")
    return holds_lease, None


def locked_assignment_of(annotator: AbstractBaseUser, assignment_id: int, *,
                         members_only: bool = False) -> tuple[Item, Assignment]:
    """The annotator's own assignment and its item (with its project), both locked.
    Assignment.DoesNotExist when the assignment isn't theirs, or with `members_only`
    when they are no longer in its project (staff are members of every project).

    Lock order everywhere: the item, then the assignment. `assignments_expire` and
    `leases_release` take the item first and only then touch the assignment, so the
    one who holds the item never waits for someone who holds its assignment and waits
    for the item (the deadlock bench/load_bench.py found when the sweep did it the
    other way round)."""
    if connection.vendor != "postgresql":
        item = locked_item_of(annotator, assignment_id)
        if members_only and not (annotator.is_staff or Membership.objects.filter(
                project_id=item.project_id, user=annotator).exists()):
            raise Assignment.DoesNotExist(f"assignment {assignment_id}: not in its project now")
        return item, Assignment.objects.select_for_update().get(pk=assignment_id)
    # One statement where the ORM took two (and the view a third, #19). PostgreSQL's
    # LockRows locks the rows of a result row one table at a time in the order of the
    # OF list (nodeLockRows.c walks the plan's row marks, which keep that order): the
    # item, and only once it holds the item, the assignment. Waiting for the item it
    # holds nothing of this statement, so the order is the two-statement one it
    # replaces (tests/integration/test_assignment_concurrency.py checks it: while it
    # waits for a locked assignment, its item is already locked). After a wait, the row
    # is re-read in its latest version (READ COMMITTED's recheck), as the separate
    # SELECT ... FOR UPDATE was.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM labeling_membership m WHERE m.project_id = i.project_id"  # noqa: S608 - no input in the SQL text
            f" AND m.user_id = %(user)s), {rows.select_list(Item, 'i')},"
            f" {rows.select_list(Project, 'p')}, {rows.select_list(Assignment, 'a')}"
            " FROM labeling_assignment a JOIN labeling_item i ON i.id = a.item_id"
            " JOIN labeling_project p ON p.id = i.project_id"
            " WHERE a.id = %(assignment)s AND a.annotator_id = %(user)s FOR UPDATE OF i, a",
            {"user": annotator.pk, "assignment": assignment_id})
        row = cursor.fetchone()
    if row is None:
        raise Assignment.DoesNotExist(f"assignment {assignment_id} is not this annotator's")
    if members_only and not (row[0] or annotator.is_staff):  # staff: admins of every project
        raise Assignment.DoesNotExist(f"assignment {assignment_id}: not in its project now")
    project_at, assignment_at = 1 + rows.width(Item), 1 + rows.width(Item) + rows.width(Project)
    item = rows.instance(Item, row[1:project_at])
    item.project = rows.instance(Project, row[project_at:assignment_at])
    assignment = rows.instance(Assignment, row[assignment_at:])
    assignment.item = item
    return item, assignment


def locked_item_of(annotator: AbstractBaseUser, assignment_id: int) -> Item:
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


def release_lease(assignment: Assignment, item: Item, holds_lease: bool, *, status: str) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(status=status, finished_at=timezone.now())
    if holds_lease:
        Item.objects.filter(pk=item.pk, active_leases__gt=0).update(
            active_leases=F("active_leases") - 1
        )
        item.active_leases = max(0, item.active_leases - 1)


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
        if Membership.objects.filter(project_id=item.project_id, user=annotator, paused=True).exists():
            raise SubmissionConflict("an admin paused your work in this project", code="paused")
        raise SubmissionConflict(f"this assignment was already {assignment.status}",
                                 code=f"already_{assignment.status}")
    Assignment.objects.filter(pk=assignment.pk).update(skip_reason=reason[:500])
    release_lease(assignment, item, True, status=Assignment.Status.SKIPPED)
    assignment.refresh_from_db()
    return assignment
