"""Generation runs: create one (validated), and execute it chunk by chunk.

`generation_run_execute` is what the Celery task and `manage.py generate` both call.
It works through the run's frozen prompt list in chunks; each chunk's candidates and
items commit together, so a redelivered or re-queued run skips what is done and never
duplicates (candidates are unique on (prompt, "run:<id>:<k>")). It heartbeats after
every chunk and stops at the next one when the run is cancelled.

What a run samples from is checked twice, when it is created and when a worker executes
it: the openai backend goes only to a configured endpoint the run names
(training/endpoints.py), the local backends load only accepted models
(training/model_refs.py), and of the options stored on the row only RUN_OPTIONS reach
the engine. A row written some other way (an older version, a hand edit) gets no further
than one created through the API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q

from core.audit import audit
from core.errors import DomainError
from core.rendering import render_markdown
from core.runs import Run, run_enqueue, run_finish, run_heartbeat
from labeling.models import Candidate, Project, Prompt
from labeling.prompt_metadata import storable
from labeling.services.items import items_create_for_prompt
from training.artifacts import ArtifactMissing, artifact_local_model
from training.endpoints import endpoint_backend_options, endpoint_check_model, endpoint_choose
from training.model_refs import REFUSED, model_reference
from training.models import GenerationRun, ModelVersion
from training.workers import torch_threads

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
Backend = GenerationRun.Backend
# Engine options a run may carry, per backend, with their check. Nothing that says where
# to connect, which key to send, or whether to run a model's own code (trust_remote_code).
RUN_OPTIONS: dict[str, dict[str, Callable[[Any], bool]]] = {
    Backend.OPENAI: {"n_per_request": lambda v: isinstance(v, bool)},
    Backend.TRANSFORMERS: {"max_batch_tokens": lambda v: type(v) is int and 0 < v <= 2**24},
    Backend.BUILTIN_TINY: {"max_batch_tokens": lambda v: type(v) is int and 0 < v <= 2**24},
    Backend.VLLM: {},
}


def builtin_tiny_dir() -> str:
    return str(settings.BUILTIN_TINY_DIR)


def validated_params(params: dict[str, Any]) -> dict[str, Any]:
    """Check sampling parameters with the engine's own rules; DomainError (400) if bad."""
    from training.engine.sampling import InvalidSamplingParams, SamplingParams

    try:
        return SamplingParams(**params).to_dict()
    except (InvalidSamplingParams, TypeError) as exc:
        raise DomainError(f"invalid sampling parameters: {exc}") from None


def prompts_needing_candidates(project: Project, k: int) -> list[int]:
    """Prompts with fewer than K model-sampled candidates (imports don't count)."""
    return list(
        Prompt.objects.filter(project=project)
        .annotate(sampled=Count("candidates", filter=Q(candidates__origin=Candidate.Origin.MODEL)))
        .filter(sampled__lt=k).order_by("id").values_list("id", flat=True)
    )


@transaction.atomic
def generation_run_create(
    *, project: Project, backend: str, model: str = "", params: dict[str, Any],
    prompt_ids: list[int] | None = None, backend_options: dict[str, Any] | None = None,
    endpoint: str = "", user: AbstractBaseUser | None = None, enqueue: bool = True,
    policy: ModelVersion | None = None,
) -> GenerationRun:
    """A run sampling K candidates per prompt. `endpoint` names a GENERATION_ENDPOINTS
    entry (openai backend; may be left out when only one is configured); `policy` is a
    registered policy of this project to sample from (transformers backend). With neither a
    backend nor a policy, the run samples from the project's current promoted policy."""
    if policy is None and not backend:
        policy = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY,
                                             is_current=True).first()
        if policy is None:
            raise DomainError("choose a backend: this project has no promoted policy to sample from")
    if policy is not None:
        # Closing the loop: sample from a registered policy (merged weights when LoRA).
        if policy.project_id != project.pk or policy.kind != "policy":
            raise DomainError("the policy must be a registered policy of this project")
        backend, model = Backend.TRANSFORMERS, policy.merged_path or policy.adapter_path
    if backend not in Backend.values:
        raise DomainError(f"unknown backend {backend!r}; use one of {', '.join(Backend.values)}")
    if policy is None:
        model, endpoint = _checked_source(backend, model, endpoint)
    elif endpoint:
        raise DomainError("endpoint is for the openai backend only")
    options = _checked_options(backend, backend_options or {})
    clean = validated_params(params)
    if prompt_ids is None:
        prompt_ids = prompts_needing_candidates(project, clean["k"])
    else:
        found = set(Prompt.objects.filter(project=project, pk__in=prompt_ids)
                    .values_list("id", flat=True))
        missing = sorted(set(prompt_ids) - found)
        if missing:
            raise DomainError(f"prompts not in this project: {missing[:20]}")
    run = GenerationRun.objects.create(
        project=project, created_by=user if user and user.is_authenticated else None,
        backend=backend, model=model, endpoint=endpoint, params=clean, backend_options=options,
        prompt_ids=sorted(set(prompt_ids)), policy=policy,
        progress={"prompts_done": 0, "prompts_total": len(set(prompt_ids))},
    )
    audit(actor=user, project=project, action="generation.start", target=run,
          after={"backend": run.backend, "model": run.model, "endpoint": run.endpoint,
                 "policy": run.policy_id, "prompts": len(run.prompt_ids)})
    if enqueue:
        run_enqueue(run)
    return run


def _checked_source(backend: str, model: str, endpoint: str) -> tuple[str, str]:
    """(model, endpoint) as the run stores them, or DomainError."""
    if backend == Backend.OPENAI:
        chosen = endpoint_choose(endpoint)
        endpoint_check_model(chosen, model)
        return model, chosen.name
    if endpoint:
        raise DomainError("endpoint is for the openai backend only")
    if backend == Backend.BUILTIN_TINY:
        if model:  # the backend would build the tiny model into that folder
            raise DomainError("builtin-tiny takes no model: the server keeps it in its own folder")
        return "", ""
    if not model:
        raise DomainError(f"the {backend} backend needs a model: {REFUSED}")
    return model_reference(model), ""


def _checked_options(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = RUN_OPTIONS[backend]
    refused = sorted(name for name, value in options.items()
                     if name not in allowed or not allowed[name](value))
    if refused:
        raise DomainError(f"backend options not accepted: {', '.join(refused)}; the {backend} "
                          f"backend takes {', '.join(allowed) or 'none'} (never a URL or a key)")
    return options


class RunCancelled(Exception):
    pass


@dataclass
class _Counters:
    prompts_done: int = 0
    tokens: int = 0
    seconds: float = 0.0


def generation_run_execute(run: GenerationRun, *, progress: Progress | None = None) -> None:
    """Do (or finish) a claimed run; the caller has set it RUNNING."""
    from training.engine.backends import load_backend
    from training.engine.sampling import BackendError, SamplingParams, prompt_seed

    params = SamplingParams(**run.params)
    torch_threads()
    try:
        model, options = _engine_source(run)
        backend = load_backend(run.backend, model, **options)
    except (BackendError, ArtifactMissing, DomainError) as exc:
        run_finish(run, status=Run.Status.FAILED, error=str(exc))
        return
    todo = _prompts_left(run, params.k)
    counters = _Counters(prompts_done=len(run.prompt_ids) - len(todo))
    chunk_size = settings.GENERATION_CHUNK_PROMPTS
    try:
        for start in range(0, len(todo), chunk_size):
            prompts = list(Prompt.objects.filter(pk__in=todo[start:start + chunk_size])
                           .order_by("id"))
            began = time.monotonic()
            try:
                results = sample_chunk(backend, params, prompts, prompt_seed)
            except BackendError as exc:
                run_finish(run, status=Run.Status.FAILED, error=str(exc), **_progress(run, counters))
                return
            counters.seconds += time.monotonic() - began
            _write_chunk(run, prompts, results, counters)
            if not run_heartbeat(run, **_progress(run, counters)):
                raise RunCancelled
            if progress:
                progress(counters.prompts_done, len(run.prompt_ids))
    except RunCancelled:
        logger.info("generation run %s stopped: cancelled or taken over", run.pk)
        return
    stats = run_stats(run)
    GenerationRun.objects.filter(pk=run.pk).update(stats=stats)
    _score_with_current_reward_model(run)
    run_finish(run, status=Run.Status.DONE, **_progress(run, counters))


def _score_with_current_reward_model(run: GenerationRun) -> None:
    """Closing the loop: the current reward model scores the new candidates (reviewers see
    the scores; the uncertain_first strategy uses them)."""
    from training.registry import candidates_score, current_model

    reward = current_model(run.project, "reward")
    if reward is None:
        return
    ids = list(Candidate.objects.filter(dedupe_key__startswith=f"run:{run.pk}:",
                                        prompt_id__in=run.prompt_ids).values_list("id", flat=True))
    candidates_score(version=reward, candidate_ids=ids)


def sample_chunk(backend: Any, params: Any, prompts: list[Prompt], prompt_seed: Callable
                 ) -> list[Any]:
    from training.engine.sampling import sample

    return sample([p.messages for p in prompts], params, backend,
                  seeds=[prompt_seed(params.seed, p.pk) for p in prompts])


def _engine_source(run: GenerationRun) -> tuple[str, dict[str, Any]]:
    """The model and engine options of a run, checked again here on the worker."""
    allowed = RUN_OPTIONS.get(run.backend, {})
    options = {name: value for name, value in run.backend_options.items()
               if name in allowed and allowed[name](value)}
    if run.backend in {Backend.TRANSFORMERS, Backend.BUILTIN_TINY} and settings.TORCH_NUM_THREADS:
        # Prefork workers sharing a CPU must not each spawn a thread per core.
        options["num_threads"] = settings.TORCH_NUM_THREADS
    if run.backend == Backend.BUILTIN_TINY:
        return builtin_tiny_dir(), options
    if run.backend == Backend.OPENAI:
        return run.model, {**options, **endpoint_backend_options(run.endpoint, run.model)}
    policy = run.policy
    if policy is not None and policy.project_id == run.project_id:
        # A registered policy may be in artifact storage only.
        return artifact_local_model(policy.merged_path or policy.adapter_path), options
    return model_reference(run.model), options


def _prompts_left(run: GenerationRun, k: int) -> list[int]:
    """The frozen prompts that do not yet have this run's K candidates or a recorded skip."""
    done = set(
        Candidate.objects.filter(prompt_id__in=run.prompt_ids, dedupe_key__startswith=f"run:{run.pk}:")
        .values("prompt_id").annotate(n=Count("id")).filter(n__gte=k)
        .values_list("prompt_id", flat=True)
    )
    skipped = {error["prompt"] for error in run.errors}
    return [pid for pid in run.prompt_ids if pid not in done and pid not in skipped]


def _progress(run: GenerationRun, counters: _Counters) -> dict[str, Any]:
    return {
        "prompts_done": counters.prompts_done, "prompts_total": len(run.prompt_ids),
        "tokens_generated": counters.tokens,
        "tokens_per_s": round(counters.tokens / counters.seconds, 1) if counters.seconds else None,
    }


@transaction.atomic
def _write_chunk(run: GenerationRun, prompts: list[Prompt], results: list[Any],
                 counters: _Counters) -> None:
    """One chunk's candidates and items, in one transaction."""
    project = run.project
    drop_duplicates = project.generation_settings.get("duplicates") == "drop"
    errors = []
    for prompt, result in zip(prompts, results, strict=True):
        counters.prompts_done += 1
        if not result.ok:
            errors.append({"prompt": prompt.pk, "reason": result.skipped})
            continue
        # Lock the prompt: if a second worker holds this run too (a slow worker the sweep
        # gave up on), only one writes the prompt's candidates and items.
        Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
        if prompt.candidates.filter(dedupe_key__startswith=f"run:{run.pk}:").exists():
            continue
        existing = set(prompt.candidates.values_list("text", flat=True))
        rows, seen = [], set()
        for sample in result.samples:
            text = storable(sample.text)  # a NUL from the model would fail the whole chunk
            duplicate = text in seen or text in existing
            seen.add(text)
            counters.tokens += sample.completion_tokens or 0
            if duplicate and drop_duplicates:
                continue
            rows.append(Candidate(
                prompt=prompt, text=text, text_html=str(render_markdown(text)),
                origin=Candidate.Origin.MODEL,
                model_name=run.model or run.backend, sample_index=sample.index,
                sampling_params={**run.params, "backend": run.backend,
                                 "finish_reason": sample.finish_reason},
                seed=sample.seed, prompt_tokens=sample.prompt_tokens,
                completion_tokens=sample.completion_tokens,
                dedupe_key=f"run:{run.pk}:{sample.index}", is_duplicate=duplicate,
            ))
        created = Candidate.objects.bulk_create(rows, ignore_conflicts=True)
        fresh = list(Candidate.objects.filter(
            prompt=prompt, dedupe_key__in=[c.dedupe_key for c in created if not c.is_duplicate]
        ).order_by("sample_index").values_list("id", flat=True))
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=fresh)
    if errors:
        run.errors = [*run.errors, *errors]
        GenerationRun.objects.filter(pk=run.pk).update(errors=run.errors)


def run_stats(run: GenerationRun) -> dict[str, Any]:
    """Duplicate rate and distinct-2 over the run's candidates: low values mean the
    temperature is too low to give annotators real choices."""
    from training.engine.sampling import distinct_n

    texts: dict[int, list[str]] = {}
    duplicates = total = 0
    for prompt_id, text, duplicate in Candidate.objects.filter(
        dedupe_key__startswith=f"run:{run.pk}:", prompt_id__in=run.prompt_ids
    ).values_list("prompt_id", "text", "is_duplicate"):
        texts.setdefault(prompt_id, []).append(text)
        total += 1
        duplicates += duplicate
    per_prompt = [distinct_n(group, 2) for group in texts.values() if group]
    return {
        "candidates": total,
        "duplicate_rate": round(duplicates / total, 4) if total else 0.0,
        "distinct_2": round(sum(per_prompt) / len(per_prompt), 4) if per_prompt else None,
        "skipped_prompts": len(run.errors),
    }
