"""Selectors behind the console dashboard (the API returns the same dictionaries)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.db.models import Count, Max
from django.db.models.functions import TruncDate
from django.utils import timezone

from labeling.models import AnnotatorQuality, Item, Project, Ranking
from labeling.stats.bootstrap import mean_with_ci

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
