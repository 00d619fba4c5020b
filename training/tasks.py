"""Celery tasks of the training app: thin adapters (an id in, a claim, one service
call). `generate_*` tasks route to the `generate` queue and `train_*` to `train`
(config/celery.py). The engine, and torch with it, loads inside the task bodies. A run
that reaches its soft time limit (RUN_SOFT_TIME_LIMITS) fails with that message."""

from __future__ import annotations

from celery import shared_task

from core.runs import run_claim, run_fails_at_time_limit
from webhooks.events import run_finished_emit


@shared_task(name="training.tasks.generate_candidates", ignore_result=True)
def generate_candidates(run_id: int) -> None:
    from training.generation import generation_run_execute
    from training.models import GenerationRun

    run = run_claim(GenerationRun, run_id)
    if run is not None:
        with run_fails_at_time_limit(run):
            generation_run_execute(run)
        run_finished_emit(run)


@shared_task(name="training.tasks.generate_item_scores", ignore_result=True)
def generate_item_scores(version_id: int) -> int:
    """After a reward model's promotion: re-score the undecided items with it (generate
    queue; idempotent, stops if another version is promoted meanwhile)."""
    from training.models import ModelVersion
    from training.registry import undecided_items_rescore

    version = ModelVersion.objects.filter(pk=version_id, is_current=True).first()
    return undecided_items_rescore(version=version) if version is not None else 0


@shared_task(name="training.tasks.build_snapshot", ignore_result=True)
def build_snapshot(snapshot_id: int) -> None:
    from training.models import DatasetSnapshot
    from training.snapshots import snapshot_build

    snapshot = run_claim(DatasetSnapshot, snapshot_id)
    if snapshot is not None:
        with run_fails_at_time_limit(snapshot):
            snapshot_build(snapshot)
        run_finished_emit(snapshot)


@shared_task(name="training.tasks.train_run", ignore_result=True)
def train_run(run_id: int) -> None:
    from training.models import TrainingRun
    from training.runs import training_run_execute

    run = run_claim(TrainingRun, run_id)
    if run is not None:
        # training_run_execute records most errors itself; this catches the limit
        # landing outside its try (loading the snapshot, registering the model).
        with run_fails_at_time_limit(run):
            training_run_execute(run)
        run_finished_emit(run)


@shared_task(name="training.tasks.schedule_tick", ignore_result=True)
def schedule_tick(schedule_id: int) -> None:
    """Beat calls this per project schedule (training/schedules.py); safe to repeat."""
    from training.schedules import schedule_tick as tick

    tick(schedule_id)


@shared_task(name="training.tasks.push_to_hub", ignore_result=True)
def push_to_hub(push_id: int) -> None:
    from training.hub import hub_push_execute
    from training.models import HubPush

    push = run_claim(HubPush, push_id)
    if push is not None:
        with run_fails_at_time_limit(push):
            hub_push_execute(push)
