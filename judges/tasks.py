"""Celery adapters of the judges app: an id in, a claim, one service call. Judge runs go
to the `generate` queue (config/celery.py routes `judges.tasks.generate_*`): they call
the same endpoints and models as generation."""

from __future__ import annotations

from celery import shared_task

from core.runs import run_claim, run_fails_at_time_limit


@shared_task(name="judges.tasks.generate_judgements", ignore_result=True)
def generate_judgements(run_id: int) -> None:
    from judges.models import JudgeRun
    from judges.services import judge_run_execute

    run = run_claim(JudgeRun, run_id)
    if run is not None:
        with run_fails_at_time_limit(run):
            judge_run_execute(run)
