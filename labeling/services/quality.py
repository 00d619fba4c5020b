"""Acting on agreement: item decisions, annotator quality, models compared.

The statistics themselves live in labeling/stats/ (pure numpy); this module loads
rows, calls them and writes the results. The figures pages read are in
labeling/selectors/dashboard.py.

- `item_decide` runs inside the submission that completes an item (O(K^2 N)): it stores
  the item's agreement and consensus and marks it accepted or disputed, or, with
  adaptive overlap, asks for one more ranking while the first ones disagree.
- `quality_refresh` recomputes every annotator's figures for a project; a debounced task
  runs it after decisions, and `manage.py recompute_quality` runs it on demand.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from config.celery import app
from judges.routing import trusted_judge_agrees
from labeling.axes import axes_from_config, label_tiers
from labeling.models import AnnotatorQuality, Candidate, Item, Project, Ranking
from labeling.selectors.review import live_rankings
from labeling.stats.agreement import (
    AgreementUndefinedError,
    item_pairwise_agreement,
    leave_one_out_agreement,
    length_bias,
    pairwise_agreement,
    position_bias,
    tie_rate,
)
from labeling.stats.axes import axis_figures, disputed_axes, item_status
from labeling.stats.consensus import (
    borda_consensus,
)
from webhooks.events import event_emit
from webhooks.models import EventType

QUALITY_DEBOUNCE_SECONDS = 30


def item_figures(item: Item, rankings: list[Ranking]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The item's stored figures from its live rankings: (fields to write: agreement,
    consensus and per-axis `axes`; the per-axis figures). For a project with axes,
    `agreement` and `consensus` are the primary axis's (labeling/axes.py)."""
    project = item.project
    if not project.axes:  # one implicit axis: what it always was
        tiers = [r.tiers for r in rankings]
        try:
            agreement = item_pairwise_agreement(tiers)
        except AgreementUndefinedError:
            agreement = 1.0  # a single ranking (overlap 1): nobody to disagree with
        return {"agreement": agreement, "consensus": borda_consensus(tiers)}, {}
    axes = axes_from_config(project.axes)
    figures = axis_figures(axes, [(r.tiers, r.labels) for r in rankings], project.agreement_threshold)
    primary = figures[axes[0].key]
    return {"agreement": primary["agreement"], "consensus": primary["consensus"], "axes": figures}, figures


def item_decide(*, item_id: int) -> str:
    """Decide a complete item from its rankings; returns its new status. Called in the
    transaction that stored the last ranking (the item row is locked). With axes, each
    axis is decided on its own and the item is accepted when every required one is."""
    item = Item.objects.select_related("project").get(pk=item_id)
    project = item.project
    rankings = live_rankings(item)
    tiers = [r.tiers for r in rankings]
    fields, figures = item_figures(item, rankings)
    agreement = fields["agreement"]
    axes = axes_from_config(project.axes) if figures else []
    unanimous = (all(figures.get(a.key, {}).get("agreement", 1.0) >= 1.0 for a in axes if a.required)
                 if figures else agreement >= 1.0)
    escalate = (
        project.adaptive_overlap and item.required_rankings < project.overlap
        # One ranking is enough only where a trusted AI judge agrees with it (judges/routing.py).
        # A judge ranks the primary axis only, so it cannot vouch for a project's other axes.
        and (not unanimous or (len(tiers) == 1 and (
            len(figures) > 1 or not trusted_judge_agrees(item=item, tiers=tiers[0]))))
    )
    if escalate:
        fields.update(status=Item.Status.OPEN, required_rankings=F("required_rankings") + 1)
    else:
        accepted = (item_status(axes, figures) == Item.Status.ACCEPTED if figures
                    else agreement >= project.agreement_threshold)
        fields.update(status=Item.Status.ACCEPTED if accepted else Item.Status.DISPUTED,
                      decided_at=timezone.now())
    Item.objects.filter(pk=item.pk).update(**fields)
    if fields["status"] == Item.Status.DISPUTED:
        data = {"item": item.pk, "prompt": item.prompt_id, "agreement": agreement}
        if figures:
            data["axes"] = disputed_axes(axes, figures)
        event_emit(project=project, type=EventType.ITEM_DISPUTED, path=f"/api/items/{item.pk}/agreement",
                   data=data)
    quality_refresh_soon(project_id=project.pk)
    return str(fields["status"])


def quality_refresh_soon(*, project_id: int) -> None:
    """Debounce: one refresh task per burst of decisions (a conditional UPDATE claims it)."""
    claimed = Project.objects.filter(pk=project_id, quality_refresh_pending=False).update(
        quality_refresh_pending=True
    )
    if claimed:
        # By name: services never import tasks (the task module imports the services).
        transaction.on_commit(lambda: app.tasks["labeling.tasks.refresh_quality"].apply_async(
            args=[project_id], countdown=QUALITY_DEBOUNCE_SECONDS))


# --------------------------------------------------------------------------- annotators


@dataclass
class _Row:
    item_id: int
    annotator_id: int
    tiers: list[list[int]]
    display_order: list[int]
    seconds: float | None
    created_at: Any
    version: int | None
    labels: dict[str, Any]


def _load_rankings(project: Project) -> list[_Row]:
    rows = (
        Ranking.objects.filter(item__project=project, superseded_by__isnull=True)
        .values_list("item_id", "annotator_id", "tiers", "assignment__display_order",
                     "duration_ms", "created_at", "guideline_version__number", "labels")
        .order_by("id")
    )
    return [_Row(i, a, t, d or [], None if ms is None else ms / 1000, c, v, lab or {})
            for i, a, t, d, ms, c, v, lab in rows.iterator(chunk_size=5000)]


def _periods(row: _Row) -> list[str]:
    year, week, _ = row.created_at.isocalendar()
    periods = ["all", f"week:{year}-W{week:02d}"]
    if row.version is not None:
        periods.append(f"guideline:v{row.version}")
    return periods


AXIS_PERIOD = "axis:"  # AnnotatorQuality.period of one axis's figures, e.g. "axis:harmless"


def quality_refresh(*, project: Project) -> int:
    """Recompute every annotator's figures in the project, per period; returns rows.

    A project with axes also gets one row per annotator and axis (period "axis:<key>"),
    measured on that axis's labels only, so a reviewer sees who disagrees on harmlessness
    while agreeing on helpfulness. The other periods stay the primary axis's."""
    Project.objects.filter(pk=project.pk).update(quality_refresh_pending=False)
    rows = _load_rankings(project)
    gold = dict(Item.objects.filter(project=project, is_gold=True,
                                    gold_ranking__isnull=False).values_list("id", "gold_ranking"))
    consensus = dict(Item.objects.filter(project=project, consensus__isnull=False)
                     .values_list("id", "consensus"))
    lengths = _candidate_lengths(project)
    figures = _group_figures(rows, _periods, gold, consensus, lengths)
    if project.axes:
        figures.update(_axis_figures(project, rows, gold, lengths))
    _flag_outliers(figures)
    with transaction.atomic():
        AnnotatorQuality.objects.filter(project=project).delete()
        AnnotatorQuality.objects.bulk_create([
            AnnotatorQuality(project=project, annotator_id=annotator, period=period, **values)
            for (annotator, period), values in figures.items()
        ])
    return len(figures)


def _group_figures(rows: list[_Row], periods: Any, gold: dict, consensus: dict, lengths: dict
                   ) -> dict[tuple[int, str], dict[str, Any]]:
    """{(annotator, period): figures} for rows of one axis, `periods(row)` naming each
    row's periods. Leave-one-out agreement is per item, so it is computed once."""
    by_item: dict[int, list[_Row]] = defaultdict(list)
    for row in rows:
        by_item[row.item_id].append(row)
    loo: dict[tuple[int, int], float] = {}
    for item_id, item_rows in by_item.items():
        if item_id in gold or len(item_rows) < 2:
            continue
        for row, score in zip(item_rows, leave_one_out_agreement([r.tiers for r in item_rows]),
                              strict=True):
            loo[(item_id, row.annotator_id)] = score
    groups: dict[tuple[int, str], list[_Row]] = defaultdict(list)
    for row in rows:
        for period in periods(row):
            groups[(row.annotator_id, period)].append(row)
    return {key: _figures(group, loo, gold, consensus, lengths) for key, group in groups.items()}


def _axis_figures(project: Project, rows: list[_Row], gold: dict, lengths: dict
                  ) -> dict[tuple[int, str], dict[str, Any]]:
    """Per axis: the same figures from each ranking's tiers on that axis (a rating axis's
    are its answers grouped by score), against that axis's consensus. Gold rankings are
    the primary axis's, so only the primary axis has gold accuracy."""
    axes = axes_from_config(project.axes)
    primary = axes[0].key
    stored = dict(Item.objects.filter(project=project).exclude(axes={}).values_list("id", "axes"))
    figures: dict[tuple[int, str], dict[str, Any]] = {}
    for axis in axes:
        axis_rows = [replace(row, tiers=tiers) for row in rows if (
            tiers := label_tiers(row.labels, row.tiers, axis.key, primary)) is not None]
        consensus = {item_id: entry[axis.key]["consensus"] for item_id, entry in stored.items()
                     if entry.get(axis.key, {}).get("consensus")}
        period = f"{AXIS_PERIOD}{axis.key}"
        figures.update(_group_figures(axis_rows, lambda _row, p=period: [p],
                                      gold if axis.key == primary else {}, consensus, lengths))
    return figures


def _candidate_lengths(project: Project) -> dict[int, int]:
    from django.db.models.functions import Length

    return dict(Candidate.objects.filter(prompt__project=project)
                .annotate(n=Length("text")).values_list("id", "n"))


def _figures(rows: list[_Row], loo: dict, gold: dict, consensus: dict, lengths: dict
             ) -> dict[str, Any]:
    regular = [r for r in rows if r.item_id not in gold]
    scores = [loo[(r.item_id, r.annotator_id)] for r in regular
              if (r.item_id, r.annotator_id) in loo]
    gold_scores = [pairwise_agreement(r.tiers, gold[r.item_id]) for r in rows
                   if r.item_id in gold]
    seconds = [r.seconds for r in rows if r.seconds is not None]
    shown = [(r.tiers, r.display_order) for r in rows if len(r.display_order) >= 2]
    bias = position_bias([t for t, _ in shown], [d for _, d in shown]) if shown else None
    return {
        "rankings": len(rows),
        "loo_agreement": float(np.mean(scores)) if scores else None,
        "gold_items": len(gold_scores),
        "gold_accuracy": float(np.mean(gold_scores)) if gold_scores else None,
        "median_seconds": statistics.median(seconds) if seconds else None,
        "tie_rate": _safe(tie_rate, [r.tiers for r in rows]),
        "position_bias": bias.rate if bias else None,
        "position_expected": bias.expected if bias else None,
        "length_bias": length_bias(((r.item_id, r.tiers) for r in regular), consensus, lengths),
        "flags": [],
    }


def _safe(function: Any, *args: Any) -> float | None:
    try:
        return float(function(*args))
    except ValueError:
        return None


def _flag_outliers(figures: dict[tuple[int, str], dict[str, Any]]) -> None:
    """Flag agreement far below the group and implausible speed, within each period."""
    by_period: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (_, period), values in figures.items():
        by_period[period].append(values)
    for group in by_period.values():
        speeds = [v["median_seconds"] for v in group if v["median_seconds"] is not None]
        typical = statistics.median(speeds) if speeds else None
        for values in group:
            agreement = values["loo_agreement"]
            # Compare with the others, not a mean that includes the outlier itself.
            others = [v["loo_agreement"] for v in group
                      if v is not values and v["loo_agreement"] is not None]
            if agreement is not None and others and values["rankings"] >= 5:
                gap = max(0.2, 2 * float(np.std(others))) if len(others) > 2 else 0.2
                if agreement < float(np.mean(others)) - gap:
                    values["flags"].append("low_agreement")
            if typical and values["median_seconds"] is not None and (
                values["median_seconds"] < 0.25 * typical
            ):
                values["flags"].append("too_fast")
            expected = values["position_expected"]
            if expected and values["position_bias"] is not None and values["rankings"] >= 10 and (
                values["position_bias"] > expected + 0.25
            ):
                values["flags"].append("position_bias")
            if values["gold_accuracy"] is not None and values["gold_accuracy"] < 0.6:
                values["flags"].append("gold_misses")


# --------------------------------------------------------------------------- figures


