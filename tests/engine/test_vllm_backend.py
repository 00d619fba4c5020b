"""The vLLM backend's mapping to and from vLLM, against a stand-in `vllm` module (vLLM
needs a GPU; what is checked here is what we send it and how we read its answers)."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from training.engine.backends import load_backend
from training.engine.sampling import SamplingParams, sample
from training.engine.vllm_backend import VLLMBackend


class CharTokenizer:
    """One id per character; no chat template of its own (a base model's tokenizer), so
    the backend gives it the plain one and renders it as transformers does, with Jinja."""

    chat_template = None
    bos_token_id = None
    eos_token = "$"

    def __call__(self, text: str, **kwargs: Any) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = False,
                            **kwargs: Any) -> dict[str, list[int]]:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        template = ImmutableSandboxedEnvironment().from_string(self.chat_template)
        return self(template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    eos_token=self.eos_token))


class FakeLLM:
    def __init__(self, model: str, max_model_len: int | None = None, **options: Any) -> None:
        self.model, self.options, self.calls = model, options, []
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=60))

    def get_tokenizer(self) -> CharTokenizer:
        return CharTokenizer()

    def generate(self, requests: list[dict], sampling: list[Any], use_tqdm: bool) -> list[Any]:
        self.calls.append((requests, sampling))
        return [
            types.SimpleNamespace(
                outputs=[
                    types.SimpleNamespace(index=j, text=f"s{p.seed}-{j}", token_ids=[1] * (j + 1), finish_reason=r)
                    for j, r in reversed(list(enumerate(["stop", "length"] * (p.n // 2))))
                ]
            )
            for p in sampling
        ]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.__version__ = "0.0-test"
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_one_request_per_prompt_with_n_k_and_its_seed(fake_vllm: types.ModuleType) -> None:
    backend = load_backend("vllm", "some/model", gpu_memory_utilization=0.5)
    params = SamplingParams(k=2, max_new_tokens=8, temperature=0.9, top_p=0.95, stop=("###",))

    [result] = sample([[{"role": "user", "content": "Hi"}]], params, backend, seeds=[42])

    assert isinstance(backend, VLLMBackend)
    assert backend.llm.options == {"gpu_memory_utilization": 0.5}
    [(requests, sampling)] = backend.llm.calls
    assert requests == [{"prompt_token_ids": [ord(c) for c in "User:\nHi\n\nAssistant:\n"]}]
    assert vars(sampling[0]) == {
        "n": 2,
        "temperature": 0.9,
        "top_p": 0.95,
        "max_tokens": 8,
        "seed": 42,
        "stop": ["###"],
    }
    assert [(s.index, s.text, s.finish_reason, s.completion_tokens) for s in result.samples] == [
        (0, "s42-0", "stop", 1),
        (1, "s42-1", "length", 2),
    ]
    assert {s.seed for s in result.samples} == {42}
    assert result.prompt_tokens == len("User:\nHi\n\nAssistant:\n")


def test_too_long_prompts_are_skipped_before_vllm(fake_vllm: types.ModuleType) -> None:
    backend = load_backend("vllm", "some/model")

    [result] = sample([[{"role": "user", "content": "x" * 50}]], SamplingParams(k=2, max_new_tokens=8), backend)

    assert "context window (60 tokens)" in result.skipped
    assert backend.llm.calls == []
