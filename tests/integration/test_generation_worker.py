"""A generation run on a real worker survives a SIGKILL mid-run: the stale-run sweep
re-queues it, a new worker finishes it, and nothing is duplicated."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from core.runs import Run, runs_sweep_stale
from labeling.models import Candidate, Item
from tests.factories import PromptFactory
from tests.integration.conftest import Worker, wait_until
from training.generation import generation_run_create
from training.models import GenerationRun

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

K, PROMPTS = 3, 16


def test_worker_killed_mid_run_is_resumed_without_duplicates(
    project, tiny_model_dir, tmp_path, settings,  # noqa: ANN001
) -> None:
    for n in range(PROMPTS):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Tell me about {n}."}])
    env = {"BUILTIN_TINY_DIR": str(tiny_model_dir), "GENERATION_CHUNK_PROMPTS": "2",
           "TORCH_NUM_THREADS": "1"}
    first = Worker(tmp_path / "first.log", env)
    run = generation_run_create(project=project, backend="builtin-tiny",
                                params={"k": K, "max_new_tokens": 24, "seed": 3})
    written = Candidate.objects.filter(dedupe_key__startswith=f"run:{run.pk}:")
    try:
        wait_until(lambda: written.count() >= 2 * K, timeout=240, what="a first chunk")
        assert written.count() < PROMPTS * K, "the run finished before it could be killed"
    finally:
        first.kill()
    assert GenerationRun.objects.get(pk=run.pk).status == Run.Status.RUNNING

    settings.RUN_STALE_AFTER_SECONDS = 1
    time.sleep(2)
    second = Worker(tmp_path / "second.log", env)
    try:
        assert runs_sweep_stale()["requeued"] == 1
        wait_until(lambda: GenerationRun.objects.get(pk=run.pk).is_finished, timeout=300,
                   what="the re-queued run")
    finally:
        second.stop()

    run.refresh_from_db()
    assert run.status == Run.Status.DONE, run.error + second.output()[-2000:]
    assert run.attempts == 2
    assert written.count() == PROMPTS * K
    assert max(Counter(written.values_list("prompt_id", "sample_index")).values()) == 1
    per_prompt = Counter(Item.objects.filter(project=project).values_list("prompt_id", flat=True))
    assert max(per_prompt.values()) == 1 and len(per_prompt) >= PROMPTS - 1
