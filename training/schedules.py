"""Training schedules: retrain the reward model when enough new labels have arrived.

A project's TrainingSchedule is ticked by a django-celery-beat PeriodicTask (kept in
step with the schedule by `schedule_save`). Each tick decides one thing and logs it as
a ScheduleDecision with its reason:

    disabled, or the runs of the last decision still queued/running  -> skip
    a snapshot it started is still building                         -> wait
    fewer than N new accepted comparisons since the last reward run  -> skip
    otherwise: freeze a snapshot (built inline by the tick), then    -> snapshot, train
    queue a reward run on it (and a DPO run of the current policy)

"New" means comparisons in items accepted after the snapshot of the project's latest
reward run that did not fail, scheduled or started by hand. Ticks are idempotent: the
schedule row is locked while deciding, and the runs start from `pending_snapshot`
through a conditional update that only one tick can win, so a duplicate tick or a
worker that died mid-build neither trains twice nor loses the snapshot (the stale-run
sweep re-queues the build; the next tick starts the runs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.audit import audit
from core.errors import DomainError
from core.runs import Run, run_claim
from labeling.models import Item, Project
from training.models import DatasetSnapshot, ScheduleDecision, TrainingRun, TrainingSchedule

logger = logging.getLogger(__name__)
TICK_TASK = "training.tasks.schedule_tick"
UNFINISHED = (Run.Status.QUEUED, Run.Status.RUNNING)


@dataclass(frozen=True)
class NewComparisons:
    count: int
    since: datetime | None  # None: no reward model was trained yet


def pairs_in(tiers: Iterable[list[int]]) -> int:
    """Comparisons a tiered ranking implies: every pair of answers in different tiers."""
    sizes = [len(tier) for tier in tiers]
    total = sum(sizes)
    return (total * (total - 1) - sum(size * (size - 1) for size in sizes)) // 2


def new_comparisons(project: Project) -> NewComparisons:
    last = (TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD,
                                       snapshot__isnull=False)
            .exclude(status__in=[Run.Status.FAILED, Run.Status.CANCELLED])
            .select_related("snapshot").order_by("-id").first())
    since = last.snapshot.created_at if last else None
    items = Item.objects.filter(project=project, status=Item.Status.ACCEPTED, is_gold=False,
                                consensus__isnull=False)
    if since is not None:
        items = items.filter(decided_at__gt=since)
    count = sum(pairs_in(tiers) for tiers in items.values_list("consensus", flat=True).iterator())
    return NewComparisons(count=count, since=since)


# --------------------------------------------------------------------------- editing


@transaction.atomic
def schedule_save(*, project: Project, enabled: bool, min_new_comparisons: int,
                  interval_minutes: int, then_dpo: bool, actor: AbstractBaseUser | None,
                  reward_config: dict[str, Any] | None = None,
                  dpo_config: dict[str, Any] | None = None) -> TrainingSchedule:
    """Create or change a project's schedule and its beat entry in one transaction."""
    if not 1 <= interval_minutes <= 7 * 24 * 60:
        raise DomainError("the interval must be between 1 minute and 7 days")
    if not 1 <= min_new_comparisons <= 100_000_000:
        raise DomainError("the threshold must be at least 1 comparison")
    schedule = TrainingSchedule.objects.select_for_update().filter(project=project).first()
    before = _state(schedule) if schedule else None
    schedule = schedule or TrainingSchedule(project=project)
    schedule.enabled, schedule.then_dpo = enabled, then_dpo
    schedule.min_new_comparisons, schedule.interval_minutes = min_new_comparisons, interval_minutes
    if reward_config is not None:
        schedule.reward_config = reward_config
    if dpo_config is not None:
        schedule.dpo_config = dpo_config
    _check_configs(schedule)
    schedule.save()
    interval, _ = IntervalSchedule.objects.get_or_create(every=interval_minutes,
                                                         period=IntervalSchedule.MINUTES)
    task, _ = PeriodicTask.objects.update_or_create(
        name=f"ordinal: train reward model of project {project.pk}",
        defaults={"task": TICK_TASK, "interval": interval, "args": json.dumps([schedule.pk]),
                  "enabled": enabled, "description": f"TrainingSchedule {schedule.pk}"},
    )
    if schedule.periodic_task_id != task.pk:
        TrainingSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task
    audit(actor=actor, project=project, action="schedule.save", target=schedule,
          before=before, after=_state(schedule))
    return schedule


def _state(schedule: TrainingSchedule) -> dict[str, Any]:
    return {"enabled": schedule.enabled, "min_new_comparisons": schedule.min_new_comparisons,
            "interval_minutes": schedule.interval_minutes, "then_dpo": schedule.then_dpo,
            "reward_config": schedule.reward_config, "dpo_config": schedule.dpo_config}


def _check_configs(schedule: TrainingSchedule) -> None:
    from training.engine.cli import config_class

    for kind, config in (("reward", schedule.reward_config), ("dpo", schedule.dpo_config)):
        if not isinstance(config, dict):
            raise DomainError(f"the {kind} config must be a JSON object")
        try:
            config_class(kind).from_dict({"model": "placeholder", **config})
        except (TypeError, ValueError) as exc:
            raise DomainError(f"invalid {kind} config: {exc}") from None


# --------------------------------------------------------------------------- ticking


def schedule_tick(schedule_id: int) -> ScheduleDecision | None:
    """One tick: decide, log the decision, and act on it. None if the schedule is gone."""
    decision, snapshot = _decide(schedule_id)
    if snapshot is None:
        return decision
    # Built inline, outside any transaction: a long build must not hold the row lock.
    claimed = run_claim(DatasetSnapshot, snapshot.pk)
    if claimed is not None:
        from training.snapshots import snapshot_build

        snapshot_build(claimed)
    return _start_runs(schedule_id, snapshot.pk) or decision


def _log(schedule: TrainingSchedule, action: str, reason: str, **fields: Any) -> ScheduleDecision:
    logger.info("training schedule %s (project %s): %s: %s", schedule.pk, schedule.project_id,
                action, reason)
    return ScheduleDecision.objects.create(schedule=schedule, action=action, reason=reason, **fields)


@transaction.atomic
def _decide(schedule_id: int) -> tuple[ScheduleDecision | None, DatasetSnapshot | None]:
    schedule = (TrainingSchedule.objects.select_for_update().select_related("project")
                .filter(pk=schedule_id).first())
    if schedule is None:
        return None, None
    if not schedule.enabled:
        return _log(schedule, ScheduleDecision.Action.SKIP, "the schedule is disabled"), None
    pending = schedule.pending_snapshot
    if pending is not None:
        if pending.status in UNFINISHED:
            return _log(schedule, ScheduleDecision.Action.WAIT,
                        f"snapshot {pending.pk} is still being built ({pending.status})",
                        snapshot=pending), None
        if pending.status != Run.Status.DONE:
            TrainingSchedule.objects.filter(pk=schedule.pk).update(pending_snapshot=None)
            return _log(schedule, ScheduleDecision.Action.ERROR,
                        f"snapshot {pending.pk} {pending.status}: {pending.error or 'no reason'}; "
                        "the next tick starts over", snapshot=pending), None
        return None, pending  # built while no tick watched (a worker died): start the runs
    busy = _unfinished_runs(schedule)
    if busy:
        return _log(schedule, ScheduleDecision.Action.SKIP,
                    f"{busy} from the last scheduled training is still queued or running"), None
    new = new_comparisons(schedule.project)
    since = f"since {new.since:%Y-%m-%d %H:%M} UTC" if new.since else "and no reward model yet"
    if new.count < schedule.min_new_comparisons:
        return _log(schedule, ScheduleDecision.Action.SKIP,
                    f"{new.count} new accepted comparisons {since}; waiting for "
                    f"{schedule.min_new_comparisons}", new_comparisons=new.count), None
    from training.snapshots import snapshot_create

    kinds = ["pairs", "dpo"] if schedule.then_dpo else ["pairs"]
    snapshot = snapshot_create(project=schedule.project, kinds=kinds, formats=["parquet"],
                               options={"validation_fraction": 0.1}, enqueue=False)
    TrainingSchedule.objects.filter(pk=schedule.pk).update(pending_snapshot=snapshot)
    decision = _log(schedule, ScheduleDecision.Action.SNAPSHOT,
                    f"{new.count} new accepted comparisons {since} (threshold "
                    f"{schedule.min_new_comparisons}): building snapshot {snapshot.pk}",
                    new_comparisons=new.count, snapshot=snapshot)
    return decision, snapshot


def _unfinished_runs(schedule: TrainingSchedule) -> str:
    last = schedule.decisions.filter(action=ScheduleDecision.Action.TRAIN).first()
    if last is None:
        return ""
    runs = [run for run in (last.reward_run, last.dpo_run)
            if run is not None and run.status in UNFINISHED]
    return ", ".join(f"{run.kind} run {run.pk}" for run in runs)


@transaction.atomic
def _start_runs(schedule_id: int, snapshot_id: int) -> ScheduleDecision | None:
    """Queue the runs on a built snapshot, once: only the tick that clears
    `pending_snapshot` from this snapshot gets to."""
    from training.registry import current_model
    from training.runs import training_run_create

    won = TrainingSchedule.objects.filter(pk=schedule_id, pending_snapshot_id=snapshot_id).update(
        pending_snapshot=None)
    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    schedule = TrainingSchedule.objects.select_related("project").get(pk=schedule_id)
    if not won:
        return None
    if snapshot.status != Run.Status.DONE:
        return _log(schedule, ScheduleDecision.Action.ERROR,
                    f"snapshot {snapshot.pk} {snapshot.status}: {snapshot.error or 'no reason'}",
                    snapshot=snapshot)
    try:
        with transaction.atomic():
            reward = training_run_create(project=schedule.project, kind=TrainingRun.Kind.REWARD,
                                         snapshot=snapshot, config=schedule.reward_config)
            dpo = None
            if schedule.then_dpo:
                dpo = training_run_create(project=schedule.project, kind=TrainingRun.Kind.DPO,
                                          snapshot=snapshot, config=schedule.dpo_config,
                                          base_version=current_model(schedule.project, "policy"))
    except DomainError as exc:
        return _log(schedule, ScheduleDecision.Action.ERROR,
                    f"could not start training on snapshot {snapshot.pk}: {exc}", snapshot=snapshot)
    queued = f"reward run {reward.pk}" + (f" and DPO run {dpo.pk}" if dpo else "")
    return _log(schedule, ScheduleDecision.Action.TRAIN,
                f"snapshot {snapshot.pk} holds {snapshot.counts.get('pairs-train', 0)} training pairs: "
                f"queued {queued}",
                snapshot=snapshot, reward_run=reward, dpo_run=dpo)
