"""Consensus and pairs: mid-ranks, pairs_from_ranking, Borda mean-rank consensus, and
the regularised Bradley-Terry fit (checked against a generic optimiser)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from labeling.stats.consensus import (
    InvalidRankingError,
    Outcome,
    borda_consensus,
    bradley_terry,
    mean_ranks,
    outcomes_from_ranking,
    pairs_from_ranking,
    rank_matrix,
    tier_ranks,
    tiers_from_scores,
)

bounded = hypothesis_settings(max_examples=60, deadline=None)


@st.composite
def rankings_of(draw: st.DrawFn, candidates: list[int]) -> list[list[int]]:
    """A random ranking of ``candidates``: a permutation cut into tiers at random."""
    order = draw(st.permutations(candidates))
    cuts = draw(st.lists(st.booleans(), min_size=len(order) - 1, max_size=len(order) - 1))
    tiers = [[order[0]]]
    for candidate, cut in zip(order[1:], cuts, strict=True):
        if cut:
            tiers.append([candidate])
        else:
            tiers[-1].append(candidate)
    return tiers


any_ranking = st.integers(1, 9).flatmap(lambda k: rankings_of(list(range(10, 10 + k))))


# --------------------------------------------------------------------------- mid-ranks


def test_tied_candidates_share_the_mean_of_their_positions() -> None:
    # 7 takes position 1; 3 and 9 take positions 2 and 3 -> (2+3)/2 = 2.5; 4 takes 4.
    assert tier_ranks([[7], [3, 9], [4]]) == {7: 1.0, 3: 2.5, 9: 2.5, 4: 4.0}


@pytest.mark.parametrize("tiers", [[], [[1], []], [[1, 2], [2]]])
def test_malformed_rankings_are_rejected(tiers: list[list[int]]) -> None:
    with pytest.raises(InvalidRankingError):
        tier_ranks(tiers)


def test_rank_matrix_rejects_different_candidate_sets() -> None:
    with pytest.raises(InvalidRankingError, match="different candidates"):
        rank_matrix([[[1], [2]], [[1], [3]]])


@bounded
@given(any_ranking)
def test_mid_ranks_sum_like_positions(tiers: list[list[int]]) -> None:
    k = sum(len(tier) for tier in tiers)

    assert math.isclose(sum(tier_ranks(tiers).values()), k * (k + 1) / 2)


# --------------------------------------------------------------------------- pairs


def test_pairs_from_ranking_skips_pairs_inside_a_tie_and_keeps_the_margin() -> None:
    pairs = pairs_from_ranking([[7], [3, 9], [4]])

    assert pairs == [(7, 3, 1), (7, 9, 1), (7, 4, 2), (3, 4, 1), (9, 4, 1)]


def test_pairs_from_a_full_tie_is_empty() -> None:
    assert pairs_from_ranking([[1, 2, 3]]) == []


@bounded
@given(any_ranking)
def test_pairs_are_all_strict_pairs_with_consistent_direction(tiers: list[list[int]]) -> None:
    k = sum(len(tier) for tier in tiers)
    ranks = tier_ranks(tiers)

    pairs = pairs_from_ranking(tiers)

    assert len(pairs) == k * (k - 1) // 2 - sum(len(t) * (len(t) - 1) // 2 for t in tiers)
    assert len({frozenset(p[:2]) for p in pairs}) == len(pairs)
    assert all(ranks[better] < ranks[worse] and distance >= 1 for better, worse, distance in pairs)


# --------------------------------------------------------------------------- Borda


def test_borda_ties_candidates_with_equal_mean_rank() -> None:
    # means: 1 -> (1+2)/2 = 1.5, 2 -> (2+1)/2 = 1.5, 3 -> 3
    rankings = [[[1], [2], [3]], [[2], [1], [3]]]

    assert mean_ranks(rankings) == {1: 1.5, 2: 1.5, 3: 3.0}
    assert borda_consensus(rankings) == [[1, 2], [3]]


def test_borda_weights_favour_the_reliable_annotator() -> None:
    # 1 -> (3*1 + 1*2)/4 = 1.25, 2 -> (3*2 + 1*1)/4 = 1.75, 3 -> 3
    rankings = [[[1], [2], [3]], [[2], [1], [3]]]

    assert borda_consensus(rankings, weights=[3.0, 1.0]) == [[1], [2], [3]]


def test_borda_with_ties_in_the_input() -> None:
    # a: 1 -> 1, 2 -> 2.5, 3 -> 2.5; b: 1 -> 1.5, 2 -> 1.5, 3 -> 3
    # means: 1 -> 1.25, 2 -> 2, 3 -> 2.75
    assert borda_consensus([[[1], [2, 3]], [[1, 2], [3]]]) == [[1], [2], [3]]


def test_opposite_rankings_give_one_tier() -> None:
    assert borda_consensus([[[1], [2], [3]], [[3], [2], [1]]]) == [[1, 2, 3]]


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0]])
def test_borda_rejects_bad_weights(weights: list[float]) -> None:
    with pytest.raises(InvalidRankingError):
        borda_consensus([[[1], [2]], [[2], [1]]], weights=weights)


@bounded
@given(st.integers(2, 6).flatmap(lambda k: st.lists(rankings_of(list(range(k))), min_size=1, max_size=5)))
def test_borda_of_identical_rankings_is_that_ranking(rankings: list[list[list[int]]]) -> None:
    first = [sorted(tier) for tier in rankings[0]]

    assert borda_consensus([rankings[0]] * len(rankings)) == first


def test_tiers_from_scores_higher_is_better_and_tolerance() -> None:
    scores = {1: 0.5, 2: 2.0, 3: 0.5 + 1e-12, 4: -1.0}

    assert tiers_from_scores(scores, higher_is_better=True) == [[2], [1, 3], [4]]


# --------------------------------------------------------------------------- Bradley-Terry


def test_outcomes_from_ranking_count_ties_as_half() -> None:
    outcomes = outcomes_from_ranking([[1], [2, 3]], annotator=5)

    assert outcomes == [Outcome(1, 2, 1.0, 5), Outcome(1, 3, 1.0, 5), Outcome(2, 3, 0.5, 5)]


def test_bradley_terry_orders_by_wins_and_is_symmetric() -> None:
    outcomes = [o for a in range(4) for o in outcomes_from_ranking([[1], [2], [3], [4]], a)]

    theta = bradley_terry(outcomes, [1, 2, 3, 4])

    assert theta[1] > theta[2] > theta[3] > theta[4]
    assert theta[1] == pytest.approx(-theta[4], abs=1e-9)
    assert sum(theta.values()) == pytest.approx(0.0, abs=1e-9)


def test_bradley_terry_stays_finite_when_one_candidate_never_loses() -> None:
    outcomes = [Outcome(1, 2, 1.0)] * 50

    theta = bradley_terry(outcomes, [1, 2], prior=0.01)

    assert 0 < theta[1] - theta[2] < 20


def test_bradley_terry_uses_partial_sets_and_ties() -> None:
    # One annotator saw {1, 2}, another {2, 3} and tied them, a third {1, 3}.
    outcomes = [Outcome(1, 2, 1.0, 1), Outcome(2, 3, 0.5, 2), Outcome(1, 3, 1.0, 3)]

    theta = bradley_terry(outcomes, [1, 2, 3, 4])

    assert theta[1] > theta[2] == pytest.approx(theta[3], abs=1e-9)
    assert theta[4] > theta[2]  # unseen: stays at the reference, above the losers


def test_bradley_terry_weight_two_equals_counting_twice() -> None:
    once = [Outcome(1, 2, 1.0, 7), Outcome(2, 3, 1.0, 8), Outcome(3, 1, 1.0, 8)]
    twice = once + [Outcome(1, 2, 1.0, 9)]

    weighted = bradley_terry(once, [1, 2, 3], weights={7: 2.0, 8: 1.0})
    duplicated = bradley_terry(twice, [1, 2, 3])

    for candidate in (1, 2, 3):
        assert weighted[candidate] == pytest.approx(duplicated[candidate], abs=1e-9)


def test_bradley_terry_zero_weight_ignores_an_annotator() -> None:
    outcomes = [Outcome(1, 2, 1.0, 1), Outcome(2, 1, 1.0, 2)]

    theta = bradley_terry(outcomes, [1, 2], weights={1: 0.0, 2: 1.0})

    assert theta[2] > theta[1]


@pytest.mark.parametrize(
    ("outcomes", "weights", "prior"),
    [
        ([Outcome(1, 9, 1.0)], None, 1.0),  # unknown candidate
        ([Outcome(1, 1, 1.0)], None, 1.0),  # self-comparison
        ([Outcome(1, 2, 1.5)], None, 1.0),  # score outside [0, 1]
        ([Outcome(1, 2, 1.0, None)], {1: 1.0}, 1.0),  # no weight for the annotator
        ([Outcome(1, 2, 1.0, 1)], {1: -1.0}, 1.0),  # negative weight
        ([Outcome(1, 2, 1.0)], None, 0.0),  # no regularisation
    ],
)
def test_bradley_terry_rejects_bad_input(outcomes: list[Outcome], weights: dict | None, prior: float) -> None:
    with pytest.raises(InvalidRankingError):
        bradley_terry(outcomes, [1, 2], weights, prior=prior)


@bounded
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.0]), st.integers(0, 2)),
        max_size=25,
    ).map(lambda rows: [Outcome(a, b, s, n) for a, b, s, n in rows if a != b]),
    st.floats(0.05, 3.0),
)
def test_bradley_terry_matches_a_generic_optimiser(outcomes: list[Outcome], prior: float) -> None:
    weights = {0: 1.0, 1: 0.5, 2: 2.0}

    theta = bradley_terry(outcomes, [0, 1, 2, 3], weights, prior=prior)

    def negative_log_likelihood(t: np.ndarray) -> float:
        total = 0.0
        for o in outcomes:
            d = t[o.first] - t[o.second]
            total -= weights[o.annotator] * (
                o.score * -np.logaddexp(0, -d) + (1 - o.score) * -np.logaddexp(0, d)
            )
        return total + prior / 2 * float((np.logaddexp(0, -t) + np.logaddexp(0, t)).sum())

    best = minimize(negative_log_likelihood, np.zeros(4), method="BFGS", options={"gtol": 1e-10})
    expected = best.x - best.x.mean()
    assert [theta[c] for c in range(4)] == pytest.approx(expected.tolist(), abs=1e-5)
