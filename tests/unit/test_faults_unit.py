"""Fault handling of runs without real processes: the soft time limit fails a run and
releases its claim, the sweep fails (never re-queues) a run killed at its hard limit,
and a broker that is down when a run is created leaves it for the sweep instead of
failing the request. The same faults with real workers: tests/integration/test_faults.py."""

from __future__ import annotations

import runpy
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone
from kombu.exceptions import OperationalError

from config.celery import app
from core.runs import Run, run_claim, run_enqueue, run_models, run_time_limits, runs_sweep_stale
from labeling.models import ImportJob, Project
from training.models import DatasetSnapshot, GenerationRun, TrainingRun

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "config" / "settings.py"


def make_run(model: type[Run], project: Project) -> Run:
    fields = {
        ImportJob: {"file_path": "/nonexistent/x.upload", "original_name": "x.jsonl"},
        GenerationRun: {"backend": "builtin-tiny", "params": {"k": 2}},
        DatasetSnapshot: {"kinds": ["pairs"], "formats": ["jsonl"]},
        TrainingRun: {"kind": "reward", "base_model": "builtin-tiny"},
    }[model]
    return model.objects.create(project=project, **fields)


def test_every_run_kind_has_soft_and_hard_limits_on_its_task(settings) -> None:  # noqa: ANN001
    for model in run_models():
        soft, hard = run_time_limits(model)
        task = app.tasks[model.task_name]

        assert soft == settings.RUN_SOFT_TIME_LIMITS[model.task_name]
        assert hard == soft + settings.RUN_TIME_LIMIT_GRACE_SECONDS
        assert (task.soft_time_limit, task.time_limit) == (soft, hard), model.task_name


def test_time_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORT_TIME_LIMIT_SECONDS", "30")
    monkeypatch.setenv("TRAINING_TIME_LIMIT_SECONDS", "7200")
    monkeypatch.setenv("RUN_TIME_LIMIT_GRACE_SECONDS", "5")

    loaded = runpy.run_path(str(SETTINGS_FILE))

    annotations = loaded["CELERY_TASK_ANNOTATIONS"]
    assert annotations["labeling.tasks.import_prompts"] == {"soft_time_limit": 30, "time_limit": 35}
    assert annotations["training.tasks.train_run"] == {"soft_time_limit": 7200, "time_limit": 7205}
    assert annotations["training.tasks.generate_candidates"]["soft_time_limit"] == 24 * 3600


def test_a_zero_time_limit_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("GENERATION_TIME_LIMIT_SECONDS", "0")

    with pytest.raises(ImproperlyConfigured, match="GENERATION_TIME_LIMIT_SECONDS"):
        runpy.run_path(str(SETTINGS_FILE))


SERVICES = {
    ImportJob: "labeling.tasks.prompts_import",
    GenerationRun: "training.generation.generation_run_execute",
    DatasetSnapshot: "training.snapshots.snapshot_build",
    TrainingRun: "training.runs.training_run_execute",
}


@pytest.mark.parametrize("model", list(SERVICES), ids=lambda m: m.__name__)
def test_soft_time_limit_fails_the_run_and_releases_its_claim(
    model: type[Run], project: Project, settings,  # noqa: ANN001
) -> None:
    run = make_run(model, project)
    soft = settings.RUN_SOFT_TIME_LIMITS[model.task_name]

    with mock.patch(SERVICES[model], side_effect=SoftTimeLimitExceeded()) as service:
        app.tasks[model.task_name].apply(args=[run.pk])

    run.refresh_from_db()
    assert service.call_count == 1
    assert run.status == Run.Status.FAILED and run.finished_at is not None
    assert run.error == f"time limit exceeded: stopped at the soft limit of {soft} s"
    # Released: however long ago it started, the sweep has nothing to re-queue.
    model.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(days=3))
    with mock.patch("core.runs.send_run_task") as send:
        assert runs_sweep_stale() == {"requeued": 0, "failed": 0, "resent": 0}
    send.assert_not_called()


def age_attempt(run: Run, *, started_seconds_ago: int, silent_seconds: int) -> None:
    now = timezone.now()
    type(run).objects.filter(pk=run.pk).update(
        started_at=now - timedelta(seconds=started_seconds_ago),
        heartbeat_at=now - timedelta(seconds=silent_seconds),
    )


@pytest.mark.django_db(transaction=True)
def test_sweep_fails_a_run_killed_at_its_hard_limit_and_requeues_a_younger_one(
    project: Project, settings,  # noqa: ANN001
) -> None:
    silent = settings.RUN_STALE_AFTER_SECONDS + 5
    settings.RUN_SOFT_TIME_LIMITS = {**settings.RUN_SOFT_TIME_LIMITS, ImportJob.task_name: silent + 100}
    settings.RUN_TIME_LIMIT_GRACE_SECONDS = 10  # hard limit: silent + 110 s
    killed, crashed = make_run(ImportJob, project), make_run(ImportJob, project)
    for run in (killed, crashed):
        run_claim(ImportJob, run.pk)
    # Both went silent; one attempt began longer ago than the hard limit, one did not.
    age_attempt(killed, started_seconds_ago=silent + 200, silent_seconds=silent)
    age_attempt(crashed, started_seconds_ago=silent + 50, silent_seconds=silent)

    with mock.patch("core.runs.send_run_task") as send:
        counts = runs_sweep_stale()

    killed.refresh_from_db()
    crashed.refresh_from_db()
    assert counts == {"requeued": 1, "failed": 1, "resent": 0}
    assert killed.status == Run.Status.FAILED
    assert killed.error.startswith("time limit exceeded: killed at the hard limit of")
    assert crashed.status == Run.Status.QUEUED
    send.assert_called_once_with(ImportJob.task_name, crashed.pk)


@pytest.mark.django_db(transaction=True)
def test_a_run_created_while_the_broker_is_down_is_kept_for_the_sweep(
    project: Project, settings, caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    task = app.tasks[ImportJob.task_name]
    down = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with mock.patch.object(task, "apply_async", side_effect=down) as publish:
        from django.db import transaction

        with transaction.atomic():
            job = make_run(ImportJob, project)
            run_enqueue(job)  # runs at commit: must not raise into the request

    job.refresh_from_db()
    assert publish.call_count == 1
    assert job.status == Run.Status.QUEUED
    assert "left for the sweep" in caplog.text
    ImportJob.objects.filter(pk=job.pk).update(
        queued_at=timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5))
    with mock.patch("core.runs.send_run_task") as send:
        assert runs_sweep_stale()["resent"] == 1
    send.assert_called_once_with(ImportJob.task_name, job.pk)


def test_run_messages_leave_time_limits_to_the_worker(settings) -> None:  # noqa: ANN001
    """Celery copies the sender's task limits into the message, where they override the
    worker's own: a web process with other settings would decide how long a GPU run lasts."""
    from core.runs import send_run_task

    app.conf.task_always_eager = False  # the autouse _eager_celery fixture restores it
    with mock.patch.object(app, "send_task") as publish:
        send_run_task(ImportJob.task_name, 7)

    options = publish.call_args.kwargs
    assert publish.call_args.args[:2] == (ImportJob.task_name, [7])
    assert options["time_limit"] is None and options["soft_time_limit"] is None
