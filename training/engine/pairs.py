"""Rankings -> training pairs: the one function that does it.

A *ranking* is a list of *tiers*, best to worst; a tier is a list of candidate ids, and
a tier with several ids is a tie. ``labeling.stats.consensus`` (agreement, quality) and the
snapshot builders in ``training.engine.datasets`` both call ``pairs_from_ranking`` from
here: the engine may not import the labeling app, so the function lives on this side
and ``labeling.stats.consensus`` re-exports it. Pure Python, no imports beyond the stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence

Tiers = Sequence[Sequence[int]]


class InvalidRankingError(ValueError):
    """Rankings, outcomes or weights that cannot be used: an empty tier, a repeated
    candidate, rankings of different candidate sets, a negative weight."""


def pairs_from_ranking(tiers: Tiers) -> list[tuple[int, int, int]]:
    """Every ordered pair a ranking implies, as ``(better, worse, tier_distance)``.

    ``tier_distance`` is how many tiers apart the two candidates are (1 for adjacent
    tiers): the margin a reward model or a DPO dataset may use. With K candidates and no
    ties this is all C(K,2) pairs; two candidates in the same tier were judged equally
    good and produce no pair. Pairs come best-first, in tier order, then id order
    within each tier as written."""
    check_tiers(tiers)
    pairs = []
    for upper, better_tier in enumerate(tiers):
        for lower in range(upper + 1, len(tiers)):
            for better in better_tier:
                pairs.extend((better, worse, lower - upper) for worse in tiers[lower])
    return pairs


def check_tiers(tiers: Tiers) -> None:
    """Raise InvalidRankingError for an empty ranking, an empty tier or a repeated id
    (the same rules, and messages, as ``labeling.stats.consensus.tier_ranks``)."""
    if not tiers:
        raise InvalidRankingError("a ranking needs at least one tier")
    seen: set[int] = set()
    for tier in tiers:
        if not tier:
            raise InvalidRankingError("a ranking cannot contain an empty tier")
        for candidate in tier:
            if candidate in seen:
                raise InvalidRankingError(f"candidate {candidate} appears twice in one ranking")
            seen.add(candidate)


# Label axes (labeling/axes.py re-exports these: the engine imports no app).
DEFAULT_KEY = "overall"  # the one implicit axis of a project that defines none
SAFETY_BINS = ("both_safe", "only_a_safe", "only_b_safe", "neither_safe")


def safety_bin(safe_first: bool, safe_second: bool) -> str:
    """Llama 2's safety bin of a pair of answers (first, second)."""
    if safe_first and safe_second:
        return "both_safe"
    if safe_first:
        return "only_a_safe"
    return "only_b_safe" if safe_second else "neither_safe"
