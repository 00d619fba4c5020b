"""Generation runs with the real built-in tiny model: K candidates per prompt, items,
idempotent re-runs, skips for prompts that do not fit, validation, access."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from core.errors import DomainError
from core.runs import Run, run_cancel, run_claim
from labeling.models import Candidate, Item, Project
from tests.factories import PromptFactory
from training.generation import generation_run_create, generation_run_execute
from training.models import GenerationRun

PARAMS = {"k": 3, "temperature": 1.0, "max_new_tokens": 12, "seed": 7}


@pytest.fixture
def prompts(project: Project) -> list:
    return [PromptFactory(project=project, messages=[{"role": "user", "content": text}])
            for text in ("How do plants grow?", "Name a colour.", "What is a river?")]


def execute(run: GenerationRun) -> GenerationRun:
    generation_run_execute(run_claim(GenerationRun, run.pk))
    run.refresh_from_db()
    return run


def test_each_prompt_gets_k_candidates_and_an_item(project, prompts, tiny_model) -> None:  # noqa: ANN001
    run = generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                enqueue=False)

    run = execute(run)

    assert run.status == Run.Status.DONE, run.error
    assert Candidate.objects.filter(origin="model").count() == 9
    candidate = Candidate.objects.filter(origin="model").first()
    assert candidate.seed is not None and candidate.completion_tokens > 0
    assert candidate.sampling_params["temperature"] == 1.0
    # One item per prompt, unless the model sampled the same text twice for it.
    assert Item.objects.count() == 3 - sum(
        1 for p in prompts if p.candidates.filter(is_duplicate=False).count() < 2)
    assert run.progress["prompts_done"] == 3 and run.progress["tokens_generated"] > 0
    assert 0.0 <= run.stats["duplicate_rate"] <= 1.0 and run.stats["distinct_2"] is not None


def test_running_again_adds_nothing(project, prompts, tiny_model) -> None:  # noqa: ANN001
    execute(generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                  enqueue=False))
    before = (Candidate.objects.count(), Item.objects.count())

    second = generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                   enqueue=False)

    assert second.prompt_ids == []
    assert (Candidate.objects.count(), Item.objects.count()) == before


def test_a_redelivered_run_continues_without_duplicates(project, prompts, tiny_model) -> None:  # noqa: ANN001
    run = execute(generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                        enqueue=False))
    GenerationRun.objects.filter(pk=run.pk).update(status=Run.Status.QUEUED)

    execute(run)

    assert Candidate.objects.filter(dedupe_key__startswith=f"run:{run.pk}:").count() == 9
    assert Item.objects.count() == len(set(Item.objects.values_list("prompt_id", flat=True)))


def test_same_seed_reproduces_the_same_candidates(project, prompts, tiny_model) -> None:  # noqa: ANN001
    first = execute(generation_run_create(project=project, backend="builtin-tiny",
                                          params=PARAMS, prompt_ids=[prompts[0].pk], enqueue=False))
    texts = list(Candidate.objects.filter(dedupe_key__startswith=f"run:{first.pk}:")
                 .order_by("sample_index").values_list("text", flat=True))

    from training.engine.backends import load_backend
    from training.engine.sampling import SamplingParams, prompt_seed, sample

    backend = load_backend("builtin-tiny", str(tiny_model))
    again = sample([prompts[0].messages], SamplingParams(**PARAMS), backend,
                   seeds=[prompt_seed(PARAMS["seed"], prompts[0].pk)])

    assert [s.text for s in again[0].samples] == texts


def test_prompt_too_long_is_skipped_with_the_reason(project, tiny_model) -> None:  # noqa: ANN001
    long = PromptFactory(project=project, messages=[{"role": "user",
                                                     "content": "word " * 4000}])

    run = execute(generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                        enqueue=False))

    assert run.status == Run.Status.DONE
    assert run.errors and run.errors[0]["prompt"] == long.pk
    assert "context" in run.errors[0]["reason"]
    assert not Candidate.objects.filter(prompt=long).exists()


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 1}, "k must be"), ({"temperature": -1}, "temperature"),
    ({"max_new_tokens": 0}, "max_new_tokens")])
def test_bad_params_are_refused(project, params, message) -> None:  # noqa: ANN001
    with pytest.raises(DomainError, match=message):
        generation_run_create(project=project, backend="builtin-tiny", params=params,
                              enqueue=False)


def test_a_model_folder_that_does_not_load_fails_the_run_clearly(project, prompts, settings,
                                                                  tmp_path) -> None:  # noqa: ANN001
    settings.MODEL_DIRS = [tmp_path]
    (tmp_path / "empty").mkdir()

    run = execute(generation_run_create(project=project, backend="transformers",
                                        model=str(tmp_path / "empty"), params=PARAMS, enqueue=False))

    assert run.status == Run.Status.FAILED and str(tmp_path / "empty") in run.error


@pytest.mark.parametrize("options", [{"api_key": "sk-x"}, {"base_url": "http://x/v1"},
                                     {"n_per_request": "yes"}])
def test_api_keys_urls_and_unknown_options_are_never_stored(project, settings, options) -> None:  # noqa: ANN001
    settings.GENERATION_ENDPOINTS = {"openai": {"base_url": "https://api.openai.com/v1"}}

    with pytest.raises(DomainError, match="never a URL or a key"):
        generation_run_create(project=project, backend="openai", model="m", params=PARAMS,
                              backend_options=options, enqueue=False)


def test_cancelled_run_stops(project, prompts, tiny_model, settings) -> None:  # noqa: ANN001
    settings.GENERATION_CHUNK_PROMPTS = 1
    run = generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                enqueue=False)
    claimed = run_claim(GenerationRun, run.pk)
    run_cancel(claimed)

    generation_run_execute(claimed)

    claimed.refresh_from_db()
    assert claimed.status == Run.Status.CANCELLED
    assert Candidate.objects.filter(origin="model").count() <= 3


def test_api_start_poll_cancel_and_access(as_user, project, prompts, project_admin, reviewer,
                                          annotator, outsider, tiny_model) -> None:  # noqa: ANN001
    url = f"/api/projects/{project.pk}/generation-runs"
    body = {"backend": "builtin-tiny", **PARAMS}

    assert as_user(annotator).post(url, body, format="json").status_code == 403
    assert as_user(outsider).post(url, body, format="json").status_code == 404
    bad = as_user(project_admin).post(url, {**body, "k": 1}, format="json")
    created = as_user(project_admin).post(url, body, format="json")

    assert bad.status_code == 400 and "k must be" in bad.json()["detail"]
    assert created.status_code == 202
    polled = as_user(reviewer).get(f"/api/generation-runs/{created.json()['id']}").json()
    assert polled["status"] in {"queued", "running", "done"}
    assert as_user(outsider).get(f"/api/generation-runs/{created.json()['id']}").status_code == 404
    cancel = as_user(reviewer).post(f"/api/generation-runs/{created.json()['id']}/cancel")
    assert cancel.status_code == 403


def test_cli_generate_then_again_adds_nothing(project, prompts, tiny_model) -> None:  # noqa: ANN001
    out = StringIO()
    call_command("generate", "--project", project.slug, "--k", "3", "--max-new-tokens", "8",
                 stdout=out, stderr=StringIO())
    again = StringIO()
    call_command("generate", "--project", project.slug, "--k", "3", stdout=again)

    assert "9 candidates" in out.getvalue()
    assert "0 prompts need candidates" in again.getvalue()
    with pytest.raises(CommandError, match="k must be"):
        call_command("generate", "--project", project.slug, "--k", "1")


def test_a_nul_the_model_writes_is_stored_as_a_replacement_character(project, prompts, tiny_model,  # noqa: ANN001
                                                                      monkeypatch) -> None:
    """PostgreSQL stores no NUL: one in a sample failed the whole chunk (CI saw the tiny
    model write one). The answer is kept, the NUL replaced by U+FFFD."""
    import dataclasses

    from training import generation

    real = generation.sample_chunk

    def with_a_nul(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        results = list(real(*args, **kwargs))
        samples = list(results[0].samples)
        samples[0] = dataclasses.replace(samples[0], text=f"{samples[0].text}\x00end")
        results[0] = dataclasses.replace(results[0], samples=type(results[0].samples)(samples))
        return results

    monkeypatch.setattr(generation, "sample_chunk", with_a_nul)
    run = execute(generation_run_create(project=project, backend="builtin-tiny", params=PARAMS,
                                        prompt_ids=[p.pk for p in prompts], enqueue=False))

    assert run.status == Run.Status.DONE, run.error
    texts = list(Candidate.objects.filter(dedupe_key__startswith=f"run:{run.pk}:").values_list("text", flat=True))
    assert len(texts) == 3 * len(prompts)
    assert [t for t in texts if t.endswith("\ufffdend")] and not [t for t in texts if "\x00" in t]
