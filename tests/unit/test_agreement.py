"""Agreement statistics: hand-worked cases with ties and missing values, edge cases, and
matches to 1e-9 against the reference implementations (krippendorff, scipy's
kendalltau and friedmanchisquare, statsmodels' fleiss_kappa) on random data."""

from __future__ import annotations

import math
import warnings
from itertools import combinations

import krippendorff
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import friedmanchisquare, kendalltau
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from labeling.stats.agreement import (
    AgreementUndefinedError,
    fleiss_kappa,
    item_pairwise_agreement,
    kendall_tau_b,
    kendalls_w,
    krippendorff_alpha,
    leave_one_out_agreement,
    length_bias,
    pairwise_agreement,
    pairwise_outcome,
    pairwise_outcome_table,
    position_bias,
    tie_rate,
)
from labeling.stats.batch import (
    alpha_reliability_data,
    batch_kendalls_w,
    batch_leave_one_out_agreement,
    batch_pairwise_agreement,
    mean_by_annotator,
    project_agreement,
    project_pairwise_agreement,
    rank_array,
    rank_value_domain,
)
from labeling.stats.bootstrap import bootstrap_ci
from labeling.stats.consensus import InvalidRankingError, rank_matrix, tier_ranks

bounded = hypothesis_settings(max_examples=80, deadline=None)


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


def item_rankings(k: st.SearchStrategy[int], m: st.SearchStrategy[int]) -> st.SearchStrategy:
    """An item: m rankings of the same K candidates (ids 100, 101, ...)."""
    return st.tuples(k, m).flatmap(
        lambda km: st.lists(rankings_of(list(range(100, 100 + km[0]))), min_size=km[1], max_size=km[1])
    )


def mid_ranks(tiers: list[list[int]]) -> list[float]:
    ranks = tier_ranks(tiers)
    return [ranks[c] for c in sorted(ranks)]


# --------------------------------------------------------------------------- pairwise agreement


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # (1,2) same, (1,3) same, (2,3) opposite: (1 + 1 + 0) / 3
        ([[1], [2], [3]], [[1], [3], [2]], 2 / 3),
        # (1,2) tied on one side only: 1/2; (1,3), (2,3) same: (0.5 + 1 + 1) / 3
        ([[1], [2], [3]], [[1, 2], [3]], 2.5 / 3),
        # the same tie on both sides counts as agreement: 3 / 3
        ([[1, 2], [3]], [[2, 1], [3]], 1.0),
        # K = 2, a full tie against a strict order: 1/2
        ([[1, 2]], [[2], [1]], 0.5),
        # fully reversed: 0 / 6
        ([[1], [2], [3], [4]], [[4], [3], [2], [1]], 0.0),
    ],
)
def test_pairwise_agreement_hand_cases(a: list, b: list, expected: float) -> None:
    assert pairwise_agreement(a, b) == pytest.approx(expected, abs=1e-12)


def test_pairwise_agreement_needs_two_candidates_and_the_same_set() -> None:
    with pytest.raises(AgreementUndefinedError):
        pairwise_agreement([[1]], [[1]])
    with pytest.raises(InvalidRankingError):
        pairwise_agreement([[1], [2]], [[1], [3]])


@bounded
@given(item_rankings(st.integers(2, 8), st.just(2)))
def test_pairwise_agreement_is_symmetric_bounded_and_one_with_itself(item: list) -> None:
    a, b = item

    assert pairwise_agreement(a, b) == pairwise_agreement(b, a)
    assert 0.0 <= pairwise_agreement(a, b) <= 1.0
    assert pairwise_agreement(a, a) == 1.0


def test_item_agreement_is_the_mean_over_annotator_pairs() -> None:
    # pairs: (a,b) 2/3, (a,c) 1, (b,c) 2/3 -> mean 7/9
    a, b, c = [[1], [2], [3]], [[1], [3], [2]], [[1], [2], [3]]

    assert item_pairwise_agreement([a, b, c]) == pytest.approx(7 / 9, abs=1e-12)


@pytest.mark.parametrize("rankings", [[], [[[1], [2]]]])
def test_item_agreement_needs_two_rankings(rankings: list) -> None:
    with pytest.raises(AgreementUndefinedError):
        item_pairwise_agreement(rankings)


def test_project_agreement_averages_items_with_two_rankings() -> None:
    items = [
        [[[1], [2], [3]], [[1], [3], [2]]],  # 2/3
        [[[5], [6]], [[5], [6]], [[5], [6]]],  # 1
        [[[7], [8]]],  # one ranking: skipped
    ]

    assert project_pairwise_agreement(items) == pytest.approx((2 / 3 + 1) / 2, abs=1e-12)
    with pytest.raises(AgreementUndefinedError):
        project_pairwise_agreement([items[2]])


# --------------------------------------------------------------------------- Kendall's tau-b


def test_tau_b_hand_case_with_a_tie() -> None:
    # a = 1,2,3; b = 1,2.5,2.5. Pairs: (1,2) concordant, (1,3) concordant, (2,3) tied in b.
    # tau_b = (2 - 0) / sqrt((3 - 0) * (3 - 1)) = 2 / sqrt(6)
    assert kendall_tau_b([[1], [2], [3]], [[1], [2, 3]]) == pytest.approx(2 / math.sqrt(6), abs=1e-12)


def test_tau_b_raises_instead_of_nan_when_one_side_is_all_ties() -> None:
    with pytest.raises(AgreementUndefinedError, match="ties every candidate"):
        kendall_tau_b([[1], [2], [3]], [[1, 2, 3]])


@bounded
@given(item_rankings(st.integers(2, 9), st.just(2)))
def test_tau_b_matches_scipy(item: list) -> None:
    a, b = item
    x, y = mid_ranks(a), mid_ranks(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = kendalltau(x, y).statistic  # variant "b" is scipy's default

    if math.isnan(expected):
        with pytest.raises(AgreementUndefinedError):
            kendall_tau_b(a, b)
    else:
        assert kendall_tau_b(a, b) == pytest.approx(expected, abs=1e-9)


# --------------------------------------------------------------------------- Kendall's W


def test_kendalls_w_hand_case_with_ties() -> None:
    # a: 1, 2, 3; b: 1, 2.5, 2.5. R = 2, 4.5, 5.5; mean R = 4; S = 4 + 0.25 + 2.25 = 6.5.
    # T_a = 0, T_b = 2^3 - 2 = 6. W = 12 * 6.5 / (2^2 * (27 - 3) - 2 * 6) = 78 / 84
    assert kendalls_w([[[1], [2], [3]], [[1], [2, 3]]]) == pytest.approx(78 / 84, abs=1e-12)


def test_kendalls_w_with_k_two() -> None:
    # Opposite: R = 3, 3 -> S = 0 -> W = 0. Same: R = 2, 4 -> S = 2, W = 24 / (4 * 6) = 1.
    assert kendalls_w([[[1], [2]], [[2], [1]]]) == 0.0
    assert kendalls_w([[[1], [2]], [[1], [2]]]) == 1.0


@pytest.mark.parametrize(
    "rankings",
    [[[[1], [2]]], [[[1, 2, 3]], [[1, 2, 3]]], [[[1]], [[1]]]],
    ids=["one ranking", "all tied", "one candidate"],
)
def test_kendalls_w_undefined_cases_raise(rankings: list) -> None:
    with pytest.raises(AgreementUndefinedError):
        kendalls_w(rankings)


@bounded
@given(item_rankings(st.integers(3, 7), st.integers(2, 6)))
def test_kendalls_w_matches_scipy_friedman(item: list) -> None:
    # Friedman's tie-corrected statistic = m (K - 1) W; scipy wants one sequence per candidate.
    assume(any(len(tiers) > 1 for tiers in item))
    _, ranks = rank_matrix(item)
    m, k = ranks.shape

    expected = friedmanchisquare(*ranks.T).statistic / (m * (k - 1))

    assert kendalls_w(item) == pytest.approx(expected, abs=1e-9)


# --------------------------------------------------------------------------- leave-one-out, batch


def test_leave_one_out_hand_case() -> None:
    # Consensus of b, c for a: b, c agree on 1 > 2 > 3, a = 1 > 3 > 2 -> 2/3.
    # For b: consensus of a, c: 1 first; 2 and 3 have mean ranks 2.5 and 2.5 -> tie.
    #   b = 1 > 2 > 3 vs 1 > {2, 3}: (1,2) 1, (1,3) 1, (2,3) one-sided tie 1/2 -> 2.5/3.
    a, b, c = [[1], [3], [2]], [[1], [2], [3]], [[1], [2], [3]]

    assert leave_one_out_agreement([a, b, c]) == pytest.approx([2 / 3, 2.5 / 3, 2.5 / 3], abs=1e-12)


def test_leave_one_out_needs_two_rankings() -> None:
    with pytest.raises(AgreementUndefinedError):
        leave_one_out_agreement([[[1], [2]]])


@st.composite
def rank_arrays(draw: st.DrawFn) -> tuple[list, np.ndarray]:
    """Items with K candidates and 1-4 rankings each, and their NaN-padded rank array."""
    k = draw(st.integers(2, 5))
    items = draw(st.lists(item_rankings(st.just(k), st.integers(1, 4)), min_size=1, max_size=6))
    return items, rank_array(items)


@bounded
@given(rank_arrays())
def test_batch_functions_match_the_item_functions(data: tuple[list, np.ndarray]) -> None:
    items, ranks = data

    agreement = batch_pairwise_agreement(ranks)
    w = batch_kendalls_w(ranks)
    loo = batch_leave_one_out_agreement(ranks)

    for index, rankings in enumerate(items):
        if len(rankings) < 2:
            assert math.isnan(agreement[index]) and math.isnan(w[index]) and np.isnan(loo[index]).all()
            continue
        assert agreement[index] == pytest.approx(item_pairwise_agreement(rankings), abs=1e-12)
        assert loo[index, : len(rankings)].tolist() == pytest.approx(
            leave_one_out_agreement(rankings), abs=1e-12
        )
        assert np.isnan(loo[index, len(rankings) :]).all()
        try:
            assert w[index] == pytest.approx(kendalls_w(rankings), abs=1e-12)
        except AgreementUndefinedError:
            assert math.isnan(w[index])


def test_rank_array_pads_missing_slots_and_checks_k() -> None:
    ranks = rank_array([[[[2], [1]], [[1, 2]]], [[[3], [4]]]])

    # candidates in id order: item 0 is (1, 2), item 1 is (3, 4)
    assert ranks[0].tolist() == [[2.0, 1.0], [1.5, 1.5]]
    assert ranks[1, 0].tolist() == [1.0, 2.0] and np.isnan(ranks[1, 1]).all()
    with pytest.raises(InvalidRankingError, match="group them by K"):
        rank_array([[[[1], [2]]], [[[1], [2], [3]]]])


def test_batch_rejects_a_partly_missing_ranking() -> None:
    with pytest.raises(InvalidRankingError):
        batch_pairwise_agreement(np.array([[[1.0, np.nan], [1.0, 2.0]]]))


def test_mean_by_annotator_skips_undefined_values() -> None:
    values = np.array([[0.5, 1.0], [np.nan, 0.0]])
    annotators = np.array([[7, 8], [8, 7]])

    assert mean_by_annotator(values, annotators) == {7: (0.25, 2), 8: (1.0, 1)}


# --------------------------------------------------------------------------- Krippendorff's alpha


def test_alpha_hand_case_nominal_with_a_missing_value() -> None:
    # Units (a1, a2): (1,1), (1,2), (2,2), (2, missing) -> the last is unpairable.
    # Paired values: n_1 = 3, n_2 = 3, n = 6. Each unit has m_u = 2, weight 1/(m_u - 1) = 1.
    # Observed: only unit 2 disagrees, in both orders: sum = 2.
    # Expected: n^2 - sum n_c^2 = 36 - 18 = 18. alpha = 1 - (n - 1) * 2 / 18 = 1 - 10/18 = 4/9.
    data = [[1, 1, 2, 2], [1, 2, 2, np.nan]]

    assert krippendorff_alpha(data, "nominal") == pytest.approx(4 / 9, abs=1e-12)
    # Ordinal with two values: a_1 = 3 - 1.5 = 1.5, a_2 = 6 - 1.5 = 4.5, d = 9 for every
    # disagreement: 1 - 5 * (2 * 9) / (2 * 3 * 3 * 9) = 1 - 90/162 = 4/9 again.
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(4 / 9, abs=1e-12)


def test_alpha_published_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", p. 8: ordinal 0.815.
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
        [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
    ]

    assert round(krippendorff_alpha(data, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(data, "ordinal", value_domain=[1, 2, 3, 4, 5]), 3) == 0.815


def test_alpha_of_identical_rankings_is_one() -> None:
    ranks = rank_array([[[[1], [2, 3]], [[1], [2, 3]]], [[[6], [4], [5]], [[6], [4], [5]]]])

    assert krippendorff_alpha(alpha_reliability_data(ranks), "ordinal", rank_value_domain(3)) == 1.0


@pytest.mark.parametrize(
    ("data", "domain", "error"),
    [
        ([[1, 2, 3]], None, AgreementUndefinedError),  # one annotator: no pairable unit
        ([[1, 1], [1, 1]], [1, 2], AgreementUndefinedError),  # no variation (package: NaN)
        ([[1, 1], [1, 1]], None, AgreementUndefinedError),  # one possible value
        ([[1, 2], [1, 3]], [1, 2], InvalidRankingError),  # outside the domain
        ([[np.nan, np.nan]], None, AgreementUndefinedError),  # empty
        ([1, 2], None, InvalidRankingError),  # not 2-D
    ],
)
def test_alpha_undefined_and_invalid_input_raise(data: list, domain: list | None, error: type) -> None:
    with pytest.raises(error):
        krippendorff_alpha(data, "ordinal", domain)


def test_alpha_rejects_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([[1, 2], [1, 2]], "ratio")  # type: ignore[arg-type]


reliability_data = st.tuples(st.integers(1, 5), st.integers(1, 25)).flatmap(
    lambda shape: arrays(
        np.float64,
        shape,
        elements=st.one_of(st.sampled_from([1.0, 1.5, 2.0, 3.0, 4.0, 7.25]), st.just(np.nan)),
    )
)


@bounded
@given(reliability_data, st.sampled_from(["nominal", "ordinal", "interval"]), st.booleans())
def test_alpha_matches_the_krippendorff_package(data: np.ndarray, level: str, with_domain: bool) -> None:
    domain = [1.0, 1.5, 2.0, 3.0, 4.0, 7.25, 9.0] if with_domain else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the package divides 0 by 0 on no variation
            expected = krippendorff.alpha(
                reliability_data=data, level_of_measurement=level, value_domain=domain
            )
    except ValueError:
        expected = None

    if expected is None or math.isnan(expected):
        with pytest.raises(ValueError):
            krippendorff_alpha(data, level, domain)  # type: ignore[arg-type]
    else:
        assert krippendorff_alpha(data, level, domain) == pytest.approx(expected, abs=1e-9)  # type: ignore[arg-type]


@bounded
@given(rank_arrays())
def test_alpha_on_rank_arrays_matches_the_package(data: tuple[list, np.ndarray]) -> None:
    _, ranks = data
    reliability = alpha_reliability_data(ranks)
    domain = rank_value_domain(ranks.shape[2])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = krippendorff.alpha(
                reliability_data=reliability, level_of_measurement="ordinal", value_domain=domain
            )
    except ValueError:
        expected = float("nan")

    if math.isnan(expected):
        with pytest.raises(AgreementUndefinedError):
            krippendorff_alpha(reliability, "ordinal", domain)
    else:
        assert krippendorff_alpha(reliability, "ordinal", domain) == pytest.approx(expected, abs=1e-9)


def test_alpha_unit_layout_is_item_major() -> None:
    ranks = rank_array([[[[1], [2]], [[2], [1]]], [[[3, 4]]]])

    # unit i*K + c: item 0 cand 1, item 0 cand 2, item 1 cand 3, item 1 cand 4
    assert alpha_reliability_data(ranks)[0].tolist() == [1.0, 2.0, 1.5, 1.5]


# --------------------------------------------------------------------------- Fleiss' kappa


def test_fleiss_kappa_hand_case() -> None:
    # 3 items x 3 raters over (a, b, tie): rows [3,0,0], [0,3,0], [1,1,1].
    # P_i = (sum n_ic^2 - 3) / 6: 1, 1, 0 -> P_bar = 2/3. p = (4/9, 4/9, 1/9);
    # P_e = 16/81 + 16/81 + 1/81 = 33/81. kappa = (2/3 - 33/81) / (1 - 33/81) = 21/48.
    table = pairwise_outcome_table([["a", "a", "a"], ["b", "b", "b"], ["a", "b", "both_bad"]])

    assert table.tolist() == [[3, 0, 0], [0, 3, 0], [1, 1, 1]]
    assert fleiss_kappa(table) == pytest.approx(21 / 48, abs=1e-12)


def test_both_bad_counts_as_a_tie_and_unknown_labels_fail() -> None:
    assert pairwise_outcome_table([["tie", "both_bad"]]).tolist() == [[0, 0, 2]]
    with pytest.raises(InvalidRankingError):
        pairwise_outcome_table([["a", "maybe"]])


@pytest.mark.parametrize(
    ("tiers", "all_bad", "label"),
    [
        ([[1], [2]], False, "a"),
        ([[2], [1]], True, "b"),
        ([[1, 2]], False, "tie"),
        ([[1, 2]], True, "both_bad"),
    ],
)
def test_pairwise_outcome_labels(tiers: list, all_bad: bool, label: str) -> None:
    assert pairwise_outcome(tiers, 1, all_bad=all_bad) == label


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ([[2, 0, 0], [2, 0, 0]], AgreementUndefinedError),  # one category: statsmodels gives NaN
        ([[1, 0, 0], [0, 1, 0]], AgreementUndefinedError),  # one rater
        ([[2, 0, 0], [1, 0, 0]], InvalidRankingError),  # unequal raters
        ([], InvalidRankingError),
    ],
)
def test_fleiss_kappa_edge_cases_raise(table: list, error: type) -> None:
    with pytest.raises(error):
        fleiss_kappa(table)


@st.composite
def fleiss_tables(draw: st.DrawFn) -> np.ndarray:
    raters = draw(st.integers(2, 6))
    rows = draw(
        st.lists(st.lists(st.integers(0, 2), min_size=raters, max_size=raters), min_size=1, max_size=30)
    )
    return pairwise_outcome_table([[("a", "b", "tie")[c] for c in row] for row in rows])


@bounded
@given(fleiss_tables())
def test_fleiss_kappa_matches_statsmodels(table: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = statsmodels_fleiss_kappa(table, method="fleiss")

    if math.isnan(expected):
        with pytest.raises(AgreementUndefinedError):
            fleiss_kappa(table)
    else:
        assert fleiss_kappa(table) == pytest.approx(expected, abs=1e-9)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean() -> None:
    values = np.random.default_rng(3).integers(0, 7, 500) / 6

    low, high = bootstrap_ci(values, n_resamples=500, seed=1)

    assert (low, high) == bootstrap_ci(values, n_resamples=500, seed=1)
    assert low < values.mean() < high


def test_bootstrap_paths_give_the_same_interval() -> None:
    # Few distinct values take the multinomial path; jittered values (all distinct) take
    # the index path. Both should approximate mean +- 1.96 sd / sqrt(n).
    values = np.random.default_rng(4).integers(0, 3, 2000) / 2.0
    jittered = values + np.random.default_rng(5).normal(0, 1e-9, len(values))
    half_width = 1.96 * values.std() / math.sqrt(len(values))

    for data in (values, jittered):
        low, high = bootstrap_ci(data, n_resamples=2000)
        assert low == pytest.approx(values.mean() - half_width, abs=0.1 * half_width)
        assert high == pytest.approx(values.mean() + half_width, abs=0.1 * half_width)


def test_bootstrap_with_a_statistic_over_items() -> None:
    items = [[[[1], [2]], [[1], [2]]], [[[1], [2]], [[2], [1]]]] * 10

    low, high = bootstrap_ci(items, project_pairwise_agreement, n_resamples=200)

    assert 0.0 <= low <= 0.75 <= high <= 1.0


def test_bootstrap_of_one_value_is_that_value() -> None:
    assert bootstrap_ci([0.7], n_resamples=50) == (0.7, 0.7)


@pytest.mark.parametrize(
    ("data", "error"), [([], AgreementUndefinedError), ([0.5, np.nan], InvalidRankingError)]
)
def test_bootstrap_rejects_empty_or_undefined_values(data: list, error: type) -> None:
    with pytest.raises(error):
        bootstrap_ci(data)


# --------------------------------------------------------------------------- per annotator


def test_position_bias_hand_case() -> None:
    rankings = [[[1], [2], [3], [4]], [[2, 1], [3], [4]], [[4], [1], [2], [3]]]
    shown = [[1, 2, 3, 4], [1, 3, 2, 4], [1, 2, 3, 4]]

    bias = position_bias(rankings, shown)

    # credits: first shown is best (1), first shown tied for best with one other (1/2),
    # first shown not best (0): rate = 1.5 / 3 = 0.5 against 1/K = 0.25.
    assert (bias.rate, bias.expected, bias.rankings) == (0.5, 0.25, 3)
    assert bias.excess == 0.25


def test_position_bias_needs_a_matching_display_order() -> None:
    with pytest.raises(InvalidRankingError):
        position_bias([[[1], [2]]], [[1, 3]])
    with pytest.raises(AgreementUndefinedError):
        position_bias([], [])


def test_tie_rate_pools_pairs_over_rankings() -> None:
    # one tied pair of 3 (K=3) + none of 6 (K=4): 1 / 9
    assert tie_rate([[[1, 2], [3]], [[1], [2], [3], [4]]]) == pytest.approx(1 / 9, abs=1e-12)
    with pytest.raises(AgreementUndefinedError):
        tie_rate([[[1]]])


# --------------------------------------------------------------------------- project recompute


def test_project_agreement_combines_the_batch_statistics() -> None:
    items = [
        [[[1], [2], [3]], [[1], [3], [2]], [[1], [2, 3]]],
        [[[4], [5], [6]], [[4], [5], [6]]],
        [[[7], [8], [9]]],
    ]
    ranks = rank_array(items)

    result = project_agreement(ranks, n_resamples=100)

    assert result.items == 2
    expected = np.mean([item_pairwise_agreement(items[0]), item_pairwise_agreement(items[1])])
    assert result.pairwise_agreement == pytest.approx(expected, abs=1e-12)
    assert result.kendalls_w == pytest.approx(
        np.mean([kendalls_w(items[0]), kendalls_w(items[1])]), abs=1e-12
    )
    assert result.kendalls_w_items == 2
    assert result.pairwise_agreement_ci[0] <= result.pairwise_agreement <= result.pairwise_agreement_ci[1]
    reference = krippendorff.alpha(
        reliability_data=alpha_reliability_data(ranks),
        level_of_measurement="ordinal",
        value_domain=rank_value_domain(3),
    )
    assert result.krippendorff_alpha == pytest.approx(reference, abs=1e-9)


def test_project_agreement_without_overlap_raises() -> None:
    with pytest.raises(AgreementUndefinedError):
        project_agreement(rank_array([[[[1], [2]]]]))


def test_all_pairs_of_annotators_are_used() -> None:
    # Guard against an off-by-one in the pair loop: four slots give six annotator pairs.
    rankings = [[[1], [2]], [[1], [2]], [[2], [1]], [[2], [1]]]
    same = sum(a == b for a, b in combinations(rankings, 2))

    assert item_pairwise_agreement(rankings) == pytest.approx(same / 6, abs=1e-12)


def test_length_bias_counts_only_the_pairs_that_disagree_with_the_consensus() -> None:
    consensus = {1: [[10], [11], [12]], 2: [[20], [21]]}
    lengths = {10: 5, 11: 50, 12: 500, 20: 9, 21: 9}
    # Item 1 reversed: three pairs flipped, each toward the longer answer. Item 2 flipped
    # between answers of equal length: not counted.
    assert length_bias([(1, [[12], [11], [10]]), (2, [[21], [20]])], consensus, lengths) == 1.0
    assert length_bias([(1, [[10], [12], [11]])], consensus, lengths) == 1.0  # one flip, 12 over 11
    assert length_bias([(1, [[10], [11], [12]])], consensus, lengths) is None  # agrees throughout
    assert length_bias([(2, [[21], [20]])], consensus, lengths) is None  # equal lengths only
    # Against the opposite consensus, every flip is toward the shorter answer.
    assert length_bias([(1, [[10], [11], [12]]), (1, [[10], [12], [11]]), (1, [[11], [10], [12]])],
                       {1: [[12], [11], [10]]}, lengths) == 0.0
