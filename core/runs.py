"""Background runs recovered from the database, not the broker.

Every long job (an import, a generation run, a training run) is a row of a `Run`
subclass. Its task claims the row with a conditional UPDATE (QUEUED -> RUNNING), beats
a heartbeat while it works, and finishes it. `runs_sweep_stale` (Celery beat) finds
runs whose worker died (heartbeat older than RUN_STALE_AFTER_SECONDS), re-queues them
and fails them after RUN_MAX_ATTEMPTS. It also re-sends queued runs whose message was
lost (a Redis restart or FLUSHALL, or a broker that was down when the run was created);
the claim makes a duplicate message harmless. An attempt that outlives its time limit
(RUN_SOFT_TIME_LIMITS) fails for good instead of going round the sweep again. A run kind
that holds files only a live run needs frees them in `release` (an import's upload).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)


class Run(models.Model):
    """Common state of a background run. Subclasses set `task_name`, the Celery task
    that takes the row id."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    task_name: str = ""

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED}

    @classmethod
    def release(cls, runs: QuerySet) -> None:
        """Free what only a run that may still work needs, for those of `runs` that are
        finished. Called by the task when it stops and by the sweep for runs it fails."""


def run_enqueue(run: Run) -> None:
    """Send the run's task once the surrounding transaction commits."""
    task_name, run_id = type(run).task_name, run.pk
    transaction.on_commit(lambda: send_run_task(task_name, run_id))


def send_run_task(task_name: str, run_id: int) -> None:
    """Publish the run's task. A broker that is down does not fail the caller (the run
    row is committed and the sweep re-sends it once the broker is back)."""
    from kombu.exceptions import OperationalError

    from config.celery import app

    try:
        # No limits in the message: Celery would let the sender's time limits override
        # those of the worker that runs it (CELERY_TASK_ANNOTATIONS from its environment).
        app.tasks[task_name].apply_async(args=[run_id], time_limit=None, soft_time_limit=None)
    except OperationalError as exc:
        logger.warning("broker unavailable, %s %s left for the sweep to re-send: %s",
                       task_name, run_id, exc)


def run_claim(model: type[Run], run_id: int) -> Run | None:
    """QUEUED -> RUNNING, or None when another worker got there first or it is done."""
    now = timezone.now()
    claimed = model.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING, attempts=F("attempts") + 1, heartbeat_at=now,
        started_at=now,
    )
    if not claimed:
        return None
    return model.objects.get(pk=run_id)


def run_heartbeat(run: Run, **progress: object) -> bool:
    """Record liveness (and progress); False when the run was cancelled or taken away."""
    fields: dict[str, object] = {"heartbeat_at": timezone.now()}
    if progress:
        run.progress = {**run.progress, **progress}
        fields["progress"] = run.progress
    updated = type(run).objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(**fields)
    return bool(updated)


def run_heartbeat_detached(run: Run, **progress: object) -> bool:
    """run_heartbeat from inside a long transaction (a validate-first import writes in one).
    Written in that transaction, the beat would stay invisible until the commit and the
    sweep would take the run for dead; so it goes through a connection of its own, on a
    thread of its own (Django's connections are per thread). SQLite has one writer at a
    time, this transaction: there the beat waits for the commit (it is skipped)."""
    if not connection.in_atomic_block:
        return run_heartbeat(run, **progress)
    if connection.vendor == "sqlite":
        return True
    outcome: list[bool | Exception] = []

    def beat() -> None:
        try:
            outcome.append(run_heartbeat(run, **progress))
        except Exception as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"heartbeat-{type(run).__name__}-{run.pk}")
    thread.start()
    thread.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def run_finish(run: Run, *, status: str, error: str = "", **progress: object) -> None:
    fields: dict[str, object] = {"status": status, "finished_at": timezone.now(), "error": error}
    if progress:
        fields["progress"] = {**run.progress, **progress}
    # Only the worker holding the claim may finish; a cancelled run stays cancelled.
    type(run).objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(**fields)


def run_time_limits(model: type[Run]) -> tuple[int, int] | None:
    """(soft, hard) seconds one attempt of this kind of run may take, None if unlimited."""
    soft = settings.RUN_SOFT_TIME_LIMITS.get(model.task_name)
    if soft is None:
        return None
    return soft, soft + settings.RUN_TIME_LIMIT_GRACE_SECONDS


@contextmanager
def run_fails_at_time_limit(run: Run) -> Iterator[None]:
    """Wrap a task's work: at the soft time limit Celery raises SoftTimeLimitExceeded in
    the task, and the run fails with a message naming the limit. Without this the row
    stayed RUNNING until the sweep re-queued it, to hit the same limit again."""
    try:
        yield
    except SoftTimeLimitExceeded:
        # The signal may have landed mid-query: start the bookkeeping on a fresh connection.
        if not connection.in_atomic_block:
            connection.close()
        limits = run_time_limits(type(run))
        limit = f" of {limits[0]} s" if limits else ""
        logger.warning("%s %s stopped at its time limit%s", type(run).__name__, run.pk, limit)
        run_finish(run, status=Run.Status.FAILED,
                   error=f"time limit exceeded: stopped at the soft limit{limit}")


def run_cancel(run: Run) -> bool:
    """Cancel a queued or running run; the worker stops at its next heartbeat."""
    updated = type(run).objects.filter(
        pk=run.pk, status__in=[Run.Status.QUEUED, Run.Status.RUNNING]
    ).update(status=Run.Status.CANCELLED, finished_at=timezone.now())
    return bool(updated)


def run_models() -> Iterator[type[Run]]:
    for model in apps.get_models():
        if issubclass(model, Run) and model.task_name:
            yield model


def runs_sweep_stale() -> dict[str, int]:
    """Re-queue runs whose heartbeat went stale, fail those out of attempts or past their
    hard time limit, and re-send queued runs whose message seems lost. Returns counts for
    the log."""
    started = timezone.now()
    stale_before = started - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
    counts = {"requeued": 0, "failed": 0, "resent": 0}
    for model in run_models():
        stale = Q(status=Run.Status.RUNNING) & (
            Q(heartbeat_at__lt=stale_before) | Q(heartbeat_at__isnull=True)
        )
        with transaction.atomic():
            counts["failed"] += _fail_killed_at_time_limit(model, stale)
            exhausted = model.objects.filter(stale, attempts__gte=settings.RUN_MAX_ATTEMPTS)
            counts["failed"] += exhausted.update(
                status=Run.Status.FAILED, finished_at=timezone.now(),
                error=f"worker lost {settings.RUN_MAX_ATTEMPTS} times; giving up",
            )
            ids = list(model.objects.filter(stale).values_list("pk", flat=True))
            requeued = model.objects.filter(stale, pk__in=ids).update(
                status=Run.Status.QUEUED, queued_at=timezone.now()
            )
            counts["requeued"] += requeued
            lost = list(
                model.objects.filter(status=Run.Status.QUEUED, queued_at__lt=stale_before)
                .exclude(pk__in=ids).values_list("pk", flat=True)
            )
            model.objects.filter(pk__in=lost).update(queued_at=timezone.now())
            counts["resent"] += len(lost)
            for run_id in ids + lost:
                run = model(pk=run_id)
                run_enqueue(run)
        model.release(model.objects.filter(status=Run.Status.FAILED, finished_at__gte=started))
    if any(counts.values()):
        logger.warning("stale-run sweep: %s", counts)
    return counts


def _fail_killed_at_time_limit(model: type[Run], stale: Q) -> int:
    """A silent run whose attempt started longer ago than its hard limit was killed by
    Celery (or could not have finished in time): another attempt would meet the same end."""
    limits = run_time_limits(model)
    if limits is None:
        return 0
    started_before = timezone.now() - timedelta(seconds=limits[1])
    return model.objects.filter(stale, started_at__lt=started_before).update(
        status=Run.Status.FAILED, finished_at=timezone.now(),
        error=f"time limit exceeded: killed at the hard limit of {limits[1]} s",
    )
