"""Sampling engine: K candidate answers per prompt from one of several backends.

One entry point, `sample(conversations, params, backend, seeds=...)`, and one factory,
`load_backend(name, model, **options)`, for the backends "transformers" (any Hugging Face
causal LM, local path or hub id), "builtin-tiny" (the locally built tiny model, loaded by
the same transformers code), "vllm" (optional, GPU) and "openai" (any OpenAI-compatible
chat endpoint, in training/engine/openai_backend.py).

The caller (a Celery task) samples chunk by chunk and passes one seed per prompt, derived
from the run seed and the prompt id with `prompt_seed`, so a redelivered chunk samples
the same candidates again. A prompt that cannot be sampled as is (too long for the
context window, malformed) comes back `skipped` with the reason; nothing is truncated.

    backend = load_backend("builtin-tiny", str(artifact_root / "models" / "builtin-tiny"))
    params = SamplingParams(k=4, max_new_tokens=256, seed=run.seed)
    for chunk in chunks:                       # write each chunk's rows before the next
        seeds = [prompt_seed(run.seed, p.id) for p in chunk]
        results = sample([p.messages for p in chunk], params, backend, seeds=seeds)

torch, transformers and vllm are imported inside the backends, never at module import,
so the web process can import this module for its dataclasses and helpers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from training.engine import prompt_format

Message = dict[str, str]
Conversation = list[Message]

ROLES = ("system", "user", "assistant")
BACKENDS = ("transformers", "builtin-tiny", "vllm", "openai")
SEED_BITS = 31  # seeds fit a signed 32-bit int: every server (vLLM, llama.cpp, OpenAI) accepts them


class InvalidSamplingParams(ValueError):
    """A sampling parameter is out of range; the message names it and the allowed range."""


class BackendError(RuntimeError):
    """A backend could not be loaded or could not answer (missing model, package, endpoint)."""


class BackendUnavailable(BackendError):
    """The backend was reachable in principle but kept failing (timeouts, 429, 5xx) until the
    retries ran out: an infrastructure error, worth retrying the chunk later."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample the K candidates of every prompt in a run (stored on the run as JSON)."""

    k: int = field(default=4, metadata={"help": "Candidates per prompt (>= 2: a ranking needs two)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature; 0 means greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass, 0 < top_p <= 1."})
    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per candidate."})
    seed: int = field(default=0, metadata={"help": "Run seed; prompt seeds derive from it."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings that end a candidate (trimmed)."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "Prepended as a system message when a conversation has none."}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (isinstance(self.k, int) and self.k >= 2, f"k must be an integer >= 2, got {self.k!r}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature!r}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (
                isinstance(self.max_new_tokens, int) and self.max_new_tokens > 0,
                f"max_new_tokens must be an integer > 0, got {self.max_new_tokens!r}",
            ),
            (all(isinstance(s, str) and s for s in self.stop), "stop sequences must be non-empty strings"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise InvalidSamplingParams("; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class Sample:
    """One candidate. `seed` and `index` reproduce it: see each backend's docstring.

    finish_reason is "stop" (end-of-sequence token or a stop string) or "length"
    (max_new_tokens reached); an endpoint may report others (e.g. "content_filter").
    completion_tokens is None where the backend cannot count per candidate.
    """

    text: str
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seed: int
    index: int


@dataclass(frozen=True)
class PromptResult:
    """The K samples of one prompt, or why it was skipped (then `samples` is empty)."""

    seed: int
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None
    prompt_tokens: int | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None


class Backend(Protocol):
    """What `sample` needs from a backend. Conversations arrive validated, system prompt added."""

    name: str

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, seeds: list[int]
    ) -> list[PromptResult]: ...

    def describe(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- seeds


def derive_seed(*parts: object) -> int:
    """A stable seed from any parts (run seed, prompt id, sample index).

    A hash rather than arithmetic so that neighbouring ids give unrelated streams, and
    so the value is the same in every process and Python version (no hash()).
    """
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << SEED_BITS)


def prompt_seed(run_seed: int, prompt_id: object) -> int:
    """The seed of one prompt in one run: pass these to `sample(..., seeds=...)`."""
    return derive_seed("prompt", run_seed, prompt_id)


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate `index` of a prompt whose seed is `seed` (transformers, K requests)."""
    return derive_seed("candidate", seed, index)


# --------------------------------------------------------------------------- entry point


def sample(
    conversations: Sequence[Conversation],
    params: SamplingParams,
    backend: Backend,
    *,
    seeds: Sequence[int] | None = None,
) -> list[PromptResult]:
    """Sample `params.k` candidates for each conversation; one result per conversation, in order.

    `seeds`: one per conversation. Chunked callers must pass them (`prompt_seed(run_seed,
    prompt.id)`) so a chunk samples the same whatever else is in it; without them the
    seeds derive from `params.seed` and the position in this call.
    """
    if seeds is None:
        seeds = [prompt_seed(params.seed, f"#{i}") for i in range(len(conversations))]
    if len(seeds) != len(conversations):
        raise ValueError(f"got {len(seeds)} seeds for {len(conversations)} conversations")
    results: list[PromptResult | None] = [None] * len(conversations)
    todo: list[int] = []
    prepared: list[Conversation] = []
    for i, conversation in enumerate(conversations):
        problem = conversation_problem(conversation)
        if problem:
            results[i] = PromptResult(seed=seeds[i], skipped=problem)
            continue
        todo.append(i)
        prepared.append(with_system_prompt(conversation, params.system_prompt))
    if prepared:
        answers = backend.generate(prepared, params, [seeds[i] for i in todo])
        if len(answers) != len(prepared):
            raise BackendError(f"{backend.name} returned {len(answers)} results for {len(prepared)} prompts")
        for i, answer in zip(todo, answers, strict=True):
            results[i] = answer
    return [r for r in results if r is not None]


def conversation_problem(conversation: object) -> str | None:
    """Why a conversation cannot be sampled, or None. Skipped per prompt, so one bad row
    doesn't fail a whole chunk."""
    if not isinstance(conversation, list) or not conversation:
        return "conversation must be a non-empty list of messages"
    for n, message in enumerate(conversation):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"message {n} must be a dict with role in {ROLES}"
        if not isinstance(message.get("content"), str):
            return f"message {n} has no text content"
    if conversation[-1]["role"] != "user":
        return "conversation must end with a user message"
    return None


def with_system_prompt(conversation: Conversation, system_prompt: str | None) -> Conversation:
    """Prepend the run's system prompt unless the conversation brings its own."""
    messages = [{"role": m["role"], "content": m["content"]} for m in conversation]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def too_long_reason(prompt_tokens: int, max_new_tokens: int, context_window: int | None) -> str | None:
    if context_window is None or prompt_tokens + max_new_tokens <= context_window:
        return None
    return (
        f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
        f"the model's context window ({context_window} tokens)"
    )


def trim_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest stop string; (text, whether one was found)."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


# --------------------------------------------------------------------------- diversity


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams over `texts`.

    1.0 means no n-gram repeats; candidates that say the same thing score low. 0.0 when
    the texts hold no n-gram at all.
    """
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def exact_duplicates(texts: Sequence[str]) -> list[int]:
    """Indices of texts equal (after stripping whitespace) to an earlier one in the list."""
    seen: set[str] = set()
    duplicates = []
    for i, text in enumerate(texts):
        key = text.strip()
        if key in seen:
            duplicates.append(i)
        seen.add(key)
    return duplicates


@dataclass(frozen=True)
class DiversityStats:
    """Per-run diversity: share of candidates that duplicate a sibling, mean distinct-2 per prompt."""

    prompts: int
    samples: int
    duplicate_rate: float
    distinct_2: float


def diversity_stats(results: Sequence[PromptResult]) -> DiversityStats:
    """Computed within each prompt's K samples: that is what annotators compare."""
    sampled = [r for r in results if r.ok and r.samples]
    texts = [[s.text for s in r.samples] for r in sampled]
    total = sum(len(t) for t in texts)
    duplicates = sum(len(exact_duplicates(t)) for t in texts)
    distinct = [distinct_n(t, 2) for t in texts]
    return DiversityStats(
        prompts=len(sampled),
        samples=total,
        duplicate_rate=duplicates / total if total else 0.0,
        distinct_2=sum(distinct) / len(distinct) if distinct else 0.0,
    )


# --------------------------------------------------------------------------- factory


def load_backend(name: str, model: str, **options: Any) -> Backend:
    """Load a backend by name. `model`: hub id or local path; for "builtin-tiny" the folder
    it is built in (e.g. ARTIFACT_ROOT/models/builtin-tiny); for "openai" the model name the
    endpoint serves. Options go to the backend's constructor (see each class)."""
    if name == "transformers":
        return TransformersBackend(model, **options)
    if name == "builtin-tiny":
        from training.engine.tiny import ensure_tiny_model

        if not model:
            raise BackendError("builtin-tiny needs the folder to build it in as `model`")
        path = ensure_tiny_model(Path(model), num_threads=options.get("num_threads"))
        return TransformersBackend(str(path), name="builtin-tiny", **options)
    if name == "vllm":
        return VLLMBackend(model, **options)
    if name == "openai":
        from training.engine.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **options)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- transformers


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


# --------------------------------------------------------------------------- vllm


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
