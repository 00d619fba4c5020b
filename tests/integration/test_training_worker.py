"""A training run on a real worker survives a SIGKILL: the sweep re-queues it and it
resumes from its last complete checkpoint, the step count continuing."""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command

from core.runs import Run, run_claim, runs_sweep_stale
from labeling.models import Project
from tests.factories import make_items
from tests.integration.conftest import Worker, wait_until
from training.models import DatasetSnapshot, TrainingMetric, TrainingRun
from training.runs import training_run_create
from training.snapshots import snapshot_build, snapshot_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_killed_training_resumes_from_its_checkpoint(tiny_model, tiny_model_dir, tmp_path,  # noqa: ANN001
                                                    settings) -> None:
    project = Project.objects.create(name="Train", slug="train-kill", is_demo=True, overlap=3)
    make_items(project, 8, k=3)
    call_command("simulate_annotators", "--project", project.slug, "--create", "3")
    snapshot = snapshot_create(project=project, kinds=["dpo"], formats=["parquet"], enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    env = {"BUILTIN_TINY_DIR": str(tiny_model_dir), "TORCH_NUM_THREADS": "1",
           "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT)}
    first = Worker(tmp_path / "first.log", env)
    run = training_run_create(project=project, kind="dpo", snapshot=snapshot, config={
        "max_steps": 12, "per_device_train_batch_size": 2, "logging_steps": 1, "save_steps": 3,
        "max_length": 128})
    try:
        wait_until(lambda: TrainingMetric.objects.filter(run=run, step__gte=4).exists()
                   or TrainingRun.objects.get(pk=run.pk).is_finished,
                   timeout=300, what="a checkpoint and a few more steps")
        run.refresh_from_db()
        assert run.status == Run.Status.RUNNING, run.error
    finally:
        first.kill()
    killed_at = TrainingMetric.objects.filter(run=run).order_by("-step").first().step
    assert killed_at < 12, "finished before it could be killed"

    settings.RUN_STALE_AFTER_SECONDS = 1
    time.sleep(2)
    second = Worker(tmp_path / "second.log", env)
    try:
        assert runs_sweep_stale()["requeued"] == 1
        wait_until(lambda: TrainingRun.objects.get(pk=run.pk).is_finished, timeout=400,
                   what="the resumed run")
    finally:
        second.stop()

    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error + second.output()[-3000:]
    assert run.attempts == 2 and run.results["global_step"] == 12
    resumed = run.results.get("resumed_from") or ""
    assert resumed.rsplit("checkpoint-", 1)[-1] in {"3", "6", "9"}, run.results
    # The metrics continue from the checkpoint, they do not restart at step 1.
    assert TrainingMetric.objects.filter(run=run, step=12).exists()
