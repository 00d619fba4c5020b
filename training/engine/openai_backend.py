"""OpenAI-compatible chat backend: any /v1/chat/completions endpoint (OpenAI, vLLM serve,
TGI, Ollama, llama.cpp server), called with httpx from a small thread pool.

Each prompt is one request with n=K (`n_per_request=True`, the default) or K requests
with n=1, for servers that ignore n. Throttling (429), server errors (5xx), timeouts and
dropped connections are retried with exponential backoff and jitter, honouring
Retry-After; when retries run out the whole call raises BackendError, so the caller's
chunk is retried as a unit. A 400/413/422 rejects one prompt (typically: too long for
the model), which comes back skipped with the server's message.

Seeds are sent as the `seed` field; whether they reproduce a sample depends on the server
(vLLM honours them; OpenAI calls it best effort).

Where it connects is the caller's: `base_url` and `api_key` are never taken from the
environment, and every connection goes through training/engine/safe_http.py, which
refuses private, loopback and metadata addresses after resolving the host unless
`allow_private` is set. Errors name the endpoint and the HTTP status, never the body of
the answer (it is logged on the worker): a run's error is shown to project admins, and
an answer's body is the endpoint's to tell, not theirs to read.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from training.engine.sampling import (
    BackendError,
    BackendUnavailable,
    Conversation,
    PromptResult,
    Sample,
    SamplingParams,
    candidate_seed,
)

logger = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
PROMPT_REJECTED_STATUSES = frozenset({400, 413, 422})


class PromptRejected(Exception):
    """The endpoint refused one request for its content; the prompt is skipped, not retried."""


@dataclass(frozen=True)
class _Job:
    prompt: int
    n: int
    seed: int
    first_index: int


class OpenAIBackend:
    """Samples through an OpenAI-compatible endpoint.

    Options: base_url (the endpoint's /v1 URL, required), api_key (sent as a Bearer token;
    none is sent when empty, as local servers expect), endpoint (its name, used in error
    messages instead of the URL), allow_private (connect to private or loopback
    addresses too), n_per_request, concurrency (parallel requests), timeout (seconds per
    request), max_retries (after the first attempt), backoff_base and backoff_max (seconds).
    A sample's seed is the seed sent with its request: the prompt seed with n=K,
    candidate_seed(prompt seed, index) with K requests.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "",
        api_key: str | None = None,
        endpoint: str = "",
        allow_private: bool = False,
        n_per_request: bool = True,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        import httpx

        from training.engine.safe_http import checked_client

        if not model:
            raise BackendError("the openai backend needs the model name the endpoint serves")
        if not base_url:
            raise BackendError("the openai backend needs the endpoint's base_url")
        self.name, self.model_id = "openai", model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.label = f"endpoint {endpoint!r}" if endpoint else self.base_url
        self.n_per_request, self.concurrency = n_per_request, max(1, concurrency)
        self.timeout, self.max_retries = timeout, max(0, max_retries)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.client = checked_client(
            allow_private=allow_private,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            max_connections=self.concurrency,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "model": self.model_id,
            "endpoint": self.label,
            "n_per_request": self.n_per_request,
        }

    def close(self) -> None:
        self.client.close()

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, seeds: list[int]
    ) -> list[PromptResult]:
        jobs = [job for i, seed in enumerate(seeds) for job in self._jobs(i, seed, params.k)]
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = [pool.submit(self._run, job, conversations[job.prompt], params) for job in jobs]
            answers = [future.result() for future in futures]
        finally:  # after a BackendError, requests not yet started are dropped, not sent
            pool.shutdown(wait=True, cancel_futures=True)
        samples: dict[int, list[Sample]] = {i: [] for i in range(len(conversations))}
        rejected: dict[int, str] = {}
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, str):
                rejected[job.prompt] = answer
            else:
                samples[job.prompt].extend(answer)
        return [
            PromptResult(seed=seeds[i], skipped=rejected[i])
            if i in rejected
            else PromptResult(
                seed=seeds[i],
                samples=sorted(samples[i], key=lambda s: s.index),
                prompt_tokens=samples[i][0].prompt_tokens,
            )
            for i in range(len(conversations))
        ]

    def complete(self, conversation: Conversation, *, temperature: float, max_tokens: int,
                 seed: int) -> Sample | str:
        """One answer (n=1) to one conversation, for an AI judge: the Sample, or the reason
        the endpoint rejected the request. Throttling and timeouts are retried as for
        sampling; BackendError when the retries run out."""
        payload = {"model": self.model_id, "messages": conversation, "n": 1,
                   "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        try:
            body = self._post(payload)
        except PromptRejected as exc:
            return f"rejected: {exc}"
        return self._samples(body, _Job(prompt=0, n=1, seed=seed, first_index=0))[0]

    def _jobs(self, prompt: int, seed: int, k: int) -> list[_Job]:
        if self.n_per_request:
            return [_Job(prompt=prompt, n=k, seed=seed, first_index=0)]
        return [_Job(prompt=prompt, n=1, seed=candidate_seed(seed, j), first_index=j) for j in range(k)]

    def _run(self, job: _Job, conversation: Conversation, params: SamplingParams) -> list[Sample] | str:
        payload: dict[str, Any] = {
            "model": self.model_id,
            "messages": conversation,
            "n": job.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": job.seed,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        try:
            body = self._post(payload)
        except PromptRejected as exc:
            return f"rejected: {exc} (typically too long for the model; the answer is in the worker log)"
        return self._samples(body, job)

    def _samples(self, body: dict[str, Any], job: _Job) -> list[Sample]:
        choices = body.get("choices") or []
        if len(choices) != job.n:
            hint = " (the server may ignore n: use n_per_request=False)" if job.n > 1 else ""
            raise BackendError(f"{self.label} returned {len(choices)} choices for n={job.n}{hint}")
        usage = body.get("usage") or {}
        per_choice = usage.get("completion_tokens") if job.n == 1 else None  # usage sums all choices
        return [
            Sample(
                text=(choice.get("message") or {}).get("content") or "",
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=per_choice,
                seed=job.seed,
                index=job.first_index + position,
            )
            for position, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0)))
        ]

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with retries. Returns the JSON body, raises PromptRejected or BackendError."""
        import httpx

        from training.engine.safe_http import AddressRefused

        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self.client.post(self.url, json=payload)
            except AddressRefused as exc:
                raise BackendError(f"{self.label} {exc}, which is refused (its operator can set "
                                   "allow_private for an endpoint on a private network)") from None
            except httpx.TimeoutException:
                last = f"no answer within the {self.timeout:g} s timeout"
            except httpx.TransportError as exc:
                last = f"could not reach {self.label} ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return _json(response, self.label)
                detail = f"HTTP {response.status_code} from {self.label}"
                logger.warning("%s (%s) answered: %s", detail, self.url, response.text[:300])
                if response.status_code in PROMPT_REJECTED_STATUSES:
                    raise PromptRejected(detail)
                if response.status_code not in RETRY_STATUSES and response.status_code < 500:
                    raise BackendError(detail)
                last, retry_after = detail, _retry_after(response.headers.get("Retry-After"))
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        raise BackendUnavailable(f"gave up on {self.label} after {self.max_retries + 1} attempts; "
                                 f"last: {last}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server sends one, else exponential backoff with jitter, so
        many workers throttled at once don't come back in lockstep."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from either form HTTP allows (seconds or a date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json(response: Any, label: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise BackendError(f"{label} answered 200 with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise BackendError(f"{label} answered 200 with JSON that is not an object")
    return body
