"""Using a judge's rankings: where people look first, and when one person is enough.

Routing (a judge with `routes_disagreements`, a project on the `uncertain_first`
strategy): `Item.uncertainty` holds the reward model's gap between its two best answers
(>= 0; smaller is served first). An open item where the judge disagrees with the current
reward model, or with itself across answer orders, gets a negative value instead,
-(how much it disagrees), so the existing uncertain_first order (and its index) serves
those items first, most disputed first. Nothing in the assignment path changes.

Trust (a judge with a `trust_threshold`, a project with adaptive overlap): while the
judge's measured agreement with the human consensus is at least its threshold, items it
has judged start at one required ranking instead of two, and `item_decide`
(labeling/services/quality.py) accepts that one ranking only when it agrees with the
judge (pairwise agreement at least the project's agreement threshold); otherwise it asks
for the next person, as adaptive overlap does on any disagreement. Judge rankings still
never count as a ranking: the one person is a person.
"""

from __future__ import annotations

from django.db.models import F

from judges.models import Judge, JudgeRanking
from labeling.models import Item
from labeling.stats.agreement import pairwise_agreement
from labeling.stats.consensus import tiers_from_scores

ROUTE_MIN_DISAGREEMENT = 0.5  # 1 - agreement: the judge orders at least half the pairs differently


def judge_route_disagreements(*, judge: Judge, item_ids: list[int]) -> int:
    """Flag the open items (of `item_ids`) the judge disputes; returns how many."""
    from training.models import CandidateScore
    from training.registry import current_model

    if not judge.routes_disagreements:
        return 0
    reward = current_model(judge.project, "reward")
    rows = list(JudgeRanking.objects.filter(
        judge=judge, judge_version=judge.version, status=JudgeRanking.Status.RANKED, item_id__in=item_ids,
        item__status=Item.Status.OPEN, item__is_gold=False).values_list("item_id", "tiers", "confidence"))
    scores: dict[int, float] = {}
    if reward is not None:
        candidates = [c for _, tiers, _ in rows for tier in tiers for c in tier]
        scores = dict(CandidateScore.objects.filter(model_version=reward, candidate_id__in=candidates)
                      .values_list("candidate_id", "score"))
    flagged = 0
    for item_id, tiers, confidence in rows:
        disagreement = 1.0 - (confidence if confidence is not None else 1.0)
        ids = [c for tier in tiers for c in tier]
        if scores and all(c in scores for c in ids):
            by_model = tiers_from_scores({c: scores[c] for c in ids}, higher_is_better=True)
            disagreement = max(disagreement, 1.0 - pairwise_agreement(tiers, by_model))
        if disagreement >= ROUTE_MIN_DISAGREEMENT:
            flagged += Item.objects.filter(pk=item_id, status=Item.Status.OPEN).update(uncertainty=-disagreement)
    return flagged


def is_trusted(judge: Judge) -> bool:
    return (judge.active and judge.trust_threshold is not None and judge.measured_agreement is not None
            and judge.measured_agreement >= judge.trust_threshold)


def judge_trust_apply(*, judge: Judge) -> int:
    """With adaptive overlap, untouched items a trusted judge has ranked start at one
    required ranking; returns how many items changed."""
    project = judge.project
    if not project.adaptive_overlap or not is_trusted(judge):
        return 0
    judged = JudgeRanking.objects.filter(judge=judge, judge_version=judge.version,
                                         status=JudgeRanking.Status.RANKED).values("item_id")
    return Item.objects.filter(
        project=project, pk__in=judged, status=Item.Status.OPEN, is_gold=False, rankings_count=0,
        active_leases=0, required_rankings=2,
    ).update(required_rankings=F("required_rankings") - 1)


def trusted_judge_agrees(*, item: Item, tiers: list[list[int]]) -> bool:
    """Whether a trusted judge ranked `item` and agrees with this one ranking."""
    rows = JudgeRanking.objects.filter(item=item, status=JudgeRanking.Status.RANKED).select_related("judge")
    for row in rows:
        if row.judge_version == row.judge.version and is_trusted(row.judge) and (
                pairwise_agreement(row.tiers, tiers) >= item.project.agreement_threshold):
            return True
    return False
