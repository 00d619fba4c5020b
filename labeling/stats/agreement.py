"""Agreement between annotators: the one place Ordinal defines its agreement statistics.

Pure numpy: no Django imports. The functions here take rankings (lists of tiers, best
to worst, see ``labeling.stats.consensus``); their project-wide twins over rank arrays
are in ``labeling.stats.batch`` and confidence intervals in ``labeling.stats.bootstrap``.

Ties: every statistic works on mid-ranks (tied candidates share the mean of the
positions they occupy), and each docstring says what a tie does to it.

Never NaN silently: a statistic that has no value for its input (one annotator, a
single candidate, no variation at all) raises ``AgreementUndefinedError``; input that
cannot be used raises ``InvalidRankingError``. Both are ValueErrors. Only the batch
functions return NaN, documented, to mark an item whose value is undefined.

Pairs for training come from ``labeling.stats.consensus.pairs_from_ranking``, not from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np

from labeling.stats.consensus import (
    InvalidRankingError,
    Tiers,
    borda_consensus,
    pairs_from_ranking,
    rank_matrix,
    tier_ranks,
)

Level = Literal["nominal", "ordinal", "interval"]

# Fleiss' kappa categories for pairwise (A/B) mode, in table column order.
PAIRWISE_CATEGORIES = ("a", "b", "tie")
# "Both bad" says neither answer is better: for agreement it is a tie.
_PAIRWISE_COLUMN = {"a": 0, "b": 1, "tie": 2, "both_bad": 2}


class AgreementUndefinedError(ValueError):
    """The statistic has no value for this data: fewer than two annotators, fewer than
    two candidates, or no variation at all. Raised instead of returning NaN."""


# --------------------------------------------------------------------------- two annotators


def pairwise_agreement(a: Tiers, b: Tiers) -> float:
    """Share of candidate pairs two annotators order the same way (InstructGPT's
    inter-annotator agreement), for two rankings of the same K >= 2 candidates.

    Each of the C(K,2) unordered pairs {i, j} scores 1 when both put i above j (or both
    put j above i), 1 when both tie i and j, 1/2 when exactly one of them ties i and j,
    and 0 when they order the pair oppositely. The result is the mean score, in [0, 1]:
    ``1 - mean(|sign(a_i - a_j) - sign(b_i - b_j)|) / 2`` over pairs, on mid-ranks."""
    _, ranks = rank_matrix([a, b])
    signs = pair_signs(ranks)
    if signs.shape[-1] == 0:
        raise AgreementUndefinedError("a single candidate has no pair to agree on")
    return float(1.0 - np.abs(signs[0] - signs[1]).mean() / 2)


def kendall_tau_b(a: Tiers, b: Tiers) -> float:
    """Kendall's tau-b between two rankings of the same candidates, in [-1, 1].

    tau_b = (concordant - discordant) / sqrt((P - ties_a) * (P - ties_b)), P = C(K,2)
    pairs; a pair tied in either ranking is neither concordant nor discordant. Equals
    ``scipy.stats.kendalltau(ranks_a, ranks_b).statistic``. When one ranking ties every
    candidate the denominator is zero (scipy returns NaN): this raises
    AgreementUndefinedError; use ``pairwise_agreement`` for a value that always exists."""
    _, ranks = rank_matrix([a, b])
    signs = pair_signs(ranks)
    untied_a, untied_b = np.count_nonzero(signs, axis=1)
    if untied_a == 0 or untied_b == 0:
        raise AgreementUndefinedError("tau-b is undefined when a ranking ties every candidate")
    tau = float(signs[0] @ signs[1]) / np.sqrt(float(untied_a) * float(untied_b))
    return float(min(1.0, max(-1.0, tau)))  # rounding can step past +-1; scipy clips too


# --------------------------------------------------------------------------- one item


def item_pairwise_agreement(rankings: Sequence[Tiers]) -> float:
    """``pairwise_agreement`` averaged over all C(m,2) pairs of an item's m >= 2 rankings."""
    if len(rankings) < 2:
        raise AgreementUndefinedError("agreement needs at least two rankings of the item")
    rank_matrix(rankings)  # one clear error if the candidate sets differ
    scores = [pairwise_agreement(a, b) for a, b in combinations(rankings, 2)]
    return float(np.mean(scores))


def kendalls_w(rankings: Sequence[Tiers]) -> float:
    """Kendall's coefficient of concordance W of m >= 2 rankings of K candidates, in [0, 1].

    W = 12 S / (m^2 (K^3 - K) - m sum_j T_j), where R_i is candidate i's rank sum over
    the m rankings, S = sum_i (R_i - mean R)^2, and T_j = sum over ranking j's tiers of
    (t^3 - t), t the tier's size: the standard correction that lets ties lower the
    maximum S. It equals Friedman's tie-corrected chi-square / (m (K - 1)). Raises
    AgreementUndefinedError for one ranking, or when every ranking ties everything."""
    if len(rankings) < 2:
        raise AgreementUndefinedError("Kendall's W needs at least two rankings of the item")
    _, ranks = rank_matrix(rankings)
    m, k = ranks.shape
    rank_sums = ranks.sum(axis=0)
    spread = float(((rank_sums - rank_sums.mean()) ** 2).sum())
    ties = sum(len(tier) ** 3 - len(tier) for tiers in rankings for tier in tiers)
    denominator = m * m * (k**3 - k) - m * ties
    if denominator == 0:
        raise AgreementUndefinedError("Kendall's W is undefined when every ranking is one tie")
    return 12.0 * spread / denominator


def leave_one_out_agreement(rankings: Sequence[Tiers]) -> list[float]:
    """For each of an item's m >= 2 rankings, its ``pairwise_agreement`` with the
    ``borda_consensus`` of the other m - 1 rankings (ties in that consensus count like
    any tie). An annotator who keeps disagreeing with everyone else scores low."""
    if len(rankings) < 2:
        raise AgreementUndefinedError("leave-one-out needs at least two rankings of the item")
    scores = []
    for index, ranking in enumerate(rankings):
        others = [r for i, r in enumerate(rankings) if i != index]
        scores.append(pairwise_agreement(ranking, borda_consensus(others)))
    return scores


# --------------------------------------------------------------------------- one annotator


@dataclass(frozen=True)
class PositionBias:
    """How often an annotator ranked the first answer shown as best.

    ``rate``: mean over rankings of 1/t when the first-displayed candidate is in the
    top tier of size t (1 with no tie), else 0. ``expected``: the same mean with no
    position effect, which is the mean of 1/K (the t-way credit makes this exact with
    ties too). ``excess = rate - expected`` is positive for a first-position bias."""

    rate: float
    expected: float
    rankings: int

    @property
    def excess(self) -> float:
        return self.rate - self.expected


def position_bias(rankings: Sequence[Tiers], display_orders: Sequence[Sequence[int]]) -> PositionBias:
    """``PositionBias`` of one annotator's rankings, each with the order the candidates
    were displayed in (a permutation of the ranking's candidates, first shown first)."""
    if len(rankings) != len(display_orders):
        raise InvalidRankingError("need one display order per ranking")
    if not rankings:
        raise AgreementUndefinedError("no rankings: position bias is undefined")
    credit, expected = [], []
    for tiers, order in zip(rankings, display_orders, strict=True):
        ranks = tier_ranks(tiers)
        if sorted(order) != sorted(ranks):
            raise InvalidRankingError(f"display order {list(order)} is not the ranked candidates")
        credit.append(1.0 / len(tiers[0]) if order[0] in tiers[0] else 0.0)
        expected.append(1.0 / len(ranks))
    return PositionBias(float(np.mean(credit)), float(np.mean(expected)), len(rankings))


def tie_rate(rankings: Sequence[Tiers]) -> float:
    """Share of candidate pairs an annotator tied, pooled over their rankings:
    sum of C(t,2) over every tier / sum of C(K,2) over every ranking."""
    tied = total = 0
    for tiers in rankings:
        k = len(tier_ranks(tiers))
        tied += sum(len(tier) * (len(tier) - 1) // 2 for tier in tiers)
        total += k * (k - 1) // 2
    if total == 0:
        raise AgreementUndefinedError("no candidate pairs: tie rate is undefined")
    return tied / total


def length_bias(rankings: Iterable[tuple[int, Tiers]], consensus: dict[int, Tiers],
                lengths: dict[int, int]) -> float | None:
    """Among the pairs where a ranker's (item id, tiers) order disagrees with the item's
    consensus, the share in which it preferred the longer answer (0.5 = no length
    effect); None when it never disagreed on answers of different lengths. People and AI
    judges are measured with this one function."""
    longer = total = 0
    for item_id, tiers in rankings:
        agreed = consensus.get(item_id)
        if not agreed:
            continue
        consensus_pairs = {(b, w) for b, w, _ in pairs_from_ranking(agreed)}
        for better, worse, _ in pairs_from_ranking(tiers):
            if (worse, better) in consensus_pairs and lengths.get(better) != lengths.get(worse):
                total += 1
                longer += lengths.get(better, 0) > lengths.get(worse, 0)
    return longer / total if total else None


# --------------------------------------------------------------------------- pairwise (A/B) mode


def pairwise_outcome(tiers: Tiers, a: int, *, all_bad: bool = False) -> str:
    """The A/B-mode label of a two-candidate ranking: "a" or "b" for the better one,
    "tie" for a tie, "both_bad" for a tie flagged all-bad (a strict order wins over the
    flag: the annotator still preferred one)."""
    ranks = tier_ranks(tiers)
    if len(ranks) != 2 or a not in ranks:
        raise InvalidRankingError(f"an A/B ranking has two candidates including {a}")
    if len(tiers) == 1:
        return "both_bad" if all_bad else "tie"
    return "a" if a in tiers[0] else "b"


def pairwise_outcome_table(items: Iterable[Sequence[str]]) -> np.ndarray:
    """(items x 3) counts over ``PAIRWISE_CATEGORIES`` (a better, b better, tie) of each
    item's outcome labels, for ``fleiss_kappa``; "both_bad" is counted as a tie."""
    rows = []
    for labels in items:
        row = [0, 0, 0]
        for label in labels:
            if label not in _PAIRWISE_COLUMN:
                raise InvalidRankingError(f"unknown A/B outcome {label!r}")
            row[_PAIRWISE_COLUMN[label]] += 1
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, len(PAIRWISE_CATEGORIES))


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa of an (items x categories) table of counts, every item rated by the
    same n >= 2 raters: (P_bar - P_e) / (1 - P_e), where P_bar is the mean share of
    agreeing rater pairs per item and P_e = sum_c p_c^2 with p_c the overall share of
    category c. A tie is its own category. Equals statsmodels' ``fleiss_kappa``
    (method "fleiss"); raises AgreementUndefinedError when everyone used one category."""
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.size == 0 or np.any(counts < 0):
        raise InvalidRankingError("table must be a non-empty 2-D array of counts")
    raters = counts.sum(axis=1)
    n = raters.max()
    if np.any(raters != n):
        raise InvalidRankingError("Fleiss' kappa needs the same number of ratings on every item")
    if n < 2:
        raise AgreementUndefinedError("Fleiss' kappa needs at least two ratings per item")
    p_category = counts.sum(axis=0) / counts.sum()
    p_item = ((counts * counts).sum(axis=1) - n) / (n * (n - 1.0))
    expected = (p_category * p_category).sum()
    if expected == 1.0:
        raise AgreementUndefinedError("every rating is in one category: kappa is undefined")
    return float((p_item.mean() - expected) / (1.0 - expected))


# --------------------------------------------------------------------------- Krippendorff


def krippendorff_alpha(reliability_data: Any, level: Level = "ordinal", value_domain: Any = None) -> float:
    """Krippendorff's alpha = 1 - D_o / D_e for an (annotators x units) array, NaN = missing.

    For rankings a unit is one (item, candidate) and its value the candidate's mid-rank
    (see ``alpha_reliability_data``); a tie is just a shared value. Only units with two
    or more values count. With n_v the number of such values equal to v (n in all),
    D_o = sum_u sum_{i != j in u} d(v_i, v_j) / (m_u - 1) and
    D_e = sum_{c, k} n_c n_k d(c, k) / (n - 1), where d is: nominal, [c != k];
    interval, (c - k)^2; ordinal, (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, i.e. the
    squared difference of the values' positions a_c = N_c - n_c / 2 (N_c the
    cumulative count), which is how this needs no V x V matrix.

    ``value_domain`` is the ordered list of possible values (default: the values seen);
    for ordinal, its order is the order. Equals ``krippendorff.alpha(reliability_data=,
    level_of_measurement=, value_domain=)``. Raises AgreementUndefinedError with fewer
    than two possible values, no unit rated twice, or no variation among paired values
    (where that package returns NaN); InvalidRankingError for out-of-domain values."""
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise InvalidRankingError("reliability_data must be 2-D: annotators x units")
    codes, domain = _value_codes(data, value_domain)
    if len(domain) <= 1:
        raise AgreementUndefinedError("alpha needs at least two possible values")
    present = codes >= 0
    per_unit = present.sum(axis=0)
    paired = per_unit >= 2
    if not paired.any():
        raise AgreementUndefinedError("alpha needs a unit with values from two annotators")
    counts = np.bincount(codes[present & paired], minlength=len(domain))
    positions = _positions(level, domain, counts)
    observed = _observed_disagreement(codes, present, per_unit, positions)
    expected = _expected_disagreement(counts, positions)
    if expected == 0.0:
        raise AgreementUndefinedError("every paired value is the same: alpha is undefined")
    return float(1.0 - (counts.sum() - 1) * observed / expected)


def _value_codes(data: np.ndarray, value_domain: Any) -> tuple[np.ndarray, np.ndarray]:
    """Index of each value in the domain (-1 where missing) and the domain itself."""
    present = ~np.isnan(data)
    if value_domain is None:
        domain = np.unique(data[present])
    else:
        domain = np.asarray(value_domain, dtype=float).ravel()
        if len(np.unique(domain)) != len(domain):
            raise InvalidRankingError("value_domain lists a value twice")
    if not len(domain):
        if present.any():
            raise InvalidRankingError("reliability_data holds values outside value_domain")
        return np.full(data.shape, -1, dtype=np.intp), domain
    # Look up the whole array at once (NaN sorts past the end and is masked below):
    # faster than compressing out the missing cells and scattering the codes back.
    sorter = np.argsort(domain, kind="stable")
    found = sorter[np.searchsorted(domain, data, sorter=sorter).clip(max=len(domain) - 1)]
    if value_domain is not None and not np.all((domain[found] == data) | ~present):
        raise InvalidRankingError("reliability_data holds values outside value_domain")
    return np.where(present, found, -1), domain


def _positions(level: Level, domain: np.ndarray, counts: np.ndarray) -> np.ndarray | None:
    """Per-value coordinate whose squared difference is the metric (None: nominal)."""
    if level == "nominal":
        return None
    if level == "interval":
        return domain
    if level == "ordinal":
        return np.cumsum(counts) - counts / 2.0
    raise ValueError(f"level must be 'nominal', 'ordinal' or 'interval', not {level!r}")


def _observed_disagreement(
    codes: np.ndarray, present: np.ndarray, per_unit: np.ndarray, positions: np.ndarray | None
) -> float:
    """D_o's numerator: pairs within each unit, each weighted 1 / (m_u - 1)."""
    unit_weight = np.divide(1.0, per_unit - 1.0, out=np.zeros(per_unit.shape), where=per_unit >= 2)
    safe = np.where(present, codes, 0)  # missing cells get weight 0 below; any index will do
    values = safe if positions is None else positions[safe]
    total = 0.0
    for i, j in combinations(range(codes.shape[0]), 2):
        weight = unit_weight * (present[i] & present[j])
        if positions is None:
            distance = (values[i] != values[j]).astype(float)
        else:
            distance = (values[i] - values[j]) ** 2
        total += 2.0 * float(distance @ weight)  # the ordered pairs (i, j) and (j, i)
    return total


def _expected_disagreement(counts: np.ndarray, positions: np.ndarray | None) -> float:
    """sum_{c,k} n_c n_k d(c, k), in closed form: no V x V matrix."""
    n = float(counts.sum())
    if positions is None:
        return n * n - float((counts.astype(float) ** 2).sum())
    centre = float(counts @ positions) / n
    return 2.0 * n * float(counts @ (positions - centre) ** 2)


def pair_signs(ranks: np.ndarray) -> np.ndarray:
    """sign(rank_i - rank_j) for every candidate pair i < j on the last axis."""
    first, second = np.triu_indices(ranks.shape[-1], 1)
    return np.sign(ranks[..., first] - ranks[..., second])
