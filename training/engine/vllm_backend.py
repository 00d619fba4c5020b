"""vLLM's offline engine (GPU), one request per prompt with n=K and the prompt's seed."""

from __future__ import annotations

from typing import Any

from training.engine import prompt_format
from training.engine.sampling import BackendError, Conversation, PromptResult, Sample, SamplingParams, too_long_reason


class VLLMBackend:
    """vLLM offline engine (GPU). One request per prompt with n=K and the prompt's seed:
    vLLM seeds a per-request generator, so (seed, index) reproduces a candidate on the
    same vLLM version and hardware."""

    def __init__(self, model: str, *, context_window: int | None = None, **engine_options: Any) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise BackendError("the vllm backend needs the vllm package (pip install vllm, on a GPU host)") from exc
        self.name, self.model_id, self._vllm = "vllm", model, vllm
        try:
            self.llm = vllm.LLM(model=model, max_model_len=context_window, **engine_options)
        except Exception as exc:  # vLLM raises many types for a bad model id or path
            raise BackendError(f"vllm could not load model {model!r}: {exc}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        self.context_window = self.llm.llm_engine.model_config.max_model_len

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "model": self.model_id,
            "context_window": self.context_window,
            "vllm": self._vllm.__version__,
        }

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, seeds: list[int]
    ) -> list[PromptResult]:
        encoded = [prompt_format.prompt_ids(self.tokenizer, c) for c in conversations]
        reasons = [too_long_reason(len(ids), params.max_new_tokens, self.context_window) for ids in encoded]
        runnable = [i for i, reason in enumerate(reasons) if reason is None]
        requests = [{"prompt_token_ids": encoded[i]} for i in runnable]
        sampling = [self._params(params, seeds[i]) for i in runnable]
        answers = self.llm.generate(requests, sampling, use_tqdm=False) if requests else []
        outputs = dict(zip(runnable, answers, strict=True))
        return [
            PromptResult(seed=seeds[i], skipped=reasons[i], prompt_tokens=len(encoded[i]))
            if reasons[i]
            else self._result(outputs[i], len(encoded[i]), seeds[i])
            for i in range(len(conversations))
        ]

    def _params(self, params: SamplingParams, seed: int) -> Any:
        return self._vllm.SamplingParams(
            n=params.k,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop=list(params.stop),
        )

    @staticmethod
    def _result(output: Any, prompt_tokens: int, seed: int) -> PromptResult:
        samples = [
            Sample(
                text=c.text,
                finish_reason=c.finish_reason or "length",
                prompt_tokens=prompt_tokens,
                completion_tokens=len(c.token_ids),
                seed=seed,
                index=c.index,
            )
            for c in sorted(output.outputs, key=lambda c: c.index)
        ]
        return PromptResult(seed=seed, samples=samples, prompt_tokens=prompt_tokens)
