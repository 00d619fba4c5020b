"""Pure parts of the sampling engine: seeds, conversations, batching plan, stop trimming,
diversity statistics, and the rule that importing the module doesn't load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.engine.backends import load_backend
from training.engine.sampling import (
    BackendError,
    Conversation,
    PromptResult,
    Sample,
    SamplingParams,
    candidate_seed,
    conversation_problem,
    distinct_n,
    diversity_stats,
    exact_duplicates,
    prompt_seed,
    sample,
    too_long_reason,
    trim_at_stop,
    with_system_prompt,
)
from training.engine.transformers_backend import plan_batches

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_engine_does_not_import_torch() -> None:
    code = (
        "import sys, training.engine.sampling, training.engine.tiny, training.engine.openai_backend; "
        "print('torch' in sys.modules, 'django' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)

    assert out.stdout.split() == ["False", "False"]


def test_prompt_seeds_are_stable_and_distinct() -> None:
    assert prompt_seed(42, 17) == prompt_seed(42, "17")
    assert prompt_seed(42, 17) != prompt_seed(42, 18) != prompt_seed(43, 17)
    assert 0 <= prompt_seed(42, 17) < 2**31
    assert candidate_seed(5, 0) != candidate_seed(5, 1)


def test_known_seed_value_never_changes() -> None:
    """A stored run must reproduce after upgrades: the derivation is part of the data format."""
    assert prompt_seed(0, 1) == 684899431


@pytest.mark.parametrize(
    ("conversation", "problem"),
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "robot", "content": "hi"}], "role in"),
        ([{"role": "user", "content": None}], "no text content"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
            "end with a user message",
        ),
    ],
)
def test_malformed_conversations_are_named(conversation: Any, problem: str) -> None:
    assert problem in conversation_problem(conversation)


def test_system_prompt_is_prepended_only_when_missing() -> None:
    plain = [{"role": "user", "content": "hi"}]
    own = [{"role": "system", "content": "Mine."}, *plain]

    assert with_system_prompt(plain, "Run's.")[0] == {"role": "system", "content": "Run's."}
    assert with_system_prompt(own, "Run's.") == own
    assert with_system_prompt(plain, None) == plain


def test_batches_respect_the_token_budget() -> None:
    lengths = [10, 200, 30, 30, 500, 20]

    batches = plan_batches(lengths, k=4, max_new_tokens=50, max_batch_tokens=2000)

    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches[0] == [4]  # longest first, alone: over budget on its own
    for batch in batches[1:]:
        assert len(batch) * 4 * (max(lengths[i] for i in batch) + 50) <= 2000


def test_context_window_reason_names_the_numbers() -> None:
    assert too_long_reason(100, 28, 128) is None
    assert too_long_reason(100, 29, 128) == (
        "prompt (100 tokens) + max_new_tokens (29) exceeds the model's context window (128 tokens)"
    )
    assert too_long_reason(10**6, 1, None) is None


def test_trim_at_earliest_stop_string() -> None:
    assert trim_at_stop("one. two### three\n\nfour", ["\n\n", "###"]) == ("one. two", True)
    assert trim_at_stop("nothing here", ["###"]) == ("nothing here", False)


def test_distinct_n() -> None:
    assert distinct_n(["a b c", "a b d"], n=2) == 3 / 4
    assert distinct_n(["a b", "a b"], n=2) == 1 / 2
    assert distinct_n(["a b c d"], n=1) == 1.0
    assert distinct_n(["one", ""], n=2) == 0.0


def test_exact_duplicates_ignore_surrounding_whitespace() -> None:
    assert exact_duplicates(["x", "y", " x\n", "y", "z"]) == [2, 3]


def test_diversity_stats_per_prompt() -> None:
    def result(*texts: str) -> PromptResult:
        return PromptResult(seed=0, samples=[Sample(t, "stop", 1, 1, 0, i) for i, t in enumerate(texts)])

    stats = diversity_stats([result("a b", "a b", "c d", "e f"), result("g h", "i j"), PromptResult(0, skipped="x")])

    assert (stats.prompts, stats.samples) == (2, 6)
    assert stats.duplicate_rate == pytest.approx(1 / 6)
    assert stats.distinct_2 == pytest.approx((3 / 4 + 1.0) / 2)


class EchoBackend:
    """Records what `sample` hands a backend."""

    name = "echo"

    def __init__(self) -> None:
        self.calls: list[tuple[list[Conversation], list[int]]] = []

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name}

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, seeds: list[int]
    ) -> list[PromptResult]:
        self.calls.append((conversations, seeds))
        return [
            PromptResult(seed=s, samples=[Sample(c[-1]["content"], "stop", 1, 1, s, j) for j in range(params.k)])
            for c, s in zip(conversations, seeds, strict=True)
        ]


def test_sample_skips_bad_conversations_and_keeps_order() -> None:
    echo = EchoBackend()
    good = [{"role": "user", "content": "hi"}]

    results = sample([good, [], good], SamplingParams(k=2, system_prompt="S"), echo, seeds=[1, 2, 3])

    assert [r.seed for r in results] == [1, 2, 3]
    assert results[1].skipped == "conversation must be a non-empty list of messages"
    assert [len(r.samples) for r in results] == [2, 0, 2]
    conversations, seeds = echo.calls[0]
    assert seeds == [1, 3]
    assert conversations[0][0] == {"role": "system", "content": "S"}


def test_default_seeds_derive_from_the_run_seed() -> None:
    good = [{"role": "user", "content": "hi"}]

    first = sample([good, good], SamplingParams(k=2, seed=9), EchoBackend())
    again = sample([good, good], SamplingParams(k=2, seed=9), EchoBackend())
    other = sample([good, good], SamplingParams(k=2, seed=10), EchoBackend())

    assert [r.seed for r in first] == [r.seed for r in again]
    assert first[0].seed != first[1].seed
    assert first[0].seed != other[0].seed


def test_seed_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 seeds for 1 conversations"):
        sample([[{"role": "user", "content": "hi"}]], SamplingParams(), EchoBackend(), seeds=[1, 2])


def test_unknown_backend_name() -> None:
    with pytest.raises(BackendError, match="unknown backend 'llamacpp'; choose one of transformers"):
        load_backend("llamacpp", "x")


def test_vllm_missing_is_a_clear_error() -> None:
    pytest.importorskip("torch")  # stands for "an ML install"; vllm itself must be absent
    if "vllm" in sys.modules or _installed("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(BackendError, match="needs the vllm package"):
        load_backend("vllm", "some/model")


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
