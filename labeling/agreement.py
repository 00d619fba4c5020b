"""Agreement between annotators: the one place Ordinal defines its agreement statistics.

Pure numpy: no Django imports. Item-level functions take rankings (lists of tiers, best
to worst, see ``labeling.consensus``); the ``batch_*`` functions and
``project_agreement`` take a rank array of shape (items, annotator slots, K) holding
mid-ranks, NaN for a slot with no ranking, and are what the project-level recompute
runs (``bench/agreement_bench.py`` times them on a million rankings).

Ties: every statistic works on mid-ranks (tied candidates share the mean of the
positions they occupy), and each docstring says what a tie does to it.

Never NaN silently: a statistic that has no value for its input (one annotator, a
single candidate, no variation at all) raises ``AgreementUndefinedError``; input that
cannot be used raises ``InvalidRankingError``. Both are ValueErrors. Only the batch
functions return NaN, documented, to mark an item whose value is undefined.

Pairs for training come from ``labeling.consensus.pairs_from_ranking``, not from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np

from labeling.consensus import (
    RANK_TOLERANCE,
    InvalidRankingError,
    Tiers,
    borda_consensus,
    rank_matrix,
    tier_ranks,
)

__all__ = [
    "AgreementUndefinedError",
    "PAIRWISE_CATEGORIES",
    "InvalidRankingError",
    "PositionBias",
    "ProjectAgreement",
    "alpha_reliability_data",
    "batch_kendalls_w",
    "batch_leave_one_out_agreement",
    "batch_pairwise_agreement",
    "bootstrap_ci",
    "fleiss_kappa",
    "item_pairwise_agreement",
    "kendall_tau_b",
    "kendalls_w",
    "krippendorff_alpha",
    "leave_one_out_agreement",
    "mean_by_annotator",
    "pairwise_agreement",
    "pairwise_outcome",
    "pairwise_outcome_table",
    "position_bias",
    "project_agreement",
    "project_pairwise_agreement",
    "rank_array",
    "rank_value_domain",
    "tie_rate",
]

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
    signs = _pair_signs(ranks)
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
    signs = _pair_signs(ranks)
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


# --------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    data: Any,
    statistic: Callable[[Any], float] | None = None,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval, resampling items with replacement.

    ``data`` is either per-item values (1-D; the statistic is their mean) or any items
    (a sequence, or an array with items on axis 0) with ``statistic(resampled_items)``.
    Returns the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the statistic
    over ``n_resamples`` resamples. The default seed is fixed so a recompute on the same
    data gives the same interval (a console that flickers invites misreading)."""
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError("need 0 < confidence < 1 and n_resamples >= 1")
    if len(data) == 0:
        raise AgreementUndefinedError("no items: the confidence interval is undefined")
    rng = np.random.default_rng(seed)
    if statistic is None:
        values = np.asarray(data, dtype=float)
        if values.ndim != 1 or np.isnan(values).any():
            raise InvalidRankingError("per-item values must be 1-D with no NaN; drop undefined items")
        stats = _resampled_means(values, n_resamples, rng)
    else:
        n = len(data)
        stats = np.array([statistic(_take(data, rng.integers(0, n, n))) for _ in range(n_resamples)])
        if np.isnan(stats).any():
            raise AgreementUndefinedError("the statistic returned NaN on a resample")
    low, high = np.quantile(stats, [(1.0 - confidence) / 2, (1.0 + confidence) / 2])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of bootstrap resamples of ``values``.

    Agreement values take few distinct values (multiples of 1/(pairs x annotator
    pairs)), and a resample's mean depends only on how often each distinct value was
    drawn, which is multinomial: drawing those counts is the same bootstrap at a
    fraction of the cost (ms instead of seconds for 250k items). Many distinct values
    make the multinomial slower than drawing indices, so that case draws indices."""
    n = len(values)
    distinct, counts = np.unique(values, return_counts=True)
    if 4 * len(distinct) <= n:
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        return draws @ distinct / n
    means = np.empty(n_resamples)
    chunk = max(1, 2**22 // n)  # bounds the index array at ~32 MB
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def _take(data: Any, index: np.ndarray) -> Any:
    return data[index] if isinstance(data, np.ndarray) else [data[i] for i in index]


# --------------------------------------------------------------------------- batch (project recompute)


def rank_array(items: Sequence[Sequence[Tiers]]) -> np.ndarray:
    """(items x annotator slots x K) mid-ranks from each item's rankings, NaN-padded.

    Candidates are in sorted-id order per item; slot s is the item's s-th ranking (slots
    need not be the same person across items: the batch statistics never assume so).
    Every item must have the same K; group items by K first."""
    matrices = [rank_matrix(rankings)[1] for rankings in items]
    if not matrices:
        raise AgreementUndefinedError("no items")
    k = matrices[0].shape[1]
    if any(m.shape[1] != k for m in matrices):
        raise InvalidRankingError("items have different numbers of candidates; group them by K")
    ranks = np.full((len(matrices), max(m.shape[0] for m in matrices), k), np.nan)
    for index, matrix in enumerate(matrices):
        ranks[index, : matrix.shape[0]] = matrix
    return ranks


def rank_value_domain(k: int) -> np.ndarray:
    """Every mid-rank K candidates can get: 1, 1.5, ..., K (for ``krippendorff_alpha``)."""
    return np.arange(2, 2 * k + 1) / 2.0


def alpha_reliability_data(ranks: np.ndarray) -> np.ndarray:
    """The (annotator slots x items*K) reliability data of a rank array: unit i*K + c is
    candidate c of item i."""
    checked = _checked_ranks(ranks)
    return checked.transpose(1, 0, 2).reshape(checked.shape[1], -1)


def batch_pairwise_agreement(ranks: np.ndarray) -> np.ndarray:
    """``item_pairwise_agreement`` of every item of a rank array at once; NaN for an item
    with fewer than two rankings."""
    checked = _checked_ranks(ranks)
    signs = _pair_signs(checked)  # NaN for an empty slot, so its pairs drop out below
    total = np.zeros(len(checked))
    count = np.zeros(len(checked))
    for a, b in combinations(range(checked.shape[1]), 2):
        score = 1.0 - np.abs(signs[:, a] - signs[:, b]).mean(axis=1) / 2
        both = ~np.isnan(score)
        total += np.where(both, score, 0.0)
        count += both
    return _divide_or_nan(total, count)


def batch_kendalls_w(ranks: np.ndarray) -> np.ndarray:
    """``kendalls_w`` of every item of a rank array; NaN where W is undefined (fewer than
    two rankings, or every ranking one tie)."""
    checked = _checked_ranks(ranks)
    present = ~np.isnan(checked[:, :, 0])
    m = present.sum(axis=1).astype(float)
    k = checked.shape[2]
    rank_sums = np.where(present[..., None], checked, 0.0).sum(axis=1)
    spread = ((rank_sums - rank_sums.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    # A tier of size t at mid-rank r has sum of squared positions minus t r^2 equal to
    # (t^3 - t) / 12, so the tie term follows from the ranks without finding the tiers.
    squares = np.where(present, (checked * checked).sum(axis=2), 0.0)
    ties = 12.0 * (m * k * (k + 1) * (2 * k + 1) / 6 - squares.sum(axis=1))
    denominator = m * m * (k**3 - k) - m * ties
    return _divide_or_nan(12.0 * spread, np.where(m >= 2, denominator, 0.0))


def batch_leave_one_out_agreement(ranks: np.ndarray) -> np.ndarray:
    """(items x slots) ``leave_one_out_agreement``: each ranking's pairwise agreement
    with the mean-rank consensus of the item's other rankings; NaN for an empty slot or
    an item with fewer than two rankings."""
    checked = _checked_ranks(ranks)
    present = ~np.isnan(checked[:, :, 0])
    m = present.sum(axis=1)
    filled = np.where(present[..., None], checked, 0.0)
    others = filled.sum(axis=1, keepdims=True) - filled
    others /= np.maximum(m - 1, 1)[:, None, None]
    first, second = np.triu_indices(checked.shape[2], 1)
    gap = others[..., first] - others[..., second]
    consensus = np.where(np.abs(gap) <= RANK_TOLERANCE, 0.0, np.sign(gap))  # as borda_consensus
    score = 1.0 - np.abs(_pair_signs(checked) - consensus).mean(axis=-1) / 2
    return np.where(present & (m >= 2)[:, None], score, np.nan)


def mean_by_annotator(values: np.ndarray, annotators: np.ndarray) -> dict[int, tuple[float, int]]:
    """Mean and count of per-(item, slot) values for each annotator id in the matching
    ``annotators`` array; NaN values (undefined) are skipped."""
    ids = np.asarray(annotators).ravel()
    flat = np.asarray(values, dtype=float).ravel()
    keep = ~np.isnan(flat)
    found, slot = np.unique(ids[keep], return_inverse=True)
    sums = np.bincount(slot, weights=flat[keep], minlength=len(found))
    counts = np.bincount(slot, minlength=len(found))
    return {int(a): (float(s / c), int(c)) for a, s, c in zip(found, sums, counts, strict=True)}


# --------------------------------------------------------------------------- project level


def project_pairwise_agreement(items: Iterable[Sequence[Tiers]]) -> float:
    """Mean ``item_pairwise_agreement`` over the items that have two or more rankings."""
    scores = [item_pairwise_agreement(rankings) for rankings in items if len(rankings) >= 2]
    if not scores:
        raise AgreementUndefinedError("no item has two rankings yet")
    return float(np.mean(scores))


@dataclass(frozen=True)
class ProjectAgreement:
    """A project's agreement statistics (see ``project_agreement``)."""

    items: int  # items with two or more rankings
    pairwise_agreement: float  # mean item_pairwise_agreement
    pairwise_agreement_ci: tuple[float, float]  # bootstrap over items
    krippendorff_alpha: float  # ordinal, units = (item, candidate)
    kendalls_w: float | None  # mean over the items where W is defined; None if there are none
    kendalls_w_items: int


def project_agreement(
    ranks: np.ndarray, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int | None = 0
) -> ProjectAgreement:
    """Every project-level statistic from one rank array (items x slots x K), vectorized:
    what the agreement job recomputes. Raises AgreementUndefinedError when no item has
    two rankings, or alpha is undefined (every paired rank equal)."""
    per_item = batch_pairwise_agreement(ranks)
    rated = per_item[~np.isnan(per_item)]
    if not len(rated):
        raise AgreementUndefinedError("no item has two rankings yet")
    w = batch_kendalls_w(ranks)
    w = w[~np.isnan(w)]
    alpha = krippendorff_alpha(alpha_reliability_data(ranks), "ordinal", rank_value_domain(ranks.shape[2]))
    return ProjectAgreement(
        items=len(rated),
        pairwise_agreement=float(rated.mean()),
        pairwise_agreement_ci=bootstrap_ci(rated, n_resamples=n_resamples, confidence=confidence, seed=seed),
        krippendorff_alpha=alpha,
        kendalls_w=float(w.mean()) if len(w) else None,
        kendalls_w_items=len(w),
    )


# --------------------------------------------------------------------------- helpers


def _pair_signs(ranks: np.ndarray) -> np.ndarray:
    """sign(rank_i - rank_j) for every candidate pair i < j on the last axis."""
    first, second = np.triu_indices(ranks.shape[-1], 1)
    return np.sign(ranks[..., first] - ranks[..., second])


def _checked_ranks(ranks: np.ndarray) -> np.ndarray:
    array = np.asarray(ranks, dtype=float)
    if array.ndim != 3 or array.shape[2] < 2:
        raise InvalidRankingError("a rank array is (items x annotator slots x K) with K >= 2")
    missing = np.isnan(array)
    if np.any(missing.any(axis=2) != missing.all(axis=2)):
        raise InvalidRankingError("a slot holds a whole ranking or is all NaN")
    return array


def _divide_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)
