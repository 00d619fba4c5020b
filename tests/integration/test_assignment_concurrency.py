"""The hot path under real concurrency on PostgreSQL: SKIP LOCKED claims never exceed
the overlap, concurrent identical submissions store one ranking, expired leases come
back."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from labeling.blind import tiers_as_shown
from labeling.models import Assignment, Item, Ranking
from labeling.services.assignment import assignments_expire, next_item
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import UserFactory, make_items

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def wrapped(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_thirty_concurrent_annotators_give_exactly_three_rankings_per_item(project) -> None:  # noqa: ANN001
    assert connection.vendor == "postgresql"
    make_items(project, 20, k=3)
    users = [UserFactory(username=f"claimer{i}") for i in range(30)]

    def annotate(index: int) -> None:
        user = users[index]
        for n in range(25):
            assignment = next_item(annotator=user, project=project)
            if assignment is None:
                return
            ranking_submit(annotator=user, assignment_id=assignment.pk,
                           data=RankingInput(tiers=tiers_as_shown(
                               assignment, [[c] for c in assignment.display_order])),
                           idempotency_key=f"{user.pk}-{n}")

    errors = run_threads(30, annotate)

    assert errors == []
    per_item = Counter(Ranking.objects.values_list("item_id", flat=True))
    assert sorted(per_item.values()) == [3] * 20
    assert set(Item.objects.values_list("rankings_count", "active_leases")) == {(3, 0)}
    assert set(Item.objects.values_list("status", flat=True)) <= {"accepted", "disputed"}
    pairs = Ranking.objects.values_list("item_id", "annotator_id")
    assert len(set(pairs)) == len(pairs)


def test_fifty_identical_submissions_store_one_ranking(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1, k=4)
    assignment = next_item(annotator=annotator, project=project)
    tiers = tiers_as_shown(assignment, [[c] for c in assignment.display_order])
    results: list[int] = []

    def submit(index: int) -> None:
        ranking, _ = ranking_submit(annotator=annotator, assignment_id=assignment.pk,
                                    data=RankingInput(tiers=tiers), idempotency_key="double-click")
        results.append(ranking.pk)

    errors = run_threads(50, submit)

    assert errors == []
    assert Ranking.objects.count() == 1 and len(set(results)) == 1 and len(results) == 50
    assert Item.objects.get().rankings_count == 1


def test_expired_lease_is_reclaimed_by_another_annotator(project) -> None:  # noqa: ANN001
    project.overlap = 1
    project.save()
    make_items(project, 1)
    walked_away, other = UserFactory(), UserFactory()
    lease = next_item(annotator=walked_away, project=project)
    assert next_item(annotator=other, project=project) is None

    assignments_expire(now=lease.expires_at + timedelta(seconds=1))
    reclaimed = next_item(annotator=other, project=project)

    assert reclaimed is not None and reclaimed.item_id == lease.item_id
    assert Assignment.objects.get(pk=lease.pk).status == "expired"


def test_fifty_identical_demonstrations_store_one_and_writers_never_exceed_the_need(project) -> None:  # noqa: ANN001
    from labeling.models import Candidate, Demonstration, Prompt
    from labeling.services.demonstrations import DemonstrationInput, demonstration_items_create, demonstration_submit
    from tests.factories import PromptFactory

    project.demonstrations_per_prompt = 2
    project.save()
    for _ in range(6):
        PromptFactory(project=project)
    demonstration_items_create(project=project)
    first = UserFactory(username="writer-double-click")
    assignment = next_item(annotator=first, project=project)
    stored: list[int] = []

    def double_click(index: int) -> None:
        demonstration, _ = demonstration_submit(
            annotator=first, assignment_id=assignment.pk, idempotency_key="double-click",
            data=DemonstrationInput(text="The same answer, sent fifty times."))
        stored.append(demonstration.pk)

    assert run_threads(50, double_click) == []
    assert len(stored) == 50 and len(set(stored)) == 1 and Demonstration.objects.count() == 1

    writers = [UserFactory(username=f"writer{i}") for i in range(20)]

    def write_all(index: int) -> None:
        for n in range(10):
            claimed = next_item(annotator=writers[index], project=project)
            if claimed is None:
                return
            demonstration_submit(annotator=writers[index], assignment_id=claimed.pk,
                                 idempotency_key=f"{index}-{n}", data=DemonstrationInput(text=f"w{index}"))

    assert run_threads(20, write_all) == []
    per_item = Counter(Demonstration.objects.values_list("item_id", flat=True))
    assert sorted(per_item.values()) == [2] * Prompt.objects.filter(project=project).count()
    assert set(Item.objects.values_list("status", "rankings_count", "active_leases")) == {("accepted", 2, 0)}
    assert Candidate.objects.filter(origin="human").count() == Demonstration.objects.count() == 12


def test_the_lease_sweep_never_deadlocks_with_a_submit_holding_the_item(project, annotator) -> None:  # noqa: ANN001
    """A submit locks the item, then the assignment; the sweep used to lock the expired
    assignment, then wait for the item: PostgreSQL killed one of them (a 500)."""
    make_items(project, 1, k=3)
    assignment = next_item(annotator=annotator, project=project)
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    item_locked, sweep_done = threading.Event(), threading.Event()
    swept: list[int] = []

    def submit_like(index: int) -> None:
        if index == 0:  # the submit's lock order: the item, then (after a pause) the assignment
            with transaction.atomic():
                Item.objects.select_for_update().get(pk=assignment.item_id)
                item_locked.set()
                sweep_done.wait(timeout=10)
                Assignment.objects.select_for_update().get(pk=assignment.pk)
        else:
            item_locked.wait(timeout=10)
            swept.append(assignments_expire())
            sweep_done.set()

    errors = run_threads(2, submit_like)

    assert errors == []
    assert swept == [0]  # the held item was left for the next sweep
    assert assignments_expire() == 1
    assert Item.objects.get().active_leases == 0


def test_the_one_statement_submit_locks_the_item_before_it_waits_for_the_assignment(
        project, annotator) -> None:  # noqa: ANN001
    """The submit's one `SELECT ... FOR UPDATE OF item, assignment` keeps the lock order
    of the two statements it replaced (#19): while it waits for an assignment another
    transaction holds, it already holds the item (so the sweep, which takes the item
    first with SKIP LOCKED, passes it by instead of deadlocking)."""
    from django.db import DatabaseError

    from labeling.services.submission import locked_assignment_of

    make_items(project, 1, k=3)
    assignment = next_item(annotator=annotator, project=project)
    held, checked = threading.Event(), threading.Event()
    item_was_locked: list[bool] = []
    locked: list[int] = []

    def waiting_for_locks() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND wait_event_type = 'Lock'")
            return cursor.fetchone()[0]

    def act(index: int) -> None:
        if index == 0:  # holds the assignment (not its item) until the check is done
            with transaction.atomic():
                Assignment.objects.select_for_update().get(pk=assignment.pk)
                held.set()
                checked.wait(timeout=20)
        elif index == 1:  # the submit's read: blocks on the assignment
            held.wait(timeout=10)
            with transaction.atomic():
                item, _ = locked_assignment_of(annotator, assignment.pk, members_only=False)
                locked.append(item.pk)
        else:  # once the submit waits, is its item locked?
            held.wait(timeout=10)
            for _ in range(200):
                if waiting_for_locks():
                    break
                threading.Event().wait(0.05)
            try:
                with transaction.atomic():
                    Item.objects.select_for_update(nowait=True).get(pk=assignment.item_id)
                item_was_locked.append(False)
            except DatabaseError:
                item_was_locked.append(True)
            checked.set()

    errors = run_threads(3, act)

    assert errors == []
    assert item_was_locked == [True]
    assert locked == [assignment.item_id]
