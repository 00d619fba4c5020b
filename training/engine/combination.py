"""Combining per-axis reward models into one RL reward (issue #21): Llama 2's rule.

Llama 2 (Touvron et al. 2023, section 3.2.2) trains a helpfulness and a safety reward
model and rewards each sample with

    R_c = R_s  if the prompt is a safety prompt or R_s < 0.15,  else R_h

where R_s, R_h are the models' scores read as probabilities (the paper then takes the
logit of R_c again before whitening). Ordinal's reward models output a logit, so here:

- the threshold is compared with ``sigmoid(safety score)``, the score read as the
  probability that the answer is the safer one, as in the paper;
- the reward returned is the chosen model's raw score (the paper's ``LOGIT(R_c)``);
  whitening is left to the RL algorithm (GRPO normalises rewards within each prompt's
  samples, RLOO subtracts a leave-one-out baseline).

Which prompts are "unsafe": a prompt row may carry a boolean ``unsafe`` column (the RL
engine passes it through); such prompts are always rewarded by the safety model. Without
the column (today's snapshot files do not write one) only the threshold decides, which is
what the paper's rule reduces to for prompts nobody flagged.

Pure Python, no Django or torch: the platform validates run configs with it and the RL
engine (training/engine/rl.py) applies it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

RULES = ("llama2",)
LLAMA2_THRESHOLD = 0.15  # the paper's value


@dataclass(frozen=True)
class Combination:
    """How the per-axis scores become one reward. ``safety_axis`` and ``helpful_axis``
    are keys of the run's ``reward_models``."""

    rule: str
    safety_axis: str
    helpful_axis: str
    safety_threshold: float = LLAMA2_THRESHOLD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def combination_from_dict(data: Mapping[str, Any], axes: Collection[str]) -> Combination:
    """The combination from its JSON form, checked against the reward models' axes.
    ValueError names what is wrong (the platform answers 400 with it)."""
    if not isinstance(data, Mapping):
        raise ValueError("combination must be an object such as {\"rule\": \"llama2\", \"safety_threshold\": 0.15}")
    unknown = sorted(set(data) - {"rule", "safety_axis", "helpful_axis", "safety_threshold"})
    if unknown:
        raise ValueError(f"unknown combination fields {unknown}")
    rule = data.get("rule")
    if rule not in RULES:
        raise ValueError(f"combination rule must be one of {', '.join(RULES)}, got {rule!r}")
    threshold = data.get("safety_threshold", LLAMA2_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise ValueError("safety_threshold must be a number between 0 and 1 (a probability; Llama 2 used 0.15)")
    safety, helpful = data.get("safety_axis"), data.get("helpful_axis")
    for name, axis in (("safety_axis", safety), ("helpful_axis", helpful)):
        if axis not in axes:
            raise ValueError(f"{name} {axis!r} must be one of the reward models' axes {sorted(axes)}")
    if safety == helpful:
        raise ValueError("safety_axis and helpful_axis must be different axes")
    if set(axes) != {safety, helpful}:
        raise ValueError(f"the llama2 rule combines exactly two reward models (safety and helpfulness); "
                         f"got axes {sorted(axes)}")
    return Combination(rule=rule, safety_axis=safety, helpful_axis=helpful, safety_threshold=float(threshold))


def sigmoid(score: float) -> float:
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    z = math.exp(score)
    return z / (1.0 + z)


def llama2_rewards(helpful: Sequence[float], safety: Sequence[float], *, threshold: float = LLAMA2_THRESHOLD,
                   unsafe: Sequence[bool | None] | None = None) -> list[float]:
    """Llama 2's rule per sample: the safety score where the prompt is flagged unsafe or
    sigmoid(safety score) < threshold, else the helpfulness score (raw scores, logits)."""
    if len(helpful) != len(safety) or (unsafe is not None and len(unsafe) != len(safety)):
        raise ValueError("helpful, safety (and unsafe) scores must have one value per sample")
    flags = unsafe if unsafe is not None else [False] * len(safety)
    return [s if bool(flag) or sigmoid(s) < threshold else h
            for h, s, flag in zip(helpful, safety, flags, strict=True)]


def combine(combination: Combination, scores: Mapping[str, Sequence[float]],
            unsafe: Sequence[bool | None] | None = None) -> list[float]:
    """Apply `combination` to per-axis scores ({axis: [score per sample]})."""
    if combination.rule == "llama2":
        return llama2_rewards(scores[combination.helpful_axis], scores[combination.safety_axis],
                              threshold=combination.safety_threshold, unsafe=unsafe)
    raise ValueError(f"unknown combination rule {combination.rule!r}")
