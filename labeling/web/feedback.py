"""The annotator's own feedback page: their gold misses and reviewers' notes on items
they ranked, nothing about anyone else."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core import access
from labeling.models import AnnotatorQuality, Ranking
from labeling.stats.consensus import tier_ranks


@login_required
def my_feedback(request: HttpRequest, slug: str) -> HttpResponse:
    """An annotator's own gold misses and reviewers' notes on items they ranked: nothing
    about anyone else."""
    project = access.project_by_slug_for(request.user, slug)
    mine = Ranking.objects.filter(annotator=request.user, item__project=project,
                                  superseded_by__isnull=True).select_related("item", "item__prompt")
    gold = []
    for ranking in mine.filter(item__is_gold=True, item__gold_ranking__isnull=False)[:200]:
        if ranking.tiers == ranking.item.gold_ranking:
            continue
        mine_ranks, gold_ranks = tier_ranks(ranking.tiers), tier_ranks(ranking.item.gold_ranking)
        texts = dict(ranking.item.candidates.values_list("id", "text"))
        gold.append({"ranking": ranking, "rows": sorted(
            ((texts[cid], mine_ranks[cid], gold_ranks[cid]) for cid in texts),
            key=lambda row: row[2])})
    notes = mine.exclude(item__decision_note="").order_by("-item__decided_at")[:100]
    quality = AnnotatorQuality.objects.filter(project=project, annotator=request.user,
                                              period="all").first()
    return render(request, "annotator/feedback.html", {
        "project": project, "gold_misses": gold, "notes": notes, "quality": quality,
    })
