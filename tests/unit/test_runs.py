"""Runs are recovered from the database: claim once, heartbeat, stale sweep, bounded
attempts, lost messages re-sent."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from core.runs import Run, run_cancel, run_claim, run_heartbeat, runs_sweep_stale
from labeling.models import ImportJob, Project


@pytest.fixture
def job(project: Project) -> ImportJob:
    return ImportJob.objects.create(project=project, file_path="/tmp/none", original_name="a.jsonl")


def test_a_run_is_claimed_once(job: ImportJob) -> None:
    first = run_claim(ImportJob, job.pk)
    second = run_claim(ImportJob, job.pk)

    assert first is not None and first.status == Run.Status.RUNNING and first.attempts == 1
    assert second is None


def test_heartbeat_reports_cancellation(job: ImportJob) -> None:
    running = run_claim(ImportJob, job.pk)
    assert run_heartbeat(running, rows=10)

    run_cancel(running)

    assert not run_heartbeat(running, rows=20)
    running.refresh_from_db()
    assert running.status == Run.Status.CANCELLED and running.progress == {"rows": 10}


def age(run: Run, seconds: int) -> None:
    past = timezone.now() - timedelta(seconds=seconds)
    type(run).objects.filter(pk=run.pk).update(heartbeat_at=past, queued_at=past)


@pytest.mark.django_db(transaction=True)
def test_sweep_requeues_a_stale_run_and_sends_its_task(job: ImportJob, settings) -> None:  # noqa: ANN001
    run_claim(ImportJob, job.pk)
    age(job, settings.RUN_STALE_AFTER_SECONDS + 5)

    with mock.patch("core.runs.send_run_task") as send:
        counts = runs_sweep_stale()

    job.refresh_from_db()
    assert counts["requeued"] == 1 and job.status == Run.Status.QUEUED
    send.assert_called_once_with("labeling.tasks.import_prompts", job.pk)


@pytest.mark.django_db(transaction=True)
def test_sweep_fails_a_run_out_of_attempts(job: ImportJob, settings) -> None:  # noqa: ANN001
    ImportJob.objects.filter(pk=job.pk).update(status=Run.Status.RUNNING,
                                               attempts=settings.RUN_MAX_ATTEMPTS)
    age(job, settings.RUN_STALE_AFTER_SECONDS + 5)

    with mock.patch("core.runs.send_run_task") as send:
        counts = runs_sweep_stale()

    job.refresh_from_db()
    assert counts["failed"] == 1 and job.status == Run.Status.FAILED
    assert "worker lost" in job.error
    send.assert_not_called()


@pytest.mark.django_db(transaction=True)
def test_sweep_leaves_fresh_runs_alone_and_resends_lost_queued(job: ImportJob, project: Project,
                                                               settings) -> None:  # noqa: ANN001
    fresh = ImportJob.objects.create(project=project, file_path="/x", original_name="b.jsonl")
    run_claim(ImportJob, fresh.pk)
    age(job, settings.RUN_STALE_AFTER_SECONDS + 5)  # queued long ago: its message was lost

    with mock.patch("core.runs.send_run_task") as send:
        counts = runs_sweep_stale()

    assert counts == {"requeued": 0, "failed": 0, "resent": 1}
    send.assert_called_once_with("labeling.tasks.import_prompts", job.pk)
    fresh.refresh_from_db()
    assert fresh.status == Run.Status.RUNNING


def test_beat_schedule_runs_the_sweep(settings) -> None:  # noqa: ANN001
    entry = settings.CELERY_BEAT_SCHEDULE["sweep-stale-runs"]

    assert entry["task"] == "core.tasks.sweep_stale_runs"
    assert entry["schedule"] == float(settings.RUN_SWEEP_INTERVAL_SECONDS)
