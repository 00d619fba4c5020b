"""Bootstrap confidence intervals over items, and the one "mean with its interval" that
the dashboard, the API and the models page show. Pure numpy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from labeling.stats.agreement import AgreementUndefinedError
from labeling.stats.consensus import InvalidRankingError


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




def mean_with_ci(values: Sequence[float], *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"n", "mean", "ci"}`` of per-item values: the mean and its 95% percentile
    bootstrap interval (None with fewer than two values, where it means nothing)."""
    array = np.asarray(values, dtype=float)
    if not len(array):
        return {"n": 0, "mean": None, "ci": None}
    ci = list(bootstrap_ci(array, n_resamples=n_resamples, seed=seed)) if len(array) > 1 else None
    return {"n": len(array), "mean": float(array.mean()), "ci": ci}
