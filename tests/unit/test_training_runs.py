"""Training runs through Ordinal's pipeline (snapshot -> run -> engine -> registry) with
the real built-in models (MiniLM reward backbone, the tiny LM policy)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from core.errors import DomainError
from core.runs import Run, run_claim
from labeling.models import AuditEvent, Project
from tests.factories import make_items
from training.models import DatasetSnapshot, ModelVersion, TrainingMetric, TrainingRun
from training.registry import model_version_promote
from training.runs import training_run_create, training_run_execute
from training.snapshots import snapshot_build, snapshot_create

FAST = {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2,
        "max_length": 128}


@pytest.fixture
def snapshot(db: None, settings, tmp_path) -> DatasetSnapshot:  # noqa: ANN001
    project = Project.objects.create(name="Loop", slug="loop", is_demo=True, overlap=3)
    make_items(project, 8, k=3)
    call_command("simulate_annotators", "--project", "loop", "--create", "3", "--noise", "0.1")
    snap = snapshot_create(project=project, kinds=["pairs", "dpo", "sft"], formats=["parquet"],
                           enqueue=False, options={"validation_fraction": 0.4, "split_seed": 1})
    snapshot_build(run_claim(DatasetSnapshot, snap.pk))
    snap.refresh_from_db()
    assert snap.counts["pairs-train"] > 0
    return snap


def execute(run: TrainingRun) -> TrainingRun:
    training_run_execute(run_claim(TrainingRun, run.pk))
    run.refresh_from_db()
    return run


def test_reward_run_streams_metrics_registers_and_promotes(snapshot, tiny_model) -> None:  # noqa: ANN001
    run = execute(training_run_create(project=snapshot.project, kind="reward", snapshot=snapshot,
                                      config=FAST, enqueue=False))

    assert run.status == Run.Status.DONE, run.error
    assert run.results["global_step"] == 3 and run.results["train_pairs"] > 0
    assert TrainingMetric.objects.filter(run=run).count() >= 2
    assert all("loss" in m.values for m in TrainingMetric.objects.filter(run=run)[:1])
    version = ModelVersion.objects.get(source_run=run)
    assert version.kind == "reward" and version.version == 1 and not version.is_current
    assert version.warnings == run.results["warnings"]  # a 3-step toy run may be flagged: confirmed here
    model_version_promote(version=version, actor=None, confirm=True)
    version.refresh_from_db()
    assert version.is_current
    assert AuditEvent.objects.filter(action="model.promote_reward").count() == 1


def test_dpo_policy_run_is_merged_for_generation(snapshot, tiny_model) -> None:  # noqa: ANN001
    run = execute(training_run_create(project=snapshot.project, kind="dpo", snapshot=snapshot,
                                      config={**FAST, "per_device_train_batch_size": 2},
                                      enqueue=False))

    assert run.status == Run.Status.DONE, run.error
    version = ModelVersion.objects.get(source_run=run)
    assert version.kind == "policy" and version.merged_path
    from training.engine.backends import load_backend
    from training.engine.sampling import SamplingParams, sample

    backend = load_backend("transformers", version.merged_path)
    result = sample([[{"role": "user", "content": "Hello?"}]],
                    SamplingParams(k=2, max_new_tokens=6), backend)
    assert len(result[0].samples) == 2


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("reward", {"config": {"nonsense": 1}}, "unknown"),
    # JSON of the wrong type is refused at creation, not by the trainer hours later.
    ("reward", {"config": {"learning_rate": "fast"}}, "learning_rate must be float"),
    ("sft", {"config": {"max_steps": True}}, "max_steps must be int"),
    ("dpo", {"config": {"lora_target_modules": [1, 2]}}, "lora_target_modules must be"),
    ("rl", {"config": {}}, "reward model"),
    ("bogus", {"config": {}}, "kind must be"),
])
def test_bad_runs_are_refused(snapshot, kind, kwargs, message) -> None:  # noqa: ANN001
    with pytest.raises(DomainError, match=message):
        training_run_create(project=snapshot.project, kind=kind, snapshot=snapshot,
                            enqueue=False, **kwargs)


@pytest.mark.parametrize("kind", ["sft", "dpo", "rl"])
def test_policy_runs_refuse_a_snapshot_of_text_prompts(snapshot, kind) -> None:  # noqa: ANN001
    """Text prompts cannot go through the policy's chat template, so the policy would be
    trained on one prompt format and sampled with another: refused at creation."""
    text = snapshot_create(project=snapshot.project, kinds=["pairs", "dpo", "sft"], formats=["parquet"],
                           enqueue=False, options={"conversational": False})
    snapshot_build(run_claim(DatasetSnapshot, text.pk))
    text.refresh_from_db()

    with pytest.raises(DomainError, match="holds text prompts"):
        training_run_create(project=text.project, kind=kind, snapshot=text, config=FAST, enqueue=False)
    assert training_run_create(project=text.project, kind="reward", snapshot=text, config=FAST,
                               enqueue=False).status == Run.Status.QUEUED


def test_api_access(as_user, snapshot, annotator, outsider) -> None:  # noqa: ANN001
    from labeling.models import Membership

    Membership.objects.create(user=annotator, project=snapshot.project, role="annotator")
    url = f"/api/projects/{snapshot.project.pk}/training-runs"
    body = {"kind": "reward", "snapshot": snapshot.pk, "config": FAST}

    assert as_user(annotator).post(url, body, format="json").status_code == 403
    assert as_user(outsider).post(url, body, format="json").status_code == 404
    assert as_user(annotator).get(url).status_code == 403
    assert as_user(outsider).get(f"/api/projects/{snapshot.project.pk}/model-versions"
                                 ).status_code == 404


def test_a_time_limit_inside_the_engine_fails_the_run_with_the_limit_message(snapshot, settings) -> None:  # noqa: ANN001
    from unittest import mock

    from celery.exceptions import SoftTimeLimitExceeded

    from config.celery import app

    run = training_run_create(project=snapshot.project, kind="reward", snapshot=snapshot,
                              config=FAST, enqueue=False)
    soft = settings.RUN_SOFT_TIME_LIMITS["training.tasks.train_run"]
    with mock.patch("training.engine.cli.train", side_effect=SoftTimeLimitExceeded()):
        app.tasks["training.tasks.train_run"].apply(args=[run.pk])

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == f"time limit exceeded: stopped at the soft limit of {soft} s"
    assert not ModelVersion.objects.filter(source_run=run).exists()
