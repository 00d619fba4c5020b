"""Any Hugging Face causal LM (a hub id or a local folder, the built-in tiny model too),
sampled with batched `generate`, left padding and a per-candidate random stream, so a
candidate depends only on its prompt, parameters, seed and index. torch and
transformers are imported inside, at load time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.engine import prompt_format
from training.engine.sampling import (
    BackendError,
    Conversation,
    PromptResult,
    Sample,
    SamplingParams,
    candidate_seed,
    too_long_reason,
    trim_at_stop,
)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def plan_batches(lengths: Sequence[int], k: int, max_new_tokens: int, max_batch_tokens: int) -> list[list[int]]:
    """Group prompt indices so batch × k × (longest prompt + max_new_tokens) <= max_batch_tokens.

    Longest prompts first, so similar lengths share a batch (less padding) and a budget
    that is too big for memory fails on the first batch, not the last. A prompt over
    budget on its own still gets a batch of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            batch = batches[-1]
            longest = lengths[batch[0]]
            if (len(batch) + 1) * k * (longest + max_new_tokens) <= max_batch_tokens:
                batch.append(i)
                continue
        batches.append([i])
    return batches


class _SeededSampler:
    """Logits processor that draws the next token of every row from that row's own stream.

    Row r of a batch is candidate (prompt seed s, index j); its uniforms come from
    torch.Generator(candidate_seed(s, j)), drawn up front, and the token is picked by
    inverse CDF after temperature and top-p. A candidate therefore depends only on its
    prompt, params, seed and index, never on batch composition or K. It returns one-hot
    scores, so generate's own (greedy) step just takes the chosen token.
    """

    def __init__(self, uniforms: Any, prompt_len: int, temperature: float, top_p: float) -> None:
        self.uniforms, self.prompt_len = uniforms, prompt_len
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.temperature == 0:
            choice = scores.argmax(dim=-1)
        else:
            u = self.uniforms[:, input_ids.shape[1] - self.prompt_len].unsqueeze(1)
            probs = torch.softmax(scores.float() / self.temperature, dim=-1)
            order = None
            if self.top_p < 1:
                probs, order = probs.sort(dim=-1, descending=True)
                probs = probs * ((probs.cumsum(-1) - probs) < self.top_p)  # always keeps the top token
            cdf = probs.cumsum(-1)
            pick = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.shape[1] - 1)
            choice = (order.gather(1, pick) if order is not None else pick).squeeze(1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, choice.unsqueeze(1), 0.0)


class TransformersBackend:
    """Any Hugging Face causal LM, sampled with batched `generate` and left padding.

    Prompts are token ids from `prompt_format.prompt_ids` (the model's chat template, or
    the plain format for a model without one): the ids its policy training saw.

    Reproducing a candidate: same model files, conversation, params and (seed, index)
    give the same tokens on the same device and dtype, in any batch and for any K >= index + 1.
    Batching changes float rounding at the 1e-6 level, which can in rare cases flip a token
    whose uniform draw sits right on a probability boundary.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str = "transformers",
        device: str = "auto",
        dtype: str = "auto",
        max_batch_tokens: int = 65536,
        num_threads: int | None = None,
        context_window: int | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.name, self.model_id, self.max_batch_tokens = name, model, max_batch_tokens
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.dtype = _torch_dtype(dtype, self.device)
        self.tokenizer, self.model = self._load(model, local_files_only, trust_remote_code)
        self.own_chat_template = prompt_format.ensure_chat_template(self.tokenizer)
        self.context_window = context_window or _context_window(self.model.config)
        self.eos_ids = prompt_format.answer_end_ids(self.model.generation_config, self.tokenizer)
        if not self.eos_ids:
            raise BackendError("the model and its tokenizer define no end-of-sequence token")
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def _load(self, model: str, local_files_only: bool | None, trust_remote_code: bool) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        offline = hub_offline() if local_files_only is None else local_files_only
        kwargs = {"local_files_only": offline, "trust_remote_code": trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(model, dtype=self.dtype, **kwargs)
        except Exception as exc:  # OSError, ValueError, HFValidationError...: all mean "can't load"
            where = "a local folder" if Path(model).exists() else "a hub id" + (" (offline)" if offline else "")
            raise BackendError(f"could not load model {model!r} as {where}: {exc}") from exc
        return tokenizer, lm.to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "backend": self.name,
            "model": self.model_id,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "context_window": self.context_window,
            "chat_template": self.own_chat_template,  # False: the plain format
            "transformers": transformers.__version__,
        }

    def encode(self, conversation: Conversation) -> list[int]:
        return prompt_format.prompt_ids(self.tokenizer, conversation)

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, seeds: list[int]
    ) -> list[PromptResult]:
        encoded = [self.encode(c) for c in conversations]
        results: dict[int, PromptResult] = {}
        runnable = []
        for i, ids in enumerate(encoded):
            reason = too_long_reason(len(ids), params.max_new_tokens, self.context_window)
            if reason:
                results[i] = PromptResult(seed=seeds[i], skipped=reason, prompt_tokens=len(ids))
            else:
                runnable.append(i)
        lengths = [len(encoded[i]) for i in runnable]
        for batch in plan_batches(lengths, params.k, params.max_new_tokens, self.max_batch_tokens):
            members = [runnable[b] for b in batch]
            answers = self._generate_fitting([encoded[i] for i in members], [seeds[i] for i in members], params)
            results.update(zip(members, answers, strict=True))
        return [results[i] for i in range(len(conversations))]

    def _generate_fitting(
        self, prompts: list[list[int]], seeds: list[int], params: SamplingParams
    ) -> list[PromptResult]:
        """Generate, halving the batch on a GPU out-of-memory error: the token budget is an
        estimate, and since candidates don't depend on batching, splitting changes nothing."""
        import torch

        try:
            return self._generate_batch(prompts, seeds, params)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            if len(prompts) == 1:
                raise BackendError(f"out of GPU memory on one prompt of {len(prompts[0])} tokens") from exc
        half = len(prompts) // 2
        return self._generate_fitting(prompts[:half], seeds[:half], params) + self._generate_fitting(
            prompts[half:], seeds[half:], params
        )

    def _generate_batch(self, prompts: list[list[int]], seeds: list[int], params: SamplingParams) -> list[PromptResult]:
        import torch

        width = max(len(p) for p in prompts)
        # K rows per prompt, prompt-major: row n * k + j is candidate j of prompt n.
        rows = [p for p in prompts for _ in range(params.k)]
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=self.device)
        uniforms = torch.stack(
            [_uniforms(candidate_seed(s, j), params.max_new_tokens) for s in seeds for j in range(params.k)]
        ).to(self.device)
        sampler = _SeededSampler(uniforms, width, params.temperature, params.top_p)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                # The sampler has already drawn each token and returns one-hot scores, so greedy
                # decoding just takes its choice. (do_sample=True with num_return_sequences=K would
                # run torch.multinomial over the one-hot rows: a third of the time on CPU.)
                do_sample=False,
                max_new_tokens=params.max_new_tokens,
                logits_processor=[sampler],
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_ids,
                **({"stop_strings": list(params.stop), "tokenizer": self.tokenizer} if params.stop else {}),
            )
        new = out[:, width:].tolist()
        return [
            PromptResult(
                seed=seed,
                prompt_tokens=len(prompt),
                samples=[self._to_sample(new[n * params.k + j], len(prompt), seed, j, params) for j in range(params.k)],
            )
            for n, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True))
        ]

    def _to_sample(
        self, tokens: list[int], prompt_tokens: int, seed: int, index: int, params: SamplingParams
    ) -> Sample:
        """Cut at EOS, then at the first stop string; completion_tokens counts the tokens
        kept, stop string included, EOS and padding not."""
        end = next((n for n, t in enumerate(tokens) if t in self.eos_ids), None)
        stopped = end is not None
        tokens = tokens[:end]
        text, cut = trim_at_stop(self._decode(tokens), params.stop)
        if cut:
            tokens = tokens[: self._tokens_through_stop(tokens, params.stop)]
        return Sample(
            text=text,
            finish_reason="stop" if stopped or cut else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            seed=candidate_seed(seed, index),
            index=index,
        )

    def _tokens_through_stop(self, tokens: list[int], stop: Sequence[str]) -> int:
        """Fewest leading tokens whose text contains a stop string (binary search: containment
        only grows with the prefix)."""
        lo, hi = 1, len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            if trim_at_stop(self._decode(tokens[:mid]), stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def _uniforms(seed: int, n: int) -> Any:
    import torch

    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


def _torch_dtype(dtype: str, device: Any) -> Any:
    """bf16 on GPU, float32 on CPU (CPU bf16 matmuls are slow and lossy), unless told."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise BackendError(f"dtype must be auto, bfloat16, float16 or float32, got {dtype!r}") from None


def _context_window(config: Any) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
