"""The transformers backend, on the built-in tiny model: K samples with their seeds,
reproducibility, context-window skips, stop strings, chat template, load errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training.engine.backends import load_backend
from training.engine.prompt_format import plain_prompt
from training.engine.sampling import BackendError, SamplingParams, candidate_seed, exact_duplicates, sample
from training.engine.transformers_backend import TransformersBackend

QUESTIONS = ["How do I keep basil alive?", "Why is the sky blue?", "What is a good way to save money?"]
CONVERSATIONS = [[{"role": "user", "content": q}] for q in QUESTIONS]
SEEDS = [101, 202, 303]
PARAMS = SamplingParams(k=4, max_new_tokens=24)


@pytest.fixture(scope="module")
def baseline(tiny: TransformersBackend) -> list[list[str]]:
    results = sample(CONVERSATIONS, PARAMS, tiny, seeds=SEEDS)
    return [[s.text for s in r.samples] for r in results]


def test_k_samples_per_prompt_with_counts_and_seeds(tiny: TransformersBackend) -> None:
    results = sample(CONVERSATIONS, PARAMS, tiny, seeds=SEEDS)

    for result, conversation, seed in zip(results, CONVERSATIONS, SEEDS, strict=True):
        assert result.ok and result.seed == seed
        assert result.prompt_tokens == len(tiny.encode(conversation))
        assert [s.index for s in result.samples] == [0, 1, 2, 3]
        assert [s.seed for s in result.samples] == [candidate_seed(seed, j) for j in range(4)]
        for s in result.samples:
            assert s.prompt_tokens == result.prompt_tokens
            assert 0 <= s.completion_tokens <= 24
            assert s.finish_reason in ("stop", "length")
            assert s.finish_reason == "stop" or s.completion_tokens == 24
            assert "<|" not in s.text  # special tokens are not part of an answer


def test_same_seeds_reproduce_whatever_the_batching(tiny_dir: Path, baseline: list[list[str]]) -> None:
    one_prompt_per_batch = load_backend("transformers", str(tiny_dir), max_batch_tokens=1)

    alone = sample(CONVERSATIONS[1:2], PARAMS, one_prompt_per_batch, seeds=SEEDS[1:2])
    reordered = sample(CONVERSATIONS[::-1], PARAMS, one_prompt_per_batch, seeds=SEEDS[::-1])

    assert [s.text for s in alone[0].samples] == baseline[1]
    assert [[s.text for s in r.samples] for r in reordered[::-1]] == baseline


def test_a_candidate_does_not_depend_on_k(tiny: TransformersBackend, baseline: list[list[str]]) -> None:
    [result] = sample(CONVERSATIONS[:1], SamplingParams(k=2, max_new_tokens=24), tiny, seeds=SEEDS[:1])

    assert [s.text for s in result.samples] == baseline[0][:2]


def test_different_seeds_give_different_samples(tiny: TransformersBackend, baseline: list[list[str]]) -> None:
    results = sample(CONVERSATIONS, PARAMS, tiny, seeds=[7, 8, 9])

    assert [[s.text for s in r.samples] for r in results] != baseline
    assert all(len(set(texts)) > 1 for texts in baseline)  # temperature 1: the K answers differ


def test_greedy_gives_k_identical_samples(tiny: TransformersBackend) -> None:
    [result] = sample(CONVERSATIONS[:1], SamplingParams(k=3, temperature=0, max_new_tokens=16), tiny)

    assert exact_duplicates([s.text for s in result.samples]) == [1, 2]


def test_prompt_too_long_for_the_context_window_is_skipped(tiny: TransformersBackend) -> None:
    long_prompt = [{"role": "user", "content": "Tell me about bread and rain. " * 100}]

    long, short = sample([long_prompt, CONVERSATIONS[0]], PARAMS, tiny)

    assert long.samples == [] and long.prompt_tokens > 512
    assert long.skipped == (
        f"prompt ({long.prompt_tokens} tokens) + max_new_tokens (24) exceeds the model's context window (512 tokens)"
    )
    assert len(short.samples) == 4


def test_max_new_tokens_beyond_the_context_window_is_skipped(tiny: TransformersBackend) -> None:
    [result] = sample(CONVERSATIONS[:1], SamplingParams(k=2, max_new_tokens=600), tiny)

    assert "max_new_tokens (600) exceeds the model's context window (512 tokens)" in result.skipped


def test_stop_strings_trim_the_same_sample(tiny: TransformersBackend, baseline: list[list[str]]) -> None:
    stopped = sample(CONVERSATIONS, SamplingParams(k=4, max_new_tokens=24, stop=("e",)), tiny, seeds=SEEDS)

    for result, full_texts in zip(stopped, baseline, strict=True):
        for s, full in zip(result.samples, full_texts, strict=True):
            assert "e" not in s.text
            if "e" in full:
                assert s.text == full[: full.index("e")]
                assert s.finish_reason == "stop"
            else:
                assert s.text == full


def test_stop_string_token_count_covers_the_stop(tiny: TransformersBackend) -> None:
    [full] = sample(CONVERSATIONS[:1], PARAMS, tiny, seeds=[5])
    [cut] = sample(CONVERSATIONS[:1], SamplingParams(k=4, max_new_tokens=24, stop=(" ",)), tiny, seeds=[5])

    for whole, part in zip(full.samples, cut.samples, strict=True):
        if " " in whole.text:
            assert 1 <= part.completion_tokens < whole.completion_tokens


def test_chat_template_renders_the_prompt(tiny: TransformersBackend) -> None:
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

    text = tiny.tokenizer.decode(tiny.encode(conversation))

    assert tiny.describe()["chat_template"] is True
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_system_prompt_reaches_the_model(tiny: TransformersBackend) -> None:
    [result] = sample(CONVERSATIONS[:1], SamplingParams(k=2, max_new_tokens=4, system_prompt="Be brief."), tiny)

    with_system = [{"role": "system", "content": "Be brief."}, *CONVERSATIONS[0]]
    assert result.prompt_tokens == len(tiny.encode(with_system))


def test_plain_format_without_a_chat_template(tiny_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_dir, tmp_path / "no-template")
    (copy / "chat_template.jinja").unlink()
    backend = load_backend("transformers", str(copy))
    conversation = [{"role": "user", "content": "Hi"}]

    [result] = sample([conversation], SamplingParams(k=2, max_new_tokens=4), backend)

    assert backend.describe()["chat_template"] is False
    assert backend.tokenizer.decode(backend.encode(conversation)) == plain_prompt(conversation)
    assert len(result.samples) == 2


def test_missing_local_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="could not load model"):
        load_backend("transformers", str(tmp_path / "no-such-model"))


def test_unknown_hub_id_offline_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="could not load model 'no-such-org/no-such-model'"):
        load_backend("transformers", "no-such-org/no-such-model", local_files_only=True)


def test_bad_dtype_is_a_clear_error(tiny_dir: Path) -> None:
    with pytest.raises(BackendError, match="dtype must be"):
        load_backend("transformers", str(tiny_dir), dtype="int3")


def test_out_of_memory_halves_the_batch_without_changing_samples(
    tiny: TransformersBackend, baseline: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    real = tiny._generate_batch
    sizes: list[int] = []

    def only_one_prompt_fits(prompts: list[list[int]], seeds: list[int], params: SamplingParams) -> list:
        sizes.append(len(prompts))
        if len(prompts) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(prompts, seeds, params)

    monkeypatch.setattr(tiny, "_generate_batch", only_one_prompt_fits)

    results = sample(CONVERSATIONS, PARAMS, tiny, seeds=SEEDS)

    assert sizes == [3, 1, 2, 1, 1]
    assert [[s.text for s in r.samples] for r in results] == baseline
