"""The snapshot export's reader thread (core/read_ahead.py): batches arrive in order,
its errors reach the caller, the caller's errors and early stops end it, and it closes its
own database connection. On PostgreSQL, a build reads ahead and writes the same files."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections

from core.read_ahead import read_ahead


def readers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "read-ahead"]


class Source:
    """Batches [0], [1], ... up to ``count`` (None: forever), failing at ``fail_at``;
    records how many it made and whether it was closed."""

    def __init__(self, count: int | None = None, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.made, self.closed, self.thread = 0, False, None

    def __iter__(self) -> Iterator[list[int]]:
        self.thread = threading.current_thread()
        try:
            while self.count is None or self.made < self.count:
                if self.made == self.fail_at:
                    raise ValueError(f"batch {self.made} is broken")
                self.made += 1
                yield [self.made - 1]
        finally:
            self.closed = True


def test_batches_arrive_in_order_from_another_thread() -> None:
    source = Source(count=7)

    batches = list(read_ahead(iter(source)))

    assert batches == [[n] for n in range(7)]
    assert source.thread is not threading.current_thread()
    assert readers() == []


def test_an_error_in_the_reader_reaches_the_caller() -> None:
    source = Source(count=10, fail_at=3)
    received = []

    with pytest.raises(ValueError, match="batch 3 is broken"):
        for batch in read_ahead(iter(source)):
            received.append(batch)

    assert received == [[0], [1], [2]]  # what came before the error, then the error
    assert readers() == []


def test_an_error_in_the_caller_stops_the_reader() -> None:
    source = Source()  # endless: only the caller's stop ends it

    with pytest.raises(RuntimeError, match="writer failed"):
        for batch in read_ahead(iter(source), depth=2):
            if batch == [1]:
                raise RuntimeError("writer failed")

    assert readers() == []
    assert source.closed
    # Two taken, two waiting in the queue, one blocked on the full queue: no more.
    assert source.made <= 5


def test_a_caller_that_stops_early_stops_the_reader() -> None:
    source = Source()
    batches = read_ahead(iter(source))

    assert next(batches) == [0]
    batches.close()

    assert readers() == []
    assert source.closed
    assert source.made <= 4


@pytest.mark.django_db
def test_the_reader_closes_its_own_database_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    used, closed = [], []
    real_close = type(connections["default"]).close

    def close(wrapper: object) -> None:
        closed.append(wrapper)
        real_close(wrapper)

    monkeypatch.setattr(type(connections["default"]), "close", close)

    def query() -> Iterator[list[int]]:
        used.append(connections["default"])  # this thread's connection, not the caller's
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            yield [cursor.fetchone()[0]]

    assert list(read_ahead(query())) == [[1]]

    assert used[0] is not connections["default"]
    assert closed == [used[0]]  # the thread closed its own, and only its own
    if connection.vendor == "postgresql":  # (Django keeps an in-memory SQLite database open)
        assert used[0].connection is None
    assert connections["default"].connection is not None  # the caller's stays open


@pytest.mark.django_db(transaction=True)
def test_a_build_on_postgresql_reads_ahead_and_writes_the_same_files(
        settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("reading ahead is for PostgreSQL only")
    from django.core.management import call_command

    from core.runs import run_claim
    from labeling.models import Project
    from tests.factories import UserFactory, make_items
    from training import snapshots
    from training.models import DatasetSnapshot

    project = Project.objects.create(name="Sim", slug="sim", is_demo=True, overlap=3)
    make_items(project, 7, k=3)
    for n in range(3):
        UserFactory(username=f"ahead{n}", email=f"ahead{n}@example.com")
    call_command("simulate_annotators", "--project", "sim", "--create", "3", "--noise", "0.1")
    monkeypatch.setattr(snapshots, "ITEMS_BATCH", 2)  # several batches through the queue
    reads = []

    def spy(batches: Iterator[list]) -> Iterator[list]:
        reads.append(batches)
        return read_ahead(batches)

    monkeypatch.setattr(snapshots, "read_ahead", spy)
    files = {}
    for ahead in (True, False):
        settings.SNAPSHOT_READ_AHEAD = ahead  # type: ignore[attr-defined]
        snapshot = snapshots.snapshot_create(project=project, kinds=["pairs", "sft"], formats=["jsonl"],
                                             enqueue=False)
        snapshots.snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
        snapshot.refresh_from_db()
        files[ahead] = {name: info["sha256"] for name, info in snapshot.files.items()}
        if ahead:
            assert len(reads) == 2  # the pairs' items and the SFT's went through the thread
    assert len(reads) == 2  # and not with the setting off

    assert files[True] == files[False]
    assert snapshot.counts["pairs-train"] > 0
