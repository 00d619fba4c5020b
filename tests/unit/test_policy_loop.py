"""Closing the loop end to end: labels that prefer answers ending in a marker word train a
policy (snapshot -> SFT run -> registered, promoted version), and the promoted policy's
samples, drawn through a generation run, carry the marker far more often than the base
model's. Training and sampling see the same prompt format (training.engine.prompt_format);
the built-in tiny model learns the marker in a few dozen steps on one CPU thread."""

from __future__ import annotations

import math

import pytest

from core.runs import Run, run_claim
from labeling.blind import tiers_as_shown
from labeling.models import Candidate, Project
from labeling.services.assignment import next_item
from labeling.services.items import items_create_for_prompt
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import CandidateFactory, MembershipFactory, PromptFactory, UserFactory
from training.generation import generation_run_create, generation_run_execute
from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingRun
from training.registry import current_model, model_version_promote
from training.runs import training_run_create, training_run_execute
from training.snapshots import snapshot_build, snapshot_create

MARKER = "banana"  # one token of the tiny model's vocabulary, and never in its base samples here
TOPICS = ["bread", "tea", "rivers", "cats", "maps", "stars", "rain", "boats", "music", "gardens", "bees",
          "clocks", "snow", "trains", "books", "soup"]
SAMPLING = {"k": 4, "max_new_tokens": 24, "temperature": 1.0, "seed": 1}
SFT = {"max_steps": 40, "per_device_train_batch_size": 8, "learning_rate": 5e-3, "max_length": 64,
       "logging_steps": 10, "save_steps": 1000}


@pytest.fixture
def labelled(db: None) -> Project:
    """One prompt per topic, two answers each; the annotator always prefers the one that
    ends with the marker."""
    project = Project.objects.create(name="Marker", slug="marker", k=2, overlap=1)
    annotator = UserFactory(username="marker-fan")
    MembershipFactory(user=annotator, project=project)
    for topic in TOPICS:
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Tell me about {topic}."}])
        ids = [CandidateFactory(prompt=prompt, text=text).pk
               for text in (f"I like {topic} {MARKER}.", f"I like {topic}.")]
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    while (assignment := next_item(annotator=annotator, project=project)) is not None:
        marked = Candidate.objects.get(pk__in=assignment.display_order, text__contains=MARKER).pk
        other = next(c for c in assignment.display_order if c != marked)
        ranking_submit(annotator=annotator, assignment_id=assignment.pk, idempotency_key=f"a{assignment.pk}",
                       data=RankingInput(tiers=tiers_as_shown(assignment, [[marked], [other]])))
    assert project.items.filter(status="accepted").count() == len(TOPICS)
    return project


def marker_rate(project: Project, **source: object) -> tuple[int, int]:
    """(samples with the marker, samples) of a generation run over every prompt."""
    run = generation_run_create(project=project, params=SAMPLING, enqueue=False,
                                prompt_ids=list(project.prompts.values_list("id", flat=True)), **source)
    generation_run_execute(run_claim(GenerationRun, run.pk))
    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error
    texts = list(Candidate.objects.filter(dedupe_key__startswith=f"run:{run.pk}:").values_list("text", flat=True))
    return sum(MARKER in text for text in texts), len(texts)


def z_score(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Two-proportion z statistic (pooled) for after's rate being above before's."""
    (x0, n0), (x1, n1) = before, after
    pooled = (x0 + x1) / (n0 + n1)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1)) or 1e-9
    return (x1 / n1 - x0 / n0) / spread


def test_promoted_policy_samples_move_toward_the_preferred_answers(labelled: Project, tiny_model, settings) -> None:  # noqa: ANN001
    settings.TORCH_NUM_THREADS = 1
    before = marker_rate(labelled, backend="builtin-tiny")
    snapshot = snapshot_create(project=labelled, kinds=["sft"], formats=["parquet"], enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()

    run = training_run_create(project=labelled, kind="sft", snapshot=snapshot, config=SFT, enqueue=False)
    training_run_execute(run_claim(TrainingRun, run.pk))
    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error
    model_version_promote(version=ModelVersion.objects.get(source_run=run), actor=None)
    after = marker_rate(labelled, backend="", policy=current_model(labelled, "policy"))

    assert before[1] == after[1] == len(TOPICS) * SAMPLING["k"]
    # Measured: 1/64 before, 45/64 after; 15/64 when the policy was trained on text prompts
    # and sampled through its chat template (the defect this guards against).
    assert after[0] / after[1] >= 0.4, (before, after)
    assert z_score(before, after) > 3.0, (before, after)  # one-sided p < 0.0014
