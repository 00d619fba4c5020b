"""AI judges: configure one (admins), start, run and cancel its runs. Every write is
audited here, so the API, the console and `manage.py judge` record the same events.

Where a judge sends prompts is checked twice, like a generation run's: when it is saved
and when a worker executes a run. An endpoint judge names a GENERATION_ENDPOINTS entry
(never a URL); a local judge names an accepted model (training/model_refs.py); a reward
model judge is a registered reward model of the same project, chosen by id.

`judge_run_execute` is what the Celery task and the CLI call. It works through the
run's frozen item list a few items at a time; each chunk's JudgeRanking rows commit
together and are unique per (judge, judge version, item), so a redelivered or resumed
run skips what is done and never duplicates. It heartbeats after every chunk, stops at
the next one when cancelled, and stops (done, `budget_exhausted` in its progress) when
the judge's daily budget of items or tokens is spent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from core.runs import Run, run_cancel, run_enqueue, run_finish, run_heartbeat
from guidelines.services import guideline_current_version
from judges.models import Judge, JudgeRanking, JudgeRun, default_template
from labeling.models import Item, Project
from labeling.prompt_metadata import storable
from training.endpoints import endpoint_backend_options, endpoint_check_model, endpoint_choose
from training.model_refs import model_reference
from training.models import ModelVersion

logger = logging.getLogger(__name__)
MAX_RUN_ITEMS = 100_000
TEXT_CHUNK_ITEMS = 4  # a judge call takes seconds: small chunks keep cancel and progress prompt
SCORE_CHUNK_ITEMS = 32  # a reward model scores a chunk in one batched call
# Fields whose change makes a new judge version (its earlier rankings stay, under the old one).
JUDGING_FIELDS = ("kind", "endpoint", "model", "reward_version", "prompt_template", "temperature",
                  "max_tokens", "orders")
SETTABLE_FIELDS = (*JUDGING_FIELDS, "name", "max_items_per_day", "max_tokens_per_day",
                   "trust_threshold", "routes_disagreements", "active")


# --------------------------------------------------------------------------- configuring


def _checked(project: Project, values: dict[str, Any], *, check_source: bool = True) -> dict[str, Any]:
    """The judge's fields as stored, or DomainError naming what is wrong. An update that
    leaves the source alone does not check it again (pausing a judge whose endpoint the
    operator removed must work; its runs are refused on the worker)."""
    from training.engine.judging import TemplateError, check_template

    kind = values.get("kind")
    if kind not in Judge.Kind.values:
        raise DomainError(f"unknown judge kind {kind!r}; use one of {', '.join(Judge.Kind.values)}")
    if not check_source:
        pass
    elif kind == Judge.Kind.ENDPOINT:
        endpoint = endpoint_choose(values.get("endpoint") or "")
        endpoint_check_model(endpoint, values.get("model") or "")
        values["endpoint"] = endpoint.name
        values["reward_version"] = None
    elif kind == Judge.Kind.LOCAL:
        if values.get("endpoint"):
            raise DomainError("endpoint is for endpoint judges only")
        values["model"] = model_reference(values.get("model") or "")
        values["reward_version"] = None
    else:
        version = values.get("reward_version")
        if not isinstance(version, ModelVersion) or version.project_id != project.pk or \
                version.kind != ModelVersion.Kind.REWARD:
            raise DomainError("a reward model judge needs a registered reward model of this project")
        if values.get("endpoint") or values.get("model"):
            raise DomainError("a reward model judge takes no endpoint or model: it is the version chosen")
        values["endpoint"] = values["model"] = ""
    try:
        check_template(values.get("prompt_template") or "")
    except TemplateError as exc:
        raise DomainError(str(exc)) from None
    checks = [
        (0 <= float(values.get("temperature", 0)) <= 2, "temperature must be between 0 and 2"),
        (1 <= int(values.get("max_tokens", 1)) <= 32768, "max_tokens must be between 1 and 32768"),
        (2 <= int(values.get("orders", 2)) <= 4, "orders must be between 2 and 4"),
        (values.get("trust_threshold") is None or 0 <= values["trust_threshold"] <= 1,
         "trust_threshold must be between 0 and 1"),
        (values.get("max_items_per_day") is None or values["max_items_per_day"] >= 1,
         "max_items_per_day must be at least 1"),
        (values.get("max_tokens_per_day") is None or values["max_tokens_per_day"] >= 1,
         "max_tokens_per_day must be at least 1"),
        (bool(str(values.get("name", "")).strip()) and len(values.get("name", "")) <= 100,
         "a judge needs a name of at most 100 characters"),
    ]
    errors = [message for ok, message in checks if not ok]
    if errors:
        raise DomainError("; ".join(errors))
    return values


def _snapshot(judge: Judge) -> dict[str, Any]:
    values = {name: getattr(judge, name) for name in SETTABLE_FIELDS}
    values["reward_version"] = judge.reward_version_id
    values["prompt_template"] = f"{len(judge.prompt_template)} characters"
    return {**values, "version": judge.version}


@transaction.atomic
def judge_create(*, project: Project, actor: AbstractBaseUser | None, name: str, kind: str,
                 endpoint: str = "", model: str = "", reward_version: ModelVersion | None = None,
                 prompt_template: str | None = None, temperature: float = 0.0, max_tokens: int = 512,
                 orders: int = 2, max_items_per_day: int | None = None,
                 max_tokens_per_day: int | None = None, trust_threshold: float | None = None,
                 routes_disagreements: bool = False) -> Judge:
    """A judge of `project`, checked as a worker will check it again."""
    if Judge.objects.filter(project=project, name=name).exists():
        raise DomainError(f"this project already has a judge named {name!r}")
    values = _checked(project, {
        "name": name, "kind": kind, "endpoint": endpoint, "model": model,
        "reward_version": reward_version,
        "prompt_template": prompt_template if prompt_template is not None else default_template(),
        "temperature": temperature, "max_tokens": max_tokens, "orders": orders,
        "max_items_per_day": max_items_per_day, "max_tokens_per_day": max_tokens_per_day,
        "trust_threshold": trust_threshold, "routes_disagreements": bool(routes_disagreements),
    })
    judge = Judge.objects.create(project=project, created_by=actor if actor and actor.is_authenticated
                                 else None, **values)
    audit(actor=actor, project=project, action="judge.create", target=judge, after=_snapshot(judge))
    return judge


@transaction.atomic
def judge_update(*, judge: Judge, actor: AbstractBaseUser | None, **changes: Any) -> Judge:
    """Change a judge; a change to what it judges by makes a new version."""
    unknown = sorted(set(changes) - set(SETTABLE_FIELDS))
    if unknown:
        raise DomainError(f"a judge has no field {', '.join(unknown)}")
    judge = Judge.objects.select_for_update().get(pk=judge.pk)
    before = _snapshot(judge)
    current = {name: getattr(judge, name) for name in SETTABLE_FIELDS}
    source = ("kind", "endpoint", "model", "reward_version")
    values = _checked(judge.project, {**current, **changes},
                      check_source=any(name in changes and changes[name] != current[name] for name in source))
    if values["name"] != judge.name and Judge.objects.filter(
            project=judge.project, name=values["name"]).exclude(pk=judge.pk).exists():
        raise DomainError(f"this project already has a judge named {values['name']!r}")
    new_version = any(values[name] != current[name] for name in JUDGING_FIELDS)
    for name, value in values.items():
        setattr(judge, name, value)
    if new_version:
        judge.version += 1
    judge.save()
    audit(actor=actor, project=judge.project, action="judge.update", target=judge, before=before,
          after=_snapshot(judge))
    return judge


# --------------------------------------------------------------------------- runs


def items_to_judge(judge: Judge) -> list[int]:
    """Ranking items of the project (gold too: they measure the judge) this judge version
    has not judged yet, oldest first."""
    done = JudgeRanking.objects.filter(judge=judge, judge_version=judge.version).values("item_id")
    return list(
        Item.objects.filter(project=judge.project, kind=Item.Kind.RANKING)
        .exclude(status=Item.Status.DISCARDED).exclude(pk__in=done)
        .order_by("id").values_list("id", flat=True)[:MAX_RUN_ITEMS]
    )


@transaction.atomic
def judge_run_create(*, judge: Judge, actor: AbstractBaseUser | None, item_ids: list[int] | None = None,
                     enqueue: bool = True) -> JudgeRun:
    """A run of `judge` over `item_ids` (default: every item it has not judged yet)."""
    if not judge.active:
        raise DomainError(f"judge {judge.name!r} is paused; activate it first")
    if item_ids is None:
        item_ids = items_to_judge(judge)
    else:
        if len(item_ids) > MAX_RUN_ITEMS:
            raise DomainError(f"a run judges at most {MAX_RUN_ITEMS} items")
        found = set(Item.objects.filter(project=judge.project, kind=Item.Kind.RANKING, pk__in=item_ids)
                    .values_list("id", flat=True))
        missing = sorted(set(item_ids) - found)
        if missing:
            raise DomainError(f"ranking items not in this project: {missing[:20]}")
        item_ids = sorted(found)
    run = JudgeRun.objects.create(
        judge=judge, judge_version=judge.version, item_ids=item_ids,
        created_by=actor if actor and actor.is_authenticated else None,
        progress={"items_done": 0, "items_total": len(item_ids)},
    )
    audit(actor=actor, project=judge.project, action="judge.run_start", target=run,
          after={"judge": judge.pk, "judge_version": judge.version, "items": len(item_ids)})
    if enqueue:
        run_enqueue(run)
    return run


def judge_run_cancel(*, run: JudgeRun, actor: AbstractBaseUser | None) -> bool:
    """Cancel a queued or running judge run; the worker stops at its next chunk."""
    cancelled = run_cancel(run)
    if cancelled:
        audit(actor=actor, project=run.judge.project, action="judge.run_cancel", target=run)
    return cancelled


class _Cancelled(Exception):
    pass


class _BudgetSpent(Exception):
    pass


@dataclass
class _Outcome:
    """What one item came to, before it is written."""

    status: str
    tiers: list[list[int]] | None = None
    confidence: float | None = None
    consistent: bool = False
    judgements: list[dict[str, Any]] = field(default_factory=list)
    rationale: str = ""
    skip_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Context:
    judge: Judge
    guideline_text: str
    guideline_version_id: int | None


def judge_run_execute(run: JudgeRun, *, progress: Callable[[int, int], None] | None = None) -> None:
    """Do (or finish) a claimed run; the caller has set it RUNNING."""
    from training.engine.sampling import BackendError

    judge = Judge.objects.select_related("project", "reward_version").get(pk=run.judge_id)
    if judge.version != run.judge_version:
        run_finish(run, status=Run.Status.FAILED, error=f"the judge changed (now version "
                   f"{judge.version}) since this run was created; start a new run")
        return
    try:
        ranker = _ranker(judge)
    except (BackendError, DomainError) as exc:
        run_finish(run, status=Run.Status.FAILED, error=str(exc))
        return
    version = guideline_current_version(project=judge.project)
    context = _Context(judge, version.body if version else "", version.pk if version else None)
    done = set(JudgeRanking.objects.filter(judge=judge, judge_version=run.judge_version,
                                           item_id__in=run.item_ids).values_list("item_id", flat=True))
    todo = [i for i in run.item_ids if i not in done]
    chunk_size = SCORE_CHUNK_ITEMS if judge.kind == Judge.Kind.REWARD_MODEL else TEXT_CHUNK_ITEMS
    seconds, judged = 0.0, 0
    try:
        start = 0
        while start < len(todo):
            if not run_heartbeat(run):  # cancelled while the last chunk was being judged
                raise _Cancelled
            size = min(chunk_size, _budget_left(judge))
            chunk, start = todo[start:start + size], start + size
            items = list(Item.objects.filter(pk__in=chunk)
                         .select_related("prompt").prefetch_related("item_candidates").order_by("id"))
            began = time.monotonic()
            try:
                outcomes = ranker(context, items)
            except BackendError as exc:
                run_finish(run, status=Run.Status.FAILED, error=f"{exc} (start the run again to resume)",
                           **_progress(run, seconds, judged, len(done)))
                return
            seconds += time.monotonic() - began
            judged += len(items)
            _write(run, context, items, outcomes)
            if not run_heartbeat(run, **_progress(run, seconds, judged, len(done))):
                raise _Cancelled
            if progress:
                progress(judged + len(done), len(run.item_ids))
    except _Cancelled:
        logger.info("judge run %s stopped: cancelled or taken over", run.pk)
        return
    except _BudgetSpent as exc:
        run_finish(run, status=Run.Status.DONE, budget_exhausted=str(exc), **_progress(run, seconds, judged, len(done)))
        return
    JudgeRun.objects.filter(pk=run.pk).update(stats={**run_stats(run), **judge_results_apply(judge, run)})
    run_finish(run, status=Run.Status.DONE, **_progress(run, seconds, judged, len(done)))


def _progress(run: JudgeRun, seconds: float, judged: int, done_before: int) -> dict[str, Any]:
    rows = JudgeRanking.objects.filter(run=run)
    return {
        "items_done": done_before + judged,
        "items_total": len(run.item_ids),
        "skipped": rows.filter(status=JudgeRanking.Status.SKIPPED).count(),
        "items_per_s": round(judged / seconds, 3) if seconds else None,
    }


def judge_results_apply(judge: Judge, run: JudgeRun) -> dict[str, Any]:
    """After a run: the judge's measured agreement with people is refreshed, and what
    the project asked a judge to be used for is applied (judges/routing.py)."""
    from judges.metrics import judge_figures
    from judges.routing import judge_route_disagreements, judge_trust_apply

    measured = judge_figures(judge)["all"].consensus_agreement.get("mean")
    Judge.objects.filter(pk=judge.pk).update(measured_agreement=measured)
    judge.measured_agreement = measured
    return {"measured_agreement": measured,
            "routed_first": judge_route_disagreements(judge=judge, item_ids=run.item_ids),
            "single_ranking_items": judge_trust_apply(judge=judge)}


def run_stats(run: JudgeRun) -> dict[str, Any]:
    rows = JudgeRanking.objects.filter(run=run)
    ranked = rows.filter(status=JudgeRanking.Status.RANKED)
    tokens = rows.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    confidences = [c for c in ranked.values_list("confidence", flat=True) if c is not None]
    return {
        "ranked": ranked.count(), "skipped": rows.count() - ranked.count(),
        "inconsistent": ranked.filter(consistent=False).count(),
        "mean_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "prompt_tokens": tokens["p"] or 0, "completion_tokens": tokens["c"] or 0,
    }


def judge_usage_today(judge: Judge) -> tuple[int, int]:
    """(items, tokens) the judge spent in the last 24 hours, from its rankings."""
    rows = JudgeRanking.objects.filter(judge=judge, created_at__gte=timezone.now() - timedelta(days=1))
    tokens = rows.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    return rows.count(), (tokens["p"] or 0) + (tokens["c"] or 0)


def _budget_left(judge: Judge) -> int:
    """Items the judge may still judge today (a large number when unbounded); raises
    _BudgetSpent at 0. Tokens are known only after a call, so the token budget may be
    overrun by at most one chunk."""
    items, tokens = judge_usage_today(judge)
    if judge.max_items_per_day is not None and items >= judge.max_items_per_day:
        raise _BudgetSpent(f"{items} items in the last 24 h (budget {judge.max_items_per_day})")
    if judge.max_tokens_per_day is not None and tokens >= judge.max_tokens_per_day:
        raise _BudgetSpent(f"{tokens} tokens in the last 24 h (budget {judge.max_tokens_per_day})")
    return judge.max_items_per_day - items if judge.max_items_per_day is not None else MAX_RUN_ITEMS


@transaction.atomic
def _write(run: JudgeRun, context: _Context, items: list[Item], outcomes: list[_Outcome]) -> None:
    JudgeRanking.objects.bulk_create([
        JudgeRanking(judge=context.judge, judge_version=run.judge_version, run=run, item=item,
                     guideline_version_id=context.guideline_version_id, status=o.status,
                     tiers=o.tiers, confidence=o.confidence, consistent=o.consistent,
                     judgements=o.judgements, rationale=o.rationale, skip_reason=o.skip_reason[:500],
                     prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens)
        for item, o in zip(items, outcomes, strict=True)
    ], ignore_conflicts=True)  # a second worker on the same run wrote it first: keep theirs


# --------------------------------------------------------------------------- the judges


Ranker = Callable[[_Context, list[Item]], list[_Outcome]]


def _ranker(judge: Judge) -> Ranker:
    """The function that judges a chunk of items, loaded (and checked) on the worker."""
    if judge.kind == Judge.Kind.REWARD_MODEL:
        return _reward_ranker(judge)
    return _text_ranker(judge, _completer(judge))


def _completer(judge: Judge) -> Callable[[list[dict[str, str]], int], Any]:
    """conversation, seed -> Sample or the reason it was refused."""
    from training.engine.backends import load_backend
    from training.engine.sampling import SamplingParams, sample

    if judge.kind == Judge.Kind.ENDPOINT:
        options = endpoint_backend_options(judge.endpoint, judge.model)
        backend = load_backend("openai", judge.model, **options,
                               timeout=float(settings.JUDGE_REQUEST_TIMEOUT_SECONDS),
                               max_retries=settings.JUDGE_MAX_RETRIES)

        def complete(conversation: list[dict[str, str]], seed: int) -> Any:
            return backend.complete(conversation, temperature=judge.temperature,
                                    max_tokens=judge.max_tokens, seed=seed)
        return complete

    options = {"num_threads": settings.TORCH_NUM_THREADS} if settings.TORCH_NUM_THREADS else {}
    backend = load_backend("transformers", model_reference(judge.model), **options)
    # The local backends sample K >= 2 answers per call; a judge reads the first.
    params = SamplingParams(k=2, temperature=judge.temperature, max_new_tokens=judge.max_tokens)

    def complete_local(conversation: list[dict[str, str]], seed: int) -> Any:
        [result] = sample([conversation], params, backend, seeds=[seed])
        return result.samples[0] if result.ok else f"rejected: {result.skipped}"
    return complete_local


def _candidates(item: Item) -> list[int]:
    return [ic.candidate_id for ic in sorted(item.item_candidates.all(), key=lambda ic: ic.position)]


def _text_ranker(judge: Judge, complete: Callable[[list[dict[str, str]], int], Any]) -> Ranker:
    from labeling.models import Candidate
    from training.engine.judging import judging_orders

    def rank(context: _Context, items: list[Item]) -> list[_Outcome]:
        ids = [c for item in items for c in _candidates(item)]
        texts = dict(Candidate.objects.filter(pk__in=ids).values_list("id", "text"))
        outcomes = []
        for item in items:
            orders = judging_orders(_candidates(item), n_orders=judge.orders, seed=item.pk * 7919 + judge.pk)
            outcomes.append(_judge_item(judge, context, item, orders, texts, complete))
        return outcomes
    return rank


def _judge_item(judge: Judge, context: _Context, item: Item, orders: list[list[int]],
                texts: dict[int, str], complete: Callable[[list[dict[str, str]], int], Any]) -> _Outcome:
    """Ask each order (a bad answer is asked once more), then reconcile; a skip when any
    order has no valid answer, its raw text kept for reviewers."""
    from training.engine.judging import (
        JudgeOutputError,
        parse_judgement,
        reconcile,
        render_judge_prompt,
        tiers_in_candidates,
    )

    outcome = _Outcome(status=JudgeRanking.Status.RANKED)
    parsed_tiers, rationale = [], ""
    for index, order in enumerate(orders):
        conversation = render_judge_prompt(judge.prompt_template, guideline=context.guideline_text,
                                           messages=item.prompt.messages, answers=[texts[c] for c in order])
        record: dict[str, Any] = {"order": order, "tiers": None, "attempts": 0, "texts": [], "errors": []}
        for attempt in range(2):
            record["attempts"] += 1
            answer = complete(conversation, item.pk * 31 + index * 7 + attempt)
            if isinstance(answer, str):
                record["errors"].append(answer)
                break  # the endpoint refused the request itself: asking again changes nothing
            outcome.prompt_tokens += answer.prompt_tokens or 0
            outcome.completion_tokens += answer.completion_tokens or 0
            record["texts"].append(storable(answer.text[:20000]))  # a NUL would fail the write
            try:
                parsed = parse_judgement(answer.text, len(order))
            except JudgeOutputError as exc:
                record["errors"].append(storable(str(exc)))  # it may quote the text
                continue
            record["tiers"] = tiers_in_candidates(parsed.tiers, order)
            rationale = rationale or storable(parsed.rationale)
            break
        outcome.judgements.append(record)
        if record["tiers"] is None:
            outcome.status = JudgeRanking.Status.SKIPPED
            outcome.skip_reason = f"order {index + 1}: {record['errors'][-1]}"
            return outcome
        parsed_tiers.append(record["tiers"])
    reconciled = reconcile(parsed_tiers)
    outcome.tiers, outcome.confidence = reconciled.tiers, reconciled.confidence
    outcome.consistent, outcome.rationale = reconciled.consistent, rationale
    return outcome


def _reward_ranker(judge: Judge) -> Ranker:
    from training.artifacts import ArtifactMissing, artifact_local
    from training.engine.judging import reconcile_scores
    from training.engine.reward import RewardScorer
    from training.engine.sampling import BackendError

    version = judge.reward_version
    if version is None or version.project_id != judge.project_id or version.kind != ModelVersion.Kind.REWARD:
        raise DomainError("the judge's reward model is not a registered reward model of this project")
    try:
        scorer = RewardScorer.load(artifact_local(version.adapter_path))
    except (ArtifactMissing, OSError) as exc:
        raise BackendError(f"could not load reward model {version}: {exc}") from None

    def rank(context: _Context, items: list[Item]) -> list[_Outcome]:
        from labeling.models import Candidate

        ids = [c for item in items for c in _candidates(item)]
        texts = dict(Candidate.objects.filter(pk__in=ids).values_list("id", "text"))
        prompts = [item.prompt.messages for item in items for _ in _candidates(item)]
        scores = dict(zip(ids, scorer.score(prompts, [texts[c] for c in ids]), strict=True))
        outcomes = []
        for item in items:
            mine = {c: scores[c] for c in _candidates(item)}
            reconciled = reconcile_scores(mine)
            outcomes.append(_Outcome(
                status=JudgeRanking.Status.RANKED, tiers=reconciled.tiers, confidence=reconciled.confidence,
                consistent=True,
                judgements=[{"order": _candidates(item), "scores": {str(c): s for c, s in mine.items()}}]))
        return outcomes
    return rank
