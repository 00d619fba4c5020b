"""Sampling engine: K candidate answers per prompt from one of several backends.

One entry point, `sample(conversations, params, backend, seeds=...)`, with the types
every backend shares (SamplingParams, Sample, PromptResult, the errors), seeds and the
diversity figures. The backends are training/engine/backends.py's `load_backend(name,
model, **options)`: "transformers" (any Hugging Face causal LM, local path or hub id;
transformers_backend.py), "builtin-tiny" (the locally built tiny model, loaded by the same
transformers code), "vllm" (optional, GPU; vllm_backend.py) and "openai" (any
OpenAI-compatible chat endpoint; openai_backend.py).

The caller (a Celery task) samples chunk by chunk and passes one seed per prompt, derived
from the run seed and the prompt id with `prompt_seed`, so a redelivered chunk samples
the same candidates again. A prompt that cannot be sampled as is (too long for the
context window, malformed) comes back `skipped` with the reason; nothing is truncated.

    backend = load_backend("builtin-tiny", str(artifact_root / "models" / "builtin-tiny"))
    params = SamplingParams(k=4, max_new_tokens=256, seed=run.seed)
    for chunk in chunks:                       # write each chunk's rows before the next
        seeds = [prompt_seed(run.seed, p.id) for p in chunk]
        results = sample([p.messages for p in chunk], params, backend, seeds=seeds)

Nothing heavy is imported here, so the web process can import this module for its
dataclasses and helpers; torch, transformers and vllm load inside the backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

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
