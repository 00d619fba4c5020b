"""A judge measured like a person: the same statistics (labeling/stats) on its rankings
against the people's, per period ("all" and "guideline:v<number>").

- agreement with the human consensus (the judge is not in that consensus, so this is
  its leave-one-out agreement), with a bootstrap interval over items;
- judge-human agreement (mean pairwise agreement with each person who ranked the item)
  next to human-human agreement on the same items, both with bootstrap intervals;
- agreement with each annotator, so a careless one stands out against the judge too;
- position bias of its raw answers (before reconciliation) and the net preference left
  after it, length bias against the consensus, tie rate, gold accuracy, confidence.

Read-only; computed on request (a project's judged items, not its whole history).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from judges.models import Judge, JudgeRanking
from labeling.models import Candidate, Item, Ranking
from labeling.stats.agreement import (
    AgreementUndefinedError,
    item_pairwise_agreement,
    length_bias,
    pairwise_agreement,
    position_bias,
    tie_rate,
)
from labeling.stats.bootstrap import mean_with_ci
from labeling.stats.consensus import borda_consensus
from training.engine.judging import net_position_preference


@dataclass
class _JudgedItem:
    item_id: int
    tiers: list[list[int]]
    confidence: float | None
    version: int | None
    raw: list[tuple[list[list[int]], list[int]]]  # (tiers, order shown) per order asked
    orders: list[list[int]]


@dataclass
class _Human:
    annotator_id: int
    tiers: list[list[int]]
    version: int | None


@dataclass
class JudgeFigures:
    rankings: int = 0
    skipped: int = 0
    consensus_agreement: dict[str, Any] = field(default_factory=dict)
    judge_human: dict[str, Any] = field(default_factory=dict)
    human_human: dict[str, Any] = field(default_factory=dict)
    per_annotator: dict[int, dict[str, Any]] = field(default_factory=dict)
    position_bias: float | None = None
    position_expected: float | None = None
    net_position_preference: float | None = None
    length_bias: float | None = None
    tie_rate: float | None = None
    gold_accuracy: float | None = None
    gold_items: int = 0
    mean_confidence: float | None = None


def judge_figures(judge: Judge) -> dict[str, JudgeFigures]:
    """The judge's figures (current version) per period, "all" first."""
    judged, skipped = _load_judged(judge)
    humans = _load_humans([j.item_id for j in judged])
    gold = dict(Item.objects.filter(pk__in=[j.item_id for j in judged], is_gold=True,
                                    gold_ranking__isnull=False).values_list("id", "gold_ranking"))
    lengths = _lengths([c for j in judged for tier in j.tiers for c in tier])
    periods: dict[str, list[_JudgedItem]] = {"all": judged}
    for j in judged:
        if j.version is not None:
            periods.setdefault(f"guideline:v{j.version}", []).append(j)
    figures = {}
    for period, rows in periods.items():
        version = None if period == "all" else int(period.split(":v")[1])
        figures[period] = _figures(rows, humans, gold, lengths, version)
    figures["all"].skipped = skipped
    return figures


def _load_judged(judge: Judge) -> tuple[list[_JudgedItem], int]:
    rows = JudgeRanking.objects.filter(judge=judge, judge_version=judge.version)
    judged = []
    for item_id, tiers, confidence, version, judgements in rows.filter(
            status=JudgeRanking.Status.RANKED).values_list(
            "item_id", "tiers", "confidence", "guideline_version__number", "judgements").order_by("id"):
        raw = [(j["tiers"], j["order"]) for j in judgements if j.get("tiers")]
        judged.append(_JudgedItem(item_id, tiers, confidence, version, raw, [j["order"] for j in judgements]))
    return judged, rows.filter(status=JudgeRanking.Status.SKIPPED).count()


def _load_humans(item_ids: list[int]) -> dict[int, list[_Human]]:
    humans: dict[int, list[_Human]] = defaultdict(list)
    for item_id, annotator_id, tiers, version in Ranking.objects.filter(
            item_id__in=item_ids, superseded_by__isnull=True).values_list(
            "item_id", "annotator_id", "tiers", "guideline_version__number").order_by("id"):
        humans[item_id].append(_Human(annotator_id, tiers, version))
    return humans


def _lengths(candidate_ids: list[int]) -> dict[int, int]:
    from django.db.models.functions import Length

    return dict(Candidate.objects.filter(pk__in=candidate_ids).annotate(n=Length("text"))
                .values_list("id", "n"))


def _figures(rows: list[_JudgedItem], humans: dict[int, list[_Human]], gold: dict[int, Any],
             lengths: dict[int, int], version: int | None) -> JudgeFigures:
    out = JudgeFigures(rankings=len(rows))
    to_consensus, judge_human, human_human = [], [], []
    per_annotator: dict[int, list[float]] = defaultdict(list)
    consensus_of: dict[int, list[list[int]]] = {}
    for row in rows:
        if row.item_id in gold:
            continue
        people = [h for h in humans.get(row.item_id, []) if version is None or h.version == version]
        if not people:
            continue
        consensus = borda_consensus([h.tiers for h in people])
        consensus_of[row.item_id] = consensus
        to_consensus.append(pairwise_agreement(row.tiers, consensus))
        scores = [pairwise_agreement(row.tiers, h.tiers) for h in people]
        judge_human.append(float(np.mean(scores)))
        for person, score in zip(people, scores, strict=True):
            per_annotator[person.annotator_id].append(score)
        if len(people) >= 2:
            human_human.append(item_pairwise_agreement([h.tiers for h in people]))
    out.consensus_agreement = mean_with_ci(to_consensus)
    out.judge_human = mean_with_ci(judge_human)
    out.human_human = mean_with_ci(human_human)
    out.per_annotator = {a: {"items": len(s), "agreement": float(np.mean(s))}
                         for a, s in sorted(per_annotator.items())}
    raw = [pair for row in rows for pair in row.raw]
    if raw:
        bias = position_bias([t for t, _ in raw], [o for _, o in raw])
        out.position_bias, out.position_expected = bias.rate, bias.expected
    ordered = [row for row in rows if row.orders]
    if ordered:
        out.net_position_preference = float(np.mean([net_position_preference(r.tiers, r.orders)
                                                     for r in ordered]))
    out.length_bias = length_bias(((r.item_id, r.tiers) for r in rows), consensus_of, lengths)
    try:
        out.tie_rate = tie_rate([r.tiers for r in rows]) if rows else None
    except AgreementUndefinedError:
        out.tie_rate = None
    gold_scores = [pairwise_agreement(r.tiers, gold[r.item_id]) for r in rows if r.item_id in gold]
    out.gold_items = len(gold_scores)
    out.gold_accuracy = float(np.mean(gold_scores)) if gold_scores else None
    confidences = [r.confidence for r in rows if r.confidence is not None]
    out.mean_confidence = float(np.mean(confidences)) if confidences else None
    return out


def judges_table(project: Any, period: str = "all") -> list[tuple[Judge, JudgeFigures | None]]:
    """Every judge of the project with its figures for `period` (None: nothing judged)."""
    return [(judge, judge_figures(judge).get(period))
            for judge in Judge.objects.filter(project=project).order_by("id")]


def judges_by_period(project: Any) -> list[tuple[Judge, list[tuple[str, JudgeFigures]]]]:
    """Every judge that has judged something, with its figures per period ("all" first)."""
    out = []
    for judge in Judge.objects.filter(project=project, rankings__isnull=False).distinct().order_by("id"):
        figures = judge_figures(judge)
        out.append((judge, sorted(figures.items(), key=lambda p: (p[0] != "all", p[0]))))
    return out


def figures_as_dict(figures: JudgeFigures) -> dict[str, Any]:
    from dataclasses import asdict

    values = asdict(figures)
    values["per_annotator"] = {str(k): v for k, v in figures.per_annotator.items()}
    return values
