"""The ids annotators see for candidates: opaque and per assignment.

Candidate ids are global and sequential, so in an item mixing model answers with a
person's rewrite the newest (highest) id gave the rewrite away, and the same answer
could be recognised across items. Annotators get HMAC(SECRET_KEY, "cand:<assignment>:
<candidate>") cut to 16 hex characters instead, computed from the assignment's recorded
display order (no query) and mapped back when they submit. Reviewers and admins keep the
real ids in the console.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.conf import settings

from labeling.models import Assignment


def shown_id(assignment_id: int, candidate_id: int) -> str:
    message = f"cand:{assignment_id}:{candidate_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:16]


def shown_ids(assignment: Assignment) -> dict[str, int]:
    """The annotator's id -> the candidate id, for the candidates this assignment shows."""
    return {shown_id(assignment.pk, cid): cid for cid in assignment.display_order}


def tiers_as_shown(assignment: Assignment, tiers: list[list[int]]) -> list[list[str]]:
    """A ranking in candidate ids, written in the ids this assignment's annotator sees."""
    return [[shown_id(assignment.pk, cid) for cid in tier] for tier in tiers]


def labels_as_shown(assignment: Assignment, labels: dict[str, Any]) -> dict[str, dict]:
    """A ranking's labels on every axis (Ranking.labels) in this assignment's ids: a rating
    axis as its scores, a ranking axis as its tiers (what a submission sends back)."""
    def shown(entry: dict) -> dict:
        if "scores" in entry:
            return {"scores": {shown_id(assignment.pk, int(c)): v for c, v in entry["scores"].items()}}
        return {"tiers": tiers_as_shown(assignment, entry["tiers"])}

    return {key: shown(entry) for key, entry in (labels or {}).items()}


def safety_as_shown(assignment: Assignment, safety: dict[str, bool] | None) -> dict[str, bool] | None:
    """Ranking.safety ({candidate id: safe?}) in this assignment's ids."""
    if safety is None:
        return None
    return {shown_id(assignment.pk, int(c)): safe for c, safe in safety.items()}
