"""The stale-run sweep (Celery beat): recovery of every kind of background run from the
database (core/runs.py)."""

from __future__ import annotations

from celery import shared_task

from core.runs import runs_sweep_stale


@shared_task(name="core.tasks.sweep_stale_runs", ignore_result=True)
def sweep_stale_runs() -> dict[str, int]:
    return runs_sweep_stale()
