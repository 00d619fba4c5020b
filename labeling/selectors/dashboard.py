"""Reads behind the console dashboard and the quality API (the API returns the same
dictionaries): progress, agreement over time and per guideline version, annotators, the
project's agreement with its interval, and models compared."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import numpy as np
from django.db.models import Count, Max
from django.db.models.functions import TruncDate
from django.utils import timezone

from labeling.axes import Axis, axes_from_config
from labeling.models import AnnotatorQuality, Candidate, Item, Project, Ranking
from labeling.stats.bootstrap import mean_with_ci
from labeling.stats.consensus import bradley_terry, outcomes_from_ranking, pairs_from_ranking

DAYS = 30


def throughput_per_day(project: Project, days: int = DAYS) -> list[dict[str, Any]]:
    since = timezone.now() - timedelta(days=days)
    rows = (Ranking.objects.filter(item__project=project, created_at__gte=since)
            .annotate(day=TruncDate("created_at")).values("day").annotate(n=Count("id"))
            .order_by("day"))
    return [{"day": row["day"].isoformat(), "rankings": row["n"]} for row in rows]


def agreement_per_day(project: Project, days: int = DAYS) -> list[dict[str, Any]]:
    since = timezone.now() - timedelta(days=days)
    values: dict[str, list[float]] = defaultdict(list)
    for day, agreement in (Item.objects.filter(project=project, is_gold=False,
                                               agreement__isnull=False, decided_at__gte=since)
                           .annotate(day=TruncDate("decided_at")).values_list("day", "agreement")):
        values[day.isoformat()].append(agreement)
    return [_with_ci({"day": day}, values[day]) for day in sorted(values)]


def agreement_per_guideline_version(project: Project) -> list[dict[str, Any]]:
    """Items grouped by the newest guideline version among their rankings."""
    rows = (Item.objects.filter(project=project, is_gold=False, agreement__isnull=False)
            .annotate(version=Max("rankings__guideline_version__number"))
            .values_list("version", "agreement"))
    values: dict[int | None, list[float]] = defaultdict(list)
    for version, agreement in rows:
        values[version].append(agreement)
    return [_with_ci({"guideline_version": v}, values[v])
            for v in sorted(values, key=lambda v: (v is None, v or 0))]


def _with_ci(row: dict[str, Any], values: list[float]) -> dict[str, Any]:
    stats = mean_with_ci(values)
    row.update(items=stats["n"], agreement=stats["mean"], ci=stats["ci"])
    return row


def annotator_table(project: Project, period: str = "all") -> list[AnnotatorQuality]:
    return list(AnnotatorQuality.objects.filter(project=project, period=period)
                .select_related("annotator").order_by("annotator__username"))


def annotator_axis_quality(project: Project) -> dict[int, dict[str, AnnotatorQuality]]:
    """{annotator id: {axis key: their figures on that axis}} (empty without axes)."""
    if not project.axes:
        return {}
    table: dict[int, dict[str, AnnotatorQuality]] = defaultdict(dict)
    for row in AnnotatorQuality.objects.filter(project=project, period__startswith="axis:"):
        table[row.annotator_id][row.period.removeprefix("axis:")] = row
    return dict(table)


def project_axes(project: Project) -> list[Axis]:
    """The project's axes for the pages; empty for a project without axes, whose one
    implicit axis the pages already show as "the" agreement."""
    return axes_from_config(project.axes) if project.axes else []


def axis_summary(*, project: Project) -> list[dict[str, Any]]:
    """Per axis: decided items, their agreement with a bootstrap interval, and how many
    are accepted and disputed on that axis (Item.axes), in the project's order."""
    axes = project_axes(project)
    if not axes:
        return []
    values: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = {a.key: {"accepted": 0, "disputed": 0} for a in axes}
    for figures in (Item.objects.filter(project=project, is_gold=False).exclude(axes={})
                    .values_list("axes", flat=True).iterator(chunk_size=2000)):
        for key, entry in figures.items():
            if key not in counts:
                continue
            values[key].append(entry["agreement"])
            counts[key][entry["status"]] = counts[key].get(entry["status"], 0) + 1
    rows = []
    for axis in axes:
        stats = mean_with_ci(values[axis.key])
        rows.append({"key": axis.key, "name": axis.name, "kind": axis.kind,
                     "required": axis.required, "decided_items": stats["n"],
                     "agreement": stats["mean"], "agreement_ci": stats["ci"],
                     "accepted": counts[axis.key]["accepted"],
                     "disputed": counts[axis.key]["disputed"]})
    return rows


def project_agreement_summary(*, project: Project) -> dict[str, Any]:
    """Project-level agreement for the API and console (per guideline version too)."""
    decided = Item.objects.filter(project=project, agreement__isnull=False, is_gold=False)
    counts = {status: 0 for status in Item.Status.values}
    for status in Item.objects.filter(project=project).values_list("status", flat=True):
        counts[status] += 1
    agreement = mean_with_ci(list(decided.values_list("agreement", flat=True)))
    summary: dict[str, Any] = {"items": counts, "decided_items": agreement["n"],
                               "pairwise_agreement": agreement["mean"],
                               "pairwise_agreement_ci": agreement["ci"]}
    # Adaptive overlap: each decided item asked for fewer rankings than the full overlap.
    saved = sum(project.overlap - required for required in decided.values_list(
        "required_rankings", flat=True) if required < project.overlap)
    summary["rankings_saved_by_adaptive_overlap"] = saved
    summary["axes"] = axis_summary(project=project)
    return summary


def model_comparison(*, project: Project, n_resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per model (from candidate provenance): win rate against each other model and a
    Bradley-Terry score with a bootstrap interval, from accepted consensus rankings."""
    items = list(Item.objects.filter(project=project, status=Item.Status.ACCEPTED,
                                     consensus__isnull=False).values_list("consensus", flat=True))
    ids = {cid for tiers in items for tier in tiers for cid in tier}
    model_of = dict(Candidate.objects.filter(pk__in=ids).values_list("id", "model_name"))
    names = sorted({name or "(unknown)" for name in model_of.values()})
    index = {name: n for n, name in enumerate(names)}
    per_item = [
        [(index[model_of[b] or "(unknown)"], index[model_of[w] or "(unknown)"])
         for b, w, _ in pairs_from_ranking(tiers) if model_of[b] != model_of[w]]
        for tiers in items
    ]
    wins = np.zeros((len(names), len(names)))
    for pairs in per_item:
        for better, worse in pairs:
            wins[better, worse] += 1
    scores = _bt_scores(per_item, len(names))
    rng = np.random.default_rng(seed)
    samples = [_bt_scores([per_item[i] for i in rng.integers(0, len(per_item), len(per_item))],
                          len(names)) for _ in range(n_resamples if per_item else 0)]
    table = []
    for name, n in index.items():
        games = wins[n] + wins[:, n]
        spread = [s[n] for s in samples]
        table.append({
            "model": name, "bt_score": scores[n],
            "bt_ci": [float(np.percentile(spread, 2.5)), float(np.percentile(spread, 97.5))]
            if spread else None,
            "win_rate": {other: float(wins[n, m] / games[m]) for other, m in index.items()
                         if m != n and games[m]},
            "comparisons": int(games.sum()),
        })
    return {"items": len(items), "models": sorted(table, key=lambda row: -row["bt_score"])}


def _bt_scores(per_item: list[list[tuple[int, int]]], count: int) -> list[float]:
    if count == 0:
        return []
    outcomes = [o for pairs in per_item for b, w in pairs
                for o in outcomes_from_ranking([[b], [w]])]
    fitted = bradley_terry(outcomes, list(range(count)))
    return [fitted[n] for n in range(count)]
