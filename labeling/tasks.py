"""Celery tasks of the labeling app: thin adapters (an id in, a claim, one service call).

Each is safe to redeliver: the claim lets one worker run a row, and the import itself
adds nothing that is already there. An import that reaches its soft time limit
(IMPORT_TIME_LIMIT_SECONDS) fails with that message instead of being retried; one that
cannot read its file, or breaks on it, fails at once with the reason. Only a lost
database connection leaves it to the stale-run sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connection

from core.runs import (
    Run,
    run_claim,
    run_fails_at_time_limit,
    run_finish,
    run_heartbeat,
    run_heartbeat_detached,
)
from labeling.importing import ImportFileError, prompts_import
from labeling.models import ImportJob
from labeling.services.assignment import assignments_expire
from webhooks.events import run_finished_emit

logger = logging.getLogger(__name__)


class RunStopped(Exception):
    """The run was cancelled (or taken away by the sweep) while working."""


@shared_task(name="labeling.tasks.import_prompts", ignore_result=True)
def import_prompts(job_id: int) -> None:
    job = run_claim(ImportJob, job_id)
    try:
        if job is not None:
            with run_fails_at_time_limit(job):
                _import(job)
            run_finished_emit(job)
    finally:
        # Done, failed, rejected, cancelled (even while queued) or out of time: the upload
        # goes. A job another worker holds, or that the sweep will re-queue, keeps it.
        ImportJob.release(ImportJob.objects.filter(pk=job_id))


def _import(job: ImportJob) -> None:
    from django.conf import settings

    last_beat = 0.0
    # A worker runs the task outside any transaction: one open at a beat is the import's
    # own, which the beat must not wait for. Run inside a caller's transaction (an eager
    # task in a test), the run's row is that transaction's, seen by this connection only.
    beat = run_heartbeat if connection.in_atomic_block else run_heartbeat_detached

    def progress(done: int, total: int) -> None:
        nonlocal last_beat
        if time.monotonic() - last_beat < settings.RUN_HEARTBEAT_SECONDS / 3:
            return
        last_beat = time.monotonic()
        if not beat(job, bytes_done=done, bytes_total=total):
            raise RunStopped

    if job.dry_run:
        _dry_run(job, progress)
        return
    try:
        report = prompts_import(
            project=job.project, path=Path(job.file_path), skip_invalid=job.skip_invalid,
            original_name=job.original_name, progress=progress, axis=job.axis,
        )
    except RunStopped:
        return
    except ImportFileError as exc:
        report = exc.report.as_dict() if exc.report else {
            "rejected": True, "errors": [{"line": exc.line, "reason": str(exc)}]}
        _fail(job, str(exc), report)
        return
    except (SoftTimeLimitExceeded, OperationalError, InterfaceError):
        raise  # the time limit has its handler; a lost database is the sweep's to retry
    except Exception as exc:
        # A file that breaks the import breaks it again: fail now, with the reason, rather
        # than leave the run to the sweep's retries ("worker lost 3 times", no report).
        logger.exception("import %s failed", job.pk)
        reason = f"the import failed: {type(exc).__name__}: {exc}"[:2000]
        _fail(job, reason, {"rejected": not job.skip_invalid,
                            "errors": [{"line": None, "reason": reason}]})
        return
    ImportJob.objects.filter(pk=job.pk).update(report=report.as_dict())
    if report.rejected:
        run_finish(job, status=Run.Status.FAILED,
                   error=f"file rejected: {report.invalid} invalid rows (see the report)")
    else:
        size = Path(job.file_path).stat().st_size
        run_finish(job, status=Run.Status.DONE, bytes_done=2 * size, bytes_total=2 * size)


def _dry_run(job: ImportJob, progress: object) -> None:
    """Validate only (labeling/services/imports.py); the report lists every invalid row."""
    from labeling.services.imports import import_validate

    try:
        report = import_validate(job=job, progress=progress)
    except RunStopped:
        return
    except ImportFileError as exc:
        _fail(job, str(exc), {**exc.report.as_dict(), "dry_run": True})
        return
    ImportJob.objects.filter(pk=job.pk).update(report={**report.as_dict(), "dry_run": True})
    size = Path(job.file_path).stat().st_size
    run_finish(job, status=Run.Status.DONE, bytes_done=size, bytes_total=size)


def _fail(job: ImportJob, reason: str, report: dict) -> None:
    ImportJob.objects.filter(pk=job.pk).update(report=report)
    run_finish(job, status=Run.Status.FAILED, error=reason)


@shared_task(name="labeling.tasks.expire_leases", ignore_result=True)
def expire_leases() -> int:
    """Return leases past their expiry to the pool (annotators who walked away)."""
    return assignments_expire()


@shared_task(name="labeling.tasks.refresh_quality", ignore_result=True)
def refresh_quality(project_id: int) -> int:
    """Recompute annotator quality for a project (debounced by quality_refresh_soon)."""
    from labeling.models import Project
    from labeling.services.quality import quality_refresh

    project = Project.objects.filter(pk=project_id).first()
    return quality_refresh(project=project) if project else 0
