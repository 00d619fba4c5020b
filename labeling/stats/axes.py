"""Agreement, consensus and a status per axis of one item (issue #21).

Each axis is judged like a single-axis project is: pairwise agreement of the rankings'
tiers on that axis (a rating axis's tiers are its answers grouped by score) and a
consensus ranking (Borda for a ranking axis; the mean score, highest first, for a rating
axis, whose mean scores are kept too). An axis is accepted when its agreement reaches
the project's threshold; an item is accepted when every *required* axis is.

Pure: no Django imports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from labeling.axes import Axis, label_scores, label_tiers
from labeling.stats.agreement import AgreementUndefinedError, item_pairwise_agreement
from labeling.stats.consensus import borda_consensus, tiers_from_scores

ACCEPTED = "accepted"
DISPUTED = "disputed"


def axis_figures(axes: Sequence[Axis], rankings: Sequence[tuple[Sequence, Mapping | None]],
                 threshold: float) -> dict[str, dict[str, Any]]:
    """{axis key: {"agreement", "consensus", "status", "rankings"[, "scores"]}} for the
    item's live rankings, each given as (tiers, labels). An axis nobody labelled (rankings
    stored before it existed) is left out."""
    primary = axes[0].key
    figures: dict[str, dict[str, Any]] = {}
    for axis in axes:
        tiers = [t for t in (label_tiers(labels, base, axis.key, primary) for base, labels in rankings)
                 if t is not None]
        if not tiers:
            continue
        try:
            agreement = item_pairwise_agreement(tiers)
        except AgreementUndefinedError:
            agreement = 1.0  # one ranking: nobody to disagree with
        entry: dict[str, Any] = {"agreement": agreement, "rankings": len(tiers)}
        if axis.is_rating:
            scores = [s for s in (label_scores(labels, axis.key) for _, labels in rankings) if s]
            candidates = sorted(scores[0])
            means = {c: float(np.mean([s[c] for s in scores])) for c in candidates}
            entry["scores"] = {str(c): round(means[c], 4) for c in candidates}
            entry["consensus"] = tiers_from_scores(means, higher_is_better=True)
        else:
            entry["consensus"] = borda_consensus(tiers)
        entry["status"] = ACCEPTED if agreement >= threshold else DISPUTED
        figures[axis.key] = entry
    return figures


def item_status(axes: Sequence[Axis], figures: Mapping[str, Mapping[str, Any]]) -> str:
    """Accepted when every required axis is; disputed otherwise."""
    required = [axis.key for axis in axes if axis.required]
    accepted = all(figures.get(key, {}).get("status") == ACCEPTED for key in required)
    return ACCEPTED if accepted else DISPUTED


def disputed_axes(axes: Sequence[Axis], figures: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The axes whose rankings disagree, in the project's order (what reviewers see)."""
    return [axis.key for axis in axes if figures.get(axis.key, {}).get("status") == DISPUTED]
