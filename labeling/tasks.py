"""Celery tasks of the labeling app: thin adapters (an id in, a claim, one service call).

Each is safe to redeliver: the claim lets one worker run a row, and the import itself
adds nothing that is already there. An import that reaches its soft time limit
(IMPORT_TIME_LIMIT_SECONDS) fails with that message instead of being retried.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from celery import shared_task

from labeling.assignment import assignments_expire
from labeling.importing import ImportFileError, prompts_import
from labeling.models import ImportJob
from labeling.runs import (
    Run,
    run_claim,
    run_fails_at_time_limit,
    run_finish,
    run_heartbeat,
    runs_sweep_stale,
)

logger = logging.getLogger(__name__)


class RunStopped(Exception):
    """The run was cancelled (or taken away by the sweep) while working."""


@shared_task(name="labeling.tasks.import_prompts", ignore_result=True)
def import_prompts(job_id: int) -> None:
    job = run_claim(ImportJob, job_id)
    if job is None:
        return
    with run_fails_at_time_limit(job):
        _import(job)


def _import(job: ImportJob) -> None:
    from django.conf import settings

    last_beat = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_beat
        if time.monotonic() - last_beat < settings.RUN_HEARTBEAT_SECONDS / 3:
            return
        last_beat = time.monotonic()
        if not run_heartbeat(job, bytes_done=done, bytes_total=total):
            raise RunStopped

    try:
        report = prompts_import(
            project=job.project, path=Path(job.file_path), skip_invalid=job.skip_invalid,
            original_name=job.original_name, progress=progress,
        )
    except RunStopped:
        return
    except ImportFileError as exc:
        ImportJob.objects.filter(pk=job.pk).update(report={"rejected": True, "errors": [
            {"line": None, "reason": str(exc)}]})
        run_finish(job, status=Run.Status.FAILED, error=str(exc))
        return
    ImportJob.objects.filter(pk=job.pk).update(report=report.as_dict())
    if report.rejected:
        run_finish(job, status=Run.Status.FAILED,
                   error=f"file rejected: {report.invalid} invalid rows (see the report)")
    else:
        size = Path(job.file_path).stat().st_size
        run_finish(job, status=Run.Status.DONE, bytes_done=2 * size, bytes_total=2 * size)
        Path(job.file_path).unlink(missing_ok=True)


@shared_task(name="labeling.tasks.sweep_stale_runs", ignore_result=True)
def sweep_stale_runs() -> dict[str, int]:
    return runs_sweep_stale()


@shared_task(name="labeling.tasks.expire_leases", ignore_result=True)
def expire_leases() -> int:
    """Return leases past their expiry to the pool (annotators who walked away)."""
    return assignments_expire()


@shared_task(name="labeling.tasks.refresh_quality", ignore_result=True)
def refresh_quality(project_id: int) -> int:
    """Recompute annotator quality for a project (debounced by quality_refresh_soon)."""
    from labeling.models import Project
    from labeling.quality import quality_refresh

    project = Project.objects.filter(pk=project_id).first()
    return quality_refresh(project=project) if project else 0
