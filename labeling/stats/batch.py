"""Agreement over a whole project at once: rank arrays of shape (items, annotator slots,
K) holding mid-ranks (NaN for an empty slot), and the batch statistics the project-level
recompute runs (bench/agreement_bench.py times them on a million rankings). Each matches
its item-level twin in `labeling.stats.agreement`; NaN marks an item whose value is
undefined. Pure numpy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from labeling.stats.agreement import (
    AgreementUndefinedError,
    item_pairwise_agreement,
    krippendorff_alpha,
    pair_signs,
)
from labeling.stats.bootstrap import bootstrap_ci
from labeling.stats.consensus import RANK_TOLERANCE, InvalidRankingError, Tiers, rank_matrix


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
    signs = pair_signs(checked)  # NaN for an empty slot, so its pairs drop out below
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
    score = 1.0 - np.abs(pair_signs(checked) - consensus).mean(axis=-1) / 2
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
