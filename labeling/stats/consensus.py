"""Consensus from several annotators' rankings of one item, and the pairs a ranking implies.

Pure numpy: no Django imports, so the snapshot builder, the training engine and the
agreement job can all import it (and its tests need no database).

Conventions used throughout (and by ``labeling.stats.agreement``):

- A *ranking* is a list of *tiers*, best to worst; a tier is a list of candidate ids.
  A tier with several ids is a tie: the annotator judged them equally good.
- A candidate's *mid-rank* is the mean of the 1-based positions its tier occupies: in
  ``[[7], [3, 9], [4]]`` candidate 7 has rank 1, candidates 3 and 9 share positions 2
  and 3 and both get 2.5, candidate 4 has rank 4. Every statistic uses mid-ranks, so a
  tie is treated the same way everywhere.

``pairs_from_ranking`` is the one function that turns a ranking into training pairs; it
lives in ``training.engine.pairs`` (the engine never imports Django apps) and is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import NamedTuple

import numpy as np

# Defined in the engine (which may not import this app) and re-exported here, so there
# is one function that builds pairs and one error type for a malformed ranking.
from training.engine.pairs import InvalidRankingError, pairs_from_ranking

Tiers = Sequence[Sequence[int]]

# Mean ranks closer than this are one consensus tier: they differ only by float noise.
RANK_TOLERANCE = 1e-9


def tier_ranks(tiers: Tiers) -> dict[int, float]:
    """Mid-rank of every candidate in one ranking (see the module docstring).

    Raises InvalidRankingError for an empty ranking, an empty tier or a repeated id."""
    if not tiers:
        raise InvalidRankingError("a ranking needs at least one tier")
    ranks: dict[int, float] = {}
    position = 0
    for tier in tiers:
        if not tier:
            raise InvalidRankingError("a ranking cannot contain an empty tier")
        mid = position + (len(tier) + 1) / 2
        for candidate in tier:
            if candidate in ranks:
                raise InvalidRankingError(f"candidate {candidate} appears twice in one ranking")
            ranks[candidate] = mid
        position += len(tier)
    return ranks


def rank_matrix(rankings: Sequence[Tiers]) -> tuple[list[int], np.ndarray]:
    """The candidates (sorted ids) and an (annotators x candidates) array of mid-ranks.

    All rankings must rank the same candidates: agreement is only defined between
    judgements of the same set."""
    if not rankings:
        raise InvalidRankingError("no rankings given")
    per_ranking = [tier_ranks(tiers) for tiers in rankings]
    candidates = sorted(per_ranking[0])
    for ranks in per_ranking[1:]:
        if sorted(ranks) != candidates:
            raise InvalidRankingError(f"rankings rank different candidates: {candidates} vs {sorted(ranks)}")
    matrix = np.array([[ranks[c] for c in candidates] for ranks in per_ranking], dtype=float)
    return candidates, matrix


def mean_ranks(rankings: Sequence[Tiers], weights: Sequence[float] | None = None) -> dict[int, float]:
    """Weighted mean of each candidate's mid-rank over the rankings (lower is better).

    ``weights`` (one per ranking, non-negative, not all zero) lets a reliable annotator
    count more; the default weighs every ranking equally."""
    candidates, matrix = rank_matrix(rankings)
    w = _ranking_weights(weights, len(rankings))
    means = w @ matrix / w.sum()
    return dict(zip(candidates, means.tolist(), strict=True))


def borda_consensus(rankings: Sequence[Tiers], weights: Sequence[float] | None = None) -> list[list[int]]:
    """Consensus ranking of one item: candidates sorted by weighted mean rank.

    Mean rank is Borda's count up to a constant. Candidates whose mean ranks are equal
    (within 1e-9 of the first candidate of their tier) form one tier, so two opposite
    rankings give a full tie rather than an arbitrary order. Ids in a tier are sorted."""
    return tiers_from_scores(mean_ranks(rankings, weights))


def tiers_from_scores(
    scores: Mapping[int, float], *, higher_is_better: bool = False, tolerance: float = RANK_TOLERANCE
) -> list[list[int]]:
    """Group candidates into tiers, best first, by a score per candidate.

    Lower scores are better by default (ranks); pass ``higher_is_better=True`` for
    strengths such as ``bradley_terry``'s. A candidate joins the current tier when its
    score is within ``tolerance`` of that tier's first score."""
    if not scores:
        raise InvalidRankingError("no candidates to rank")
    sign = -1.0 if higher_is_better else 1.0
    ordered = sorted(scores, key=lambda c: (sign * scores[c], c))
    tiers: list[list[int]] = [[ordered[0]]]
    for candidate in ordered[1:]:
        if abs(scores[candidate] - scores[tiers[-1][0]]) <= tolerance:
            tiers[-1].append(candidate)
        else:
            tiers.append([candidate])
    return [sorted(tier) for tier in tiers]


class Outcome(NamedTuple):
    """One judged comparison: ``score`` is first's share of the win (1 = first better,
    0 = second better, 0.5 = tie). ``annotator`` keys the reliability weights."""

    first: int
    second: int
    score: float
    annotator: int | None = None


def outcomes_from_ranking(tiers: Tiers, annotator: int | None = None) -> list[Outcome]:
    """All comparisons one ranking states, for ``bradley_terry``: the strict pairs of
    ``pairs_from_ranking`` as wins, plus a half win each way for every pair in a tie."""
    outcomes = [Outcome(better, worse, 1.0, annotator) for better, worse, _ in pairs_from_ranking(tiers)]
    for tier in tiers:
        outcomes.extend(Outcome(a, b, 0.5, annotator) for a, b in combinations(tier, 2))
    return outcomes


def bradley_terry(
    outcomes: Sequence[Outcome],
    candidates: Sequence[int],
    weights: Mapping[int, float] | None = None,
    *,
    prior: float = 1.0,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> dict[int, float]:
    """Bradley-Terry strengths of an item's candidates from all its pairwise outcomes.

    Model: P(i beats j) = 1 / (1 + exp(theta_j - theta_i)). Returned thetas are natural
    log-strengths centred to mean zero (only differences matter). It uses every
    comparison, so it ranks items whose annotators each saw only part of the set.

    Ties count as half a win for each side. ``weights`` maps an annotator id to a
    reliability weight multiplying each of that annotator's outcomes (every outcome must
    then carry an annotator in it). Regularisation: each candidate also plays ``prior``
    virtual games against a fixed reference of strength theta = 0, winning half; this
    keeps an undefeated candidate's strength finite and the maximum unique even when the
    comparison graph is disconnected. The penalised log-likelihood is then strictly
    concave, and Newton's method with a backtracking line search converges to its
    maximum (quadratically near it; a handful of K x K solves). ``tol`` bounds the last
    step on any theta; ArithmeticError if ``max_iter`` steps do not get there."""
    index = {c: i for i, c in enumerate(candidates)}
    if len(index) != len(candidates) or not candidates:
        raise InvalidRankingError("candidates must be distinct and non-empty")
    if not prior > 0:
        raise InvalidRankingError("prior must be positive: without it the fit may diverge")
    beats = _bt_win_matrix(outcomes, index, weights)
    theta = np.zeros(len(index))
    for _ in range(max_iter):
        step = _bt_newton_step(theta, beats, prior)
        theta = _bt_line_search(theta, step, beats, prior)
        if np.abs(step).max() < tol:
            return dict(zip(candidates, (theta - theta.mean()).tolist(), strict=True))
    raise ArithmeticError(f"Bradley-Terry did not converge in {max_iter} Newton steps")


def _bt_log_likelihood(theta: np.ndarray, beats: np.ndarray, prior: float) -> float:
    """Penalised log-likelihood: sum_ij beats_ij log sigma(theta_i - theta_j) plus the
    prior's half-won games against theta = 0."""
    log_sigmoid = -np.logaddexp(0.0, theta[None, :] - theta[:, None])
    reference = -np.logaddexp(0.0, -theta) - np.logaddexp(0.0, theta)
    return float((beats * log_sigmoid).sum() + prior / 2 * reference.sum())


def _bt_newton_step(theta: np.ndarray, beats: np.ndarray, prior: float) -> np.ndarray:
    games = beats + beats.T
    p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # p_ij = P(i beats j)
    q = 1.0 / (1.0 + np.exp(-theta))  # P(i beats the reference)
    gradient = (beats - games * p).sum(axis=1) + prior * (0.5 - q)
    curvature = games * p * p.T
    # -Hessian: a weighted graph Laplacian plus the prior's diagonal, positive definite.
    information = np.diag(curvature.sum(axis=1) + prior * q * (1.0 - q)) - curvature
    return np.linalg.solve(information, gradient)


def _bt_line_search(theta: np.ndarray, step: np.ndarray, beats: np.ndarray, prior: float) -> np.ndarray:
    """Halve the Newton step until the likelihood rises enough (Armijo): far from the
    maximum a full step can overshoot on the flat tails of the sigmoid."""
    current = _bt_log_likelihood(theta, beats, prior)
    scale = 1.0
    for _ in range(60):
        candidate = theta + scale * step
        if _bt_log_likelihood(candidate, beats, prior) >= current - 1e-12 * abs(current):
            return candidate
        scale /= 2
    return theta


def _bt_win_matrix(
    outcomes: Sequence[Outcome], index: Mapping[int, int], weights: Mapping[int, float] | None
) -> np.ndarray:
    """beats[i, j]: weighted wins of i over j, a tie giving each side half."""
    beats = np.zeros((len(index), len(index)))
    for outcome in outcomes:
        if outcome.first not in index or outcome.second not in index:
            raise InvalidRankingError(f"outcome {outcome} names a candidate not in the item")
        if outcome.first == outcome.second or not 0.0 <= outcome.score <= 1.0:
            raise InvalidRankingError(f"outcome {outcome} is not a comparison of two candidates")
        weight = 1.0 if weights is None else _annotator_weight(weights, outcome.annotator)
        i, j = index[outcome.first], index[outcome.second]
        beats[i, j] += weight * outcome.score
        beats[j, i] += weight * (1.0 - outcome.score)
    return beats


def _annotator_weight(weights: Mapping[int, float], annotator: int | None) -> float:
    if annotator not in weights:
        raise InvalidRankingError(f"no reliability weight for annotator {annotator}")
    weight = float(weights[annotator])  # type: ignore[index]
    if not weight >= 0.0:  # also rejects NaN
        raise InvalidRankingError(f"weight of annotator {annotator} must be >= 0, got {weight}")
    return weight


def _ranking_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    if weights is None:
        return np.ones(count)
    w = np.asarray(weights, dtype=float)
    if w.shape != (count,):
        raise InvalidRankingError(f"expected {count} weights, one per ranking, got {w.shape}")
    if not (np.all(w >= 0) and w.sum() > 0):  # NaN fails both comparisons
        raise InvalidRankingError("weights must be non-negative and not all zero")
    return w
