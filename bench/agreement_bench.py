"""Benchmark of the project-level agreement recompute (labeling.stats.batch).

Generates, in numpy, a rank array of N items x 4 annotators x K=4 candidates (1,000,000
rankings by default) from a noisy-annotator model with ties, then times the full
recompute the agreement job runs (``project_agreement``: pairwise agreement mean with
its bootstrap CI, Krippendorff's alpha ordinal, Kendall's W mean), each statistic on
its own, the per-annotator leave-one-out pass, and finally the same alpha through the
reference ``krippendorff.alpha`` on the same data (its speed ratio and the difference).

    .venv/bin/python bench/agreement_bench.py                  # 250,000 items x 4 x K=4
    .venv/bin/python bench/agreement_bench.py --items 20000    # a quick check
    .venv/bin/python bench/agreement_bench.py --no-reference   # skip the krippendorff call

Human-readable lines first; the LAST line is one JSON object. Peak RSS is reported
twice: after Ordinal's own work, and after the reference call, which needs far more
memory (it builds an items x V x V array), so it runs last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from labeling.stats.agreement import krippendorff_alpha  # noqa: E402 - needs the path above
from labeling.stats.batch import (  # noqa: E402
    alpha_reliability_data,
    batch_kendalls_w,
    batch_leave_one_out_agreement,
    batch_pairwise_agreement,
    project_agreement,
    rank_value_domain,
)
from labeling.stats.bootstrap import bootstrap_ci  # noqa: E402

SEED = 20261127
NOISE = 0.8  # annotator noise on a unit-variance latent quality: ~70% pairwise agreement
NOISE_SPREAD = 0.3  # some annotators are noisier than others
TIE_STEP = 0.5  # perceived quality is judged on a coarse scale: close answers tie


def generate(items: int, annotators: int, k: int, seed: int) -> np.ndarray:
    """(items x annotators x K) mid-ranks: each annotator sees a candidate's latent
    quality plus their own noise, rounded to a coarse grid (which makes ties)."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=(items, 1, k))
    noise = NOISE * rng.lognormal(0.0, NOISE_SPREAD, size=(items, annotators, 1))
    perceived = np.round((quality + noise * rng.normal(size=(items, annotators, k))) / TIE_STEP)
    better = (perceived[..., None, :] > perceived[..., :, None]).sum(axis=-1)
    equal = (perceived[..., None, :] == perceived[..., :, None]).sum(axis=-1) - 1
    return 1.0 + better + equal / 2.0  # higher perceived quality = better = lower rank


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def _tie_rate(ranks: np.ndarray) -> float:
    first, second = np.triu_indices(ranks.shape[2], 1)
    return float((ranks[..., first] == ranks[..., second]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=250_000)
    parser.add_argument("--annotators", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--no-reference", action="store_true", help="skip krippendorff.alpha")
    args = parser.parse_args()

    ranks, generate_seconds = _timed(lambda: generate(args.items, args.annotators, args.k, args.seed))
    rankings = args.items * args.annotators
    print(
        f"generated {rankings:,} rankings ({args.items:,} items x {args.annotators} annotators x "
        f"K={args.k}, {_tie_rate(ranks):.1%} of candidate pairs tied) in {generate_seconds:.1f} s "
        "(not measured)",
        flush=True,
    )
    rss_before = _peak_rss_mb()

    result, total = _timed(lambda: project_agreement(ranks, n_resamples=args.resamples, seed=args.seed))
    rss_ours = _peak_rss_mb()
    domain = rank_value_domain(args.k)
    per_item, pairwise_s = _timed(lambda: batch_pairwise_agreement(ranks))
    reliability, layout_s = _timed(lambda: alpha_reliability_data(ranks))
    alpha, alpha_s = _timed(lambda: krippendorff_alpha(reliability, "ordinal", domain))
    _, w_s = _timed(lambda: batch_kendalls_w(ranks))
    rated = per_item[~np.isnan(per_item)]
    _, bootstrap_s = _timed(lambda: bootstrap_ci(rated, n_resamples=args.resamples, seed=args.seed))
    _, loo_s = _timed(lambda: batch_leave_one_out_agreement(ranks))
    rss_ours = max(rss_ours, _peak_rss_mb())

    low, high = result.pairwise_agreement_ci
    w_text = "undefined" if result.kendalls_w is None else f"{result.kendalls_w:.4f}"
    print(
        f"recompute: {total:.2f} s for every project statistic "
        f"(pairwise {pairwise_s:.2f} s, alpha {alpha_s:.2f} s + layout {layout_s:.2f} s, "
        f"W {w_s:.2f} s, bootstrap x{args.resamples} {bootstrap_s:.2f} s)"
    )
    print(
        f"values:    pairwise agreement {result.pairwise_agreement:.4f} "
        f"[{low:.4f}, {high:.4f}], alpha {result.krippendorff_alpha:.4f}, "
        f"W {w_text} ({result.kendalls_w_items:,} items)"
    )
    print(f"quality:   leave-one-out agreement for every ranking {loo_s:.2f} s")
    print(f"peak RSS:  {rss_ours:.0f} MB ({rss_before:.0f} MB after generating the data)")

    reference: dict[str, Any] = {}
    if not args.no_reference:
        import krippendorff

        expected, reference_s = _timed(
            lambda: krippendorff.alpha(
                reliability_data=reliability, level_of_measurement="ordinal", value_domain=domain
            )
        )
        reference = {
            "krippendorff_pkg_seconds": round(reference_s, 3),
            "alpha_speedup_vs_pkg": round(reference_s / alpha_s, 1),
            "alpha_abs_diff_vs_pkg": float(abs(expected - alpha)),
            "peak_rss_with_pkg_mb": round(_peak_rss_mb(), 1),
        }
        print(
            f"reference: krippendorff.alpha {reference_s:.2f} s (ours {alpha_s:.3f} s, "
            f"{reference['alpha_speedup_vs_pkg']}x), |difference| {reference['alpha_abs_diff_vs_pkg']:.1e}, "
            f"peak RSS {reference['peak_rss_with_pkg_mb']:.0f} MB with it"
        )

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        json.dumps(
            {
                "bench": "agreement",
                "rankings": rankings,
                "items": args.items,
                "annotators": args.annotators,
                "k": args.k,
                "tie_rate": round(_tie_rate(ranks), 4),
                "seconds": round(total, 3),
                "seconds_by_statistic": {
                    "pairwise_agreement": round(pairwise_s, 3),
                    "krippendorff_alpha": round(alpha_s + layout_s, 3),
                    "kendalls_w": round(w_s, 3),
                    "bootstrap_ci": round(bootstrap_s, 3),
                },
                "leave_one_out_seconds": round(loo_s, 3),
                "bootstrap_resamples": args.resamples,
                "peak_rss_mb": round(rss_ours, 1),
                "pairwise_agreement": round(result.pairwise_agreement, 6),
                "pairwise_agreement_ci": [round(low, 6), round(high, 6)],
                "krippendorff_alpha": round(result.krippendorff_alpha, 6),
                "kendalls_w": None if result.kendalls_w is None else round(result.kendalls_w, 6),
                **reference,
                "machine": f"{cores} cores, Python {platform.python_version()}, numpy {np.__version__}",
            }
        )
    )


if __name__ == "__main__":
    main()
