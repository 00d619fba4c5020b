"""Training schedules: the beat entry follows the schedule, every tick logs its decision
and reason, the threshold counts only comparisons accepted since the last reward run,
and a tick repeated or interrupted never trains twice."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask

from core.errors import DomainError
from core.runs import Run, run_claim
from labeling.models import AuditEvent, Item, Project
from tests.factories import UserFactory, make_items
from training.models import DatasetSnapshot, ScheduleDecision, TrainingRun, TrainingSchedule
from training.schedules import _decide, _start_runs, new_comparisons, pairs_in, schedule_save, schedule_tick
from training.snapshots import snapshot_build, snapshot_dir

SKIP, WAIT, SNAPSHOT, TRAIN = "skip", "wait", "snapshot", "train"


@pytest.fixture
def labelled(project: Project) -> Project:
    """Six accepted items of three answers, ranked by three simulated annotators."""
    Project.objects.filter(pk=project.pk).update(is_demo=True)
    make_items(project, 6, k=3)
    call_command("simulate_annotators", "--project", project.slug, "--create", "3", "--noise", "0.0")
    assert Item.objects.filter(project=project, status="accepted").count() == 6
    return project


def accepted_comparisons(project: Project) -> int:
    return sum(pairs_in(t) for t in Item.objects.filter(
        project=project, status="accepted").values_list("consensus", flat=True))


def save(project: Project, actor=None, **overrides) -> TrainingSchedule:  # noqa: ANN001, ANN003
    fields = {"enabled": True, "min_new_comparisons": 10, "interval_minutes": 30, "then_dpo": False}
    return schedule_save(project=project, actor=actor, **{**fields, **overrides})


@pytest.mark.parametrize(("tiers", "pairs"), [
    ([[1], [2], [3]], 3), ([[1], [2, 3], [4]], 5), ([[1, 2]], 0), ([[1, 2, 3, 4]], 0), ([[1], [2]], 1),
])
def test_pairs_in_counts_comparisons_between_tiers(tiers: list, pairs: int) -> None:
    assert pairs_in(tiers) == pairs


def test_saving_keeps_one_beat_entry_in_step(project: Project, project_admin) -> None:  # noqa: ANN001
    schedule = save(project, project_admin, interval_minutes=15)
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    assert (task.task, json.loads(task.args), task.enabled) == ("training.tasks.schedule_tick",
                                                                 [schedule.pk], True)
    assert (task.interval.every, task.interval.period) == (15, "minutes")

    save(project, project_admin, enabled=False, interval_minutes=90)

    task.refresh_from_db()
    assert PeriodicTask.objects.filter(task="training.tasks.schedule_tick").count() == 1
    assert (task.enabled, task.interval.every) == (False, 90)
    events = AuditEvent.objects.filter(action="schedule.save", project=project).order_by("id")
    assert [e.after["interval_minutes"] for e in events] == [15, 90]
    assert events[1].before["enabled"] is True and events[1].after["enabled"] is False


def test_celery_beat_database_scheduler_picks_the_entry_up(project: Project) -> None:
    from django_celery_beat.schedulers import DatabaseScheduler

    from config.celery import app

    schedule = save(project, interval_minutes=5)
    entries = DatabaseScheduler(app=app, lazy=True).all_as_schedule()

    entry = entries[schedule.periodic_task.name]
    assert entry.task == "training.tasks.schedule_tick" and list(entry.args) == [schedule.pk]
    assert entry.schedule.run_every.total_seconds() == 300


@pytest.mark.parametrize(("fields", "message"), [
    ({"interval_minutes": 0}, "interval"), ({"min_new_comparisons": 0}, "threshold"),
    ({"reward_config": {"learning_rate": "fast"}}, "invalid reward config"),
    ({"dpo_config": {"no_such_field": 1}}, "invalid dpo config"),
])
def test_bad_schedules_are_refused(project: Project, fields: dict, message: str) -> None:
    with pytest.raises(DomainError, match=message):
        save(project, **fields)
    assert not TrainingSchedule.objects.exists() and not PeriodicTask.objects.exists()


def test_below_the_threshold_the_tick_says_how_many_and_waits(labelled: Project) -> None:
    have = accepted_comparisons(labelled)
    schedule = save(labelled, min_new_comparisons=have + 1)

    decision = schedule_tick(schedule.pk)

    assert decision.action == SKIP and decision.new_comparisons == have
    assert f"{have} new accepted comparisons and no reward model yet; waiting for {have + 1}" in decision.reason
    assert not DatasetSnapshot.objects.exists() and not TrainingRun.objects.exists()


def test_at_the_threshold_a_snapshot_is_built_and_a_reward_run_queued(labelled: Project) -> None:
    have = accepted_comparisons(labelled)
    schedule = save(labelled, min_new_comparisons=have)

    decision = schedule_tick(schedule.pk)

    assert decision.action == TRAIN, decision.reason
    run = decision.reward_run
    assert (run.kind, run.status, run.snapshot_id) == ("reward", "queued", decision.snapshot_id)
    assert decision.snapshot.status == "done" and decision.snapshot.counts["pairs-train"] > 0
    assert list(ScheduleDecision.objects.order_by("id").values_list("action", flat=True)) == [SNAPSHOT, TRAIN]
    assert decision.dpo_run is None
    schedule.refresh_from_db()
    assert schedule.pending_snapshot is None

    busy = schedule_tick(schedule.pk)  # the reward run has not run yet
    assert busy.action == SKIP and f"reward run {run.pk}" in busy.reason and "still queued" in busy.reason
    assert TrainingRun.objects.count() == 1


def test_after_a_reward_run_only_newer_labels_count(labelled: Project) -> None:
    schedule = save(labelled, min_new_comparisons=1)
    first = schedule_tick(schedule.pk)
    TrainingRun.objects.filter(pk=first.reward_run_id).update(status=Run.Status.DONE)

    again = schedule_tick(schedule.pk)

    assert again.action == SKIP and again.new_comparisons == 0
    assert "0 new accepted comparisons since" in again.reason
    assert new_comparisons(labelled).since == first.snapshot.created_at
    make_items(labelled, 2, k=3)
    call_command("simulate_annotators", "--project", labelled.slug, "--noise", "0.0")
    assert schedule_tick(schedule.pk).action == TRAIN
    assert TrainingRun.objects.filter(kind="reward").count() == 2


def test_a_failed_reward_run_does_not_move_the_baseline(labelled: Project) -> None:
    schedule = save(labelled, min_new_comparisons=1)
    first = schedule_tick(schedule.pk)
    TrainingRun.objects.filter(pk=first.reward_run_id).update(status=Run.Status.FAILED)

    assert new_comparisons(labelled).since is None
    assert schedule_tick(schedule.pk).action == TRAIN


def test_then_dpo_queues_dpo_of_the_current_policy_on_the_same_snapshot(labelled: Project) -> None:
    schedule = save(labelled, min_new_comparisons=1, then_dpo=True, dpo_config={"beta": 0.2})

    decision = schedule_tick(schedule.pk)

    assert decision.action == TRAIN
    dpo = decision.dpo_run
    assert (dpo.kind, dpo.snapshot_id, dpo.config["beta"]) == ("dpo", decision.snapshot_id, 0.2)
    assert set(decision.snapshot.kinds) == {"pairs", "dpo"}
    assert f"DPO run {dpo.pk}" in decision.reason
    # The policy trains on messages (rendered by its chat template, as when it is sampled);
    # the reward model on plain-format text.
    folder = snapshot_dir(decision.snapshot)
    assert isinstance(pq.read_table(folder / "dpo-train.parquet").to_pylist()[0]["prompt"], list)
    assert isinstance(pq.read_table(folder / "pairs-train.parquet").to_pylist()[0]["prompt"], str)


def test_disabled_schedules_log_why_they_did_nothing(labelled: Project) -> None:
    schedule = save(labelled, enabled=False, min_new_comparisons=1)
    decision = schedule_tick(schedule.pk)
    assert (decision.action, decision.reason) == (SKIP, "the schedule is disabled")
    assert not TrainingRun.objects.exists()


def test_a_tick_that_died_mid_build_is_finished_by_a_later_tick_once(labelled: Project) -> None:
    schedule = save(labelled, min_new_comparisons=1)
    decision, snapshot = _decide(schedule.pk)  # the worker dies before building it
    assert decision.action == SNAPSHOT

    waiting = schedule_tick(schedule.pk)
    assert waiting.action == WAIT and f"snapshot {snapshot.pk} is still being built" in waiting.reason

    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))  # the sweep re-queued the build
    started = schedule_tick(schedule.pk)
    duplicate = _start_runs(schedule.pk, snapshot.pk)  # a redelivered tick

    assert started.action == TRAIN and duplicate is None
    assert TrainingRun.objects.filter(snapshot=snapshot).count() == 1


def test_a_snapshot_with_nothing_to_train_on_is_logged_as_an_error(project: Project) -> None:
    schedule = save(project, min_new_comparisons=1)
    TrainingSchedule.objects.filter(pk=schedule.pk).update(min_new_comparisons=1)
    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["parquet"],
                                              status="failed", error="disk full")
    TrainingSchedule.objects.filter(pk=schedule.pk).update(pending_snapshot=snapshot)

    decision = schedule_tick(schedule.pk)

    assert decision.action == "error" and "disk full" in decision.reason
    schedule.refresh_from_db()
    assert schedule.pending_snapshot is None


def test_the_beat_task_runs_a_tick(labelled: Project) -> None:
    from training.tasks import schedule_tick as task

    schedule = save(labelled, min_new_comparisons=10_000)
    task.delay(schedule.pk)
    assert ScheduleDecision.objects.get().action == SKIP


# --------------------------------------------------------------------------- console


def logged_in(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


FORM = {"enabled": "on", "min_new_comparisons": "200", "interval_minutes": "45",
        "reward_config": '{"num_train_epochs": 2}', "dpo_config": "{}"}


def test_admins_edit_the_schedule_in_the_console(project: Project, project_admin) -> None:  # noqa: ANN001
    url = f"/console/projects/{project.pk}/schedule"
    response = logged_in(project_admin).post(url, FORM)

    assert response.status_code == 302
    schedule = TrainingSchedule.objects.get(project=project)
    assert (schedule.min_new_comparisons, schedule.interval_minutes, schedule.then_dpo) == (200, 45, False)
    assert schedule.reward_config == {"num_train_epochs": 2}
    page = logged_in(project_admin).get(url)
    assert page.status_code == 200 and b"Save schedule" in page.content and b"every 45 min" in page.content


def test_bad_console_input_shows_errors_and_saves_nothing(project: Project, project_admin) -> None:  # noqa: ANN001
    response = logged_in(project_admin).post(f"/console/projects/{project.pk}/schedule",
                                             {**FORM, "reward_config": "{not json", "interval_minutes": "0"})
    assert response.status_code == 200
    assert b"Enter a valid JSON" in response.content and b"greater than or equal to 1" in response.content
    assert not TrainingSchedule.objects.exists()


def test_reviewers_read_the_decisions_but_cannot_edit(labelled: Project, reviewer, project_admin) -> None:  # noqa: ANN001
    schedule = save(labelled, project_admin, min_new_comparisons=10_000)
    schedule_tick(schedule.pk)
    url = f"/console/projects/{labelled.pk}/schedule"

    page = logged_in(reviewer).get(url)
    post = logged_in(reviewer).post(url, FORM)

    assert page.status_code == 200 and b"waiting for 10000" in page.content
    assert b"Save schedule" not in page.content
    assert post.status_code == 403
    schedule.refresh_from_db()
    assert schedule.min_new_comparisons == 10_000


def test_annotators_and_outsiders_never_see_it(project: Project, annotator, outsider) -> None:  # noqa: ANN001
    url = f"/console/projects/{project.pk}/schedule"
    assert logged_in(annotator).get(url).status_code == 403
    outsider_reviewer = UserFactory()
    from labeling.models import Membership

    Membership.objects.create(user=outsider_reviewer, project=outsider.memberships.get().project,
                              role="admin")
    assert logged_in(outsider_reviewer).get(url).status_code == 404
    assert logged_in(outsider_reviewer).post(url, FORM).status_code == 404
    assert not TrainingSchedule.objects.exists()
