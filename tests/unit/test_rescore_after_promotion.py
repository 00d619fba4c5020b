"""After a reward model is promoted, a task on the generate queue re-scores the undecided
items' candidates with it, so the RM column and `uncertain_first` use the new model."""

from __future__ import annotations

import pytest

from core.runs import Run
from labeling.models import AuditEvent, Item
from tests.factories import make_items
from tests.unit.test_training_runs import FAST, execute, snapshot  # noqa: F401 - fixture
from training.models import CandidateScore, ModelVersion
from training.registry import (
    RESCORE_TASK,
    PromotionNeedsConfirmation,
    model_version_promote,
    undecided_items_rescore,
)
from training.runs import training_run_create


def test_promotion_rescores_the_undecided_items(snapshot, tiny_model,  # noqa: ANN001, F811
                                                django_capture_on_commit_callbacks) -> None:  # noqa: ANN001
    project = snapshot.project
    run = execute(training_run_create(project=project, kind="reward", snapshot=snapshot, config=FAST,
                                      enqueue=False))
    assert run.status == Run.Status.DONE, run.error
    version = ModelVersion.objects.get(source_run=run)
    decided = set(Item.objects.filter(project=project, status__in=["accepted", "discarded"])
                  .values_list("candidates", flat=True))
    open_items = [item for item in make_items(project, 3, k=3) if item.status == "open"]
    assert len(open_items) == 3  # they arrive after the snapshot: no scores yet
    assert not CandidateScore.objects.exists()

    with django_capture_on_commit_callbacks(execute=True) as sent:
        model_version_promote(version=version, actor=None, confirm=True)
    assert len(sent) >= 1  # the re-scoring task, sent after commit (eager here)

    scored = CandidateScore.objects.filter(model_version=version)
    for item in open_items:
        ids = set(item.candidates.values_list("id", flat=True))
        assert set(scored.filter(candidate__in=ids).values_list("candidate_id", flat=True)) == ids
        item.refresh_from_db()
        assert item.uncertainty is not None
    assert not scored.filter(candidate__in=decided).exists()  # decided items are left alone
    assert undecided_items_rescore(version=version) == 0  # redelivered: nothing left to do
    assert RESCORE_TASK.startswith("training.tasks.generate_")  # routed to the generate queue


def test_a_second_reward_model_is_compared_head_to_head_with_the_current_one(snapshot, tiny_model) -> None:  # noqa: ANN001, F811
    project = snapshot.project
    first = execute(training_run_create(project=project, kind="reward", snapshot=snapshot, config=FAST, enqueue=False))
    current = ModelVersion.objects.get(source_run=first)
    assert "vs_current" not in current.metrics  # nothing to compare with yet
    model_version_promote(version=current, actor=None, confirm=True)
    second = execute(training_run_create(project=project, kind="reward", snapshot=snapshot,
                                         config={**FAST, "max_steps": 4}, enqueue=False))
    version = ModelVersion.objects.get(source_run=second)
    versus = version.metrics["vs_current"]
    assert versus["version"] == current.pk and versus["pairs"] == version.metrics["eval_pairs"]
    # Scored through the same input builder as the engine's evaluation: the same accuracies.
    assert versus["accuracy"] == pytest.approx(version.metrics["eval_accuracy"])
    assert versus["current_accuracy"] == pytest.approx(current.metrics["eval_accuracy"])  # same held-out pairs
    assert versus["wins"] + versus["losses"] <= versus["pairs"]
    assert versus["wins"] - versus["losses"] == round((versus["accuracy"] - versus["current_accuracy"])
                                                      * versus["pairs"])


def test_promoting_a_worse_reward_model_needs_confirmation(project) -> None:  # noqa: ANN001
    good = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="b",
                                       metrics={"eval_accuracy": 0.8}, is_current=True)
    worse = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=2, base_model="b",
                                        metrics={"eval_accuracy": 0.7})
    with pytest.raises(PromotionNeedsConfirmation, match="worse than the current"):
        model_version_promote(version=worse, actor=None)
    good.refresh_from_db()
    assert good.is_current
    model_version_promote(version=worse, actor=None, confirm=True)
    event = AuditEvent.objects.get(action="model.promote_reward")
    assert event.after["confirmed_worse_than"] == str(good)
