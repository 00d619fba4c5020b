"""Read ahead on a thread: the next batches of a read are made while the caller works on
the current one, so that the two overlap instead of taking turns (issue #19). The
snapshot export (training/snapshots.py) reads items from PostgreSQL this way while it
encodes and writes; the import (labeling/importing/chunks.py) parses and renders the
file's next chunks while it writes the current one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import connection

T = TypeVar("T")
# How often a reader blocked on a full queue looks whether the caller has gone.
POLL_SECONDS = 0.1
_END, _WAITING = object(), object()


class _Failed:
    """An error of the reader on its way to the caller."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(batches: Iterator[T], *, depth: int = 2, name: str = "read-ahead",
               on_tick: Callable[[], None] | None = None, tick_seconds: float | None = None
               ) -> Iterator[T]:
    """Yield what ``batches`` yields, in order, while a thread runs ``batches`` (its
    queries included) to get the next ones; at most ``depth`` wait, so memory stays at a
    few batches however large the read.

    The thread's queries run on its own database connection, which it closes when it
    ends: it sees committed rows only, never the caller's transaction. An error in the
    thread is raised here, with its traceback. When the caller stops (an error, or this
    generator closed or dropped), the thread stops at its next batch and closes
    ``batches``; this generator returns only once the thread has ended. ``on_tick`` runs
    on the caller's thread before each batch is handed over and, with ``tick_seconds``,
    every ``tick_seconds`` while it waits for one (the import passes its progress on)."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(value: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(value, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(_END)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            offer(_Failed(error))
        finally:
            try:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # a generator's own finally runs here, on the thread it ran on
            finally:
                connection.close()  # this thread's connection: nobody else will close it

    reader = threading.Thread(target=read, name=name, daemon=True)
    reader.start()
    try:
        while True:
            try:
                value = handoff.get(timeout=tick_seconds)
            except queue.Empty:
                value = _WAITING
            if on_tick is not None:
                on_tick()
            if value is _WAITING:
                continue
            if value is _END:
                return
            if isinstance(value, _Failed):
                raise value.error
            yield value
    finally:
        stop.set()
        reader.join()
