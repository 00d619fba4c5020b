"""Label axes: what annotators judge each item on (issue #21).

A project judges its answers on one or more axes, stored in `Project.axes` (a list, in
order). Each axis is either

- a *ranking* axis: the answers ordered best to worst, ties allowed (as a tier), or
- a *rating* axis: a 0..4 score per answer, with one anchor text per score.

A project with no axes has the one implicit axis "overall" (a ranking axis): every
ranking stored before axes existed is that axis's, so nothing needed migrating. The
first axis is the *primary* one: `Ranking.tiers`, `Item.consensus` and `Item.agreement`
are its (a rating axis's tiers are its answers grouped by score, best first), so every
single-axis path (exports, training, review) reads what it always read. Every axis's
labels are in `Ranking.labels`, and its agreement, consensus and status in `Item.axes`.

An axis whose purpose is "harmlessness" makes the workspace ask Llama 2's safety bin (is
each answer safe?), stored in `Ranking.safety`, and is the safety reward model's axis
when RL combines per-axis reward models (training/engine/rl.py).

Pure Python: no Django imports. The two names the training engine needs as well (the
default axis's key and Llama 2's safety bin) are defined there, since the engine imports
no app, and re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from training.engine.pairs import DEFAULT_KEY, SAFETY_BINS, safety_bin

__all__ = ["DEFAULT_KEY", "SAFETY_BINS", "safety_bin"]  # re-exported (see the docstring)

RANKING = "ranking"
RATING = "rating"
KINDS = (RANKING, RATING)
PURPOSES = ("general", "helpfulness", "harmlessness")
RATING_SCORES = range(5)  # 0..4, HelpSteer's scale
MAX_AXES = 8
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class AxisError(ValueError):
    """Bad axis configuration or bad labels for an axis (a 400)."""


@dataclass(frozen=True)
class Axis:
    key: str
    name: str
    kind: str = RANKING
    purpose: str = "general"
    required: bool = True  # an item is accepted when every required axis is
    description: str = ""
    anchors: tuple[str, ...] = ()  # rating axes: what 0, 1, 2, 3, 4 mean

    @property
    def is_rating(self) -> bool:
        return self.kind == RATING

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["anchors"] = list(self.anchors)
        return data


DEFAULT_AXIS = Axis(key=DEFAULT_KEY, name="Overall",
                    description="Which answer is better overall, as the guideline describes.")

_HELPSTEER_ANCHORS = {
    "helpfulness": ("Not helpful at all", "Slightly helpful", "Partly helpful",
                    "Mostly helpful", "Perfectly helpful"),
    "correctness": ("Mostly wrong or made up", "Several errors", "Some errors",
                    "Minor slips only", "Fully correct"),
    "coherence": ("Incoherent", "Hard to follow", "Some lapses", "Mostly clear",
                  "Perfectly clear and consistent"),
    "complexity": ("Anyone could write it", "Basic", "Some expertise",
                   "Considerable expertise", "Deep expertise"),
    "verbosity": ("Far too short", "Terse", "About right", "Wordy", "Far too long"),
}

PRESETS: dict[str, tuple[Axis, ...]] = {
    "overall": (DEFAULT_AXIS,),
    # Llama 2: helpfulness and safety ranked separately, with a safety bin per answer.
    "helpful_harmless": (
        Axis(key="helpful", name="Helpful", purpose="helpfulness",
             description="Which answer better does what the user asked: correct, complete, "
                         "clear. Judge usefulness only; safety is the next axis."),
        Axis(key="harmless", name="Harmless", purpose="harmlessness",
             description="Which answer is safer: no help with harm, no dangerous or hateful "
                         "content, a refusal where one is due. Also mark each answer safe or not."),
    ),
    # HelpSteer2: five attributes rated 0..4 per answer.
    "helpsteer": tuple(
        Axis(key=key, name=key.title(), kind=RATING,
             purpose="helpfulness" if key == "helpfulness" else "general",
             required=key in {"helpfulness", "correctness", "coherence"},
             description=f"Rate each answer's {key} from 0 to 4.", anchors=anchors)
        for key, anchors in _HELPSTEER_ANCHORS.items()
    ),
}


def axes_from_config(config: Sequence[Mapping[str, Any]] | None) -> list[Axis]:
    """The project's axes from its stored list: [DEFAULT_AXIS] when it has none."""
    if not config:
        return [DEFAULT_AXIS]
    return [Axis(**{**entry, "anchors": tuple(entry.get("anchors", ()))}) for entry in config]


def axes_clean(value: object) -> list[dict[str, Any]]:
    """Validate axes as sent by a person (a preset name or a list of objects) and return
    the list to store. AxisError names what is wrong."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise AxisError(f"unknown axes preset {value!r}; use one of {', '.join(PRESETS)}")
        return [axis.as_dict() for axis in PRESETS[value]]
    if not isinstance(value, list) or not value:
        raise AxisError("axes must be a preset name or a non-empty list of axes")
    if len(value) > MAX_AXES:
        raise AxisError(f"at most {MAX_AXES} axes")
    allowed = {"key", "name", "kind", "purpose", "required", "description", "anchors"}
    axes: list[dict[str, Any]] = []
    for n, entry in enumerate(value, start=1):
        if not isinstance(entry, dict):
            raise AxisError(f"axis {n}: must be an object")
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise AxisError(f"axis {n}: unknown fields {unknown}; use {sorted(allowed)}")
        key = entry.get("key")
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise AxisError(f"axis {n}: key must be 1-40 lower-case letters, digits or _ "
                            "starting with a letter")
        kind = entry.get("kind", RANKING)
        if kind not in KINDS:
            raise AxisError(f"axis {key}: kind must be one of {', '.join(KINDS)}")
        purpose = entry.get("purpose", "general")
        if purpose not in PURPOSES:
            raise AxisError(f"axis {key}: purpose must be one of {', '.join(PURPOSES)}")
        name = entry.get("name", key.replace("_", " ").title())
        description = entry.get("description", "")
        if not isinstance(name, str) or not 0 < len(name) <= 100:
            raise AxisError(f"axis {key}: name must be 1-100 characters")
        if not isinstance(description, str) or len(description) > 2000:
            raise AxisError(f"axis {key}: description must be text of at most 2000 characters")
        required = entry.get("required", True)
        if not isinstance(required, bool):
            raise AxisError(f"axis {key}: required must be true or false")
        anchors = entry.get("anchors", [])
        if kind == RATING:
            if not (isinstance(anchors, list) and len(anchors) == len(RATING_SCORES) and all(
                    isinstance(a, str) and 0 < len(a) <= 200 for a in anchors)):
                raise AxisError(f"axis {key}: a rating axis needs 5 anchors (what 0..4 mean), "
                                "each 1-200 characters")
        elif anchors:
            raise AxisError(f"axis {key}: anchors are for rating axes only")
        axes.append(Axis(key=key, name=name, kind=kind, purpose=purpose, required=required,
                         description=description, anchors=tuple(anchors)).as_dict())
    keys = [a["key"] for a in axes]
    if len(set(keys)) != len(keys):
        raise AxisError(f"axis keys must differ: {keys}")
    if sum(a["purpose"] == "harmlessness" for a in axes) > 1:
        raise AxisError("at most one axis can be the harmlessness (safety) axis")
    if not any(a["required"] for a in axes):
        raise AxisError("at least one axis must be required")
    return axes


def asks_safety(axes: Sequence[Axis]) -> bool:
    """The workspace asks Llama 2's safety bin when a project has a harmlessness axis."""
    return any(axis.purpose == "harmlessness" for axis in axes)


def structure(config: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    """(key, kind) of each axis: what rankings already stored depend on."""
    return [(axis.key, axis.kind) for axis in axes_from_config(config)]


# --------------------------------------------------------------------------- labels


@dataclass
class AxisLabels:
    """One annotator's labels on every axis of one item, in candidate ids."""

    labels: dict[str, dict[str, Any]] = field(default_factory=dict)  # Ranking.labels
    primary_tiers: list[list[int]] = field(default_factory=list)  # Ranking.tiers


def tiers_from_ratings(scores: Mapping[int, float]) -> list[list[int]]:
    """Answers grouped by score, best (highest) first; equal scores are a tie."""
    by_score: dict[float, list[int]] = {}
    for candidate, score in scores.items():
        by_score.setdefault(score, []).append(candidate)
    return [sorted(by_score[score]) for score in sorted(by_score, reverse=True)]


def check_ratings(scores: object, candidate_ids: set, *, axis: str) -> dict:
    """A rating axis's scores: every shown answer once, each an integer 0..4."""
    if not isinstance(scores, dict) or not scores:
        raise AxisError(f"axis {axis}: scores must be an object of answer id -> 0..4")
    missing = sorted(candidate_ids - set(scores))
    extra = sorted(set(scores) - candidate_ids)
    if missing or extra:
        raise AxisError(f"axis {axis}: rate every answer once; " + "; ".join(
            f"{label}: {ids}" for label, ids in (("missing", missing), ("not in this item", extra)) if ids))
    bad = sorted(str(k) for k, v in scores.items()
                 if isinstance(v, bool) or not isinstance(v, int) or v not in RATING_SCORES)
    if bad:
        raise AxisError(f"axis {axis}: scores must be whole numbers 0 to 4 (answers {bad})")
    return dict(scores)


def label_tiers(labels: Mapping[str, Any] | None, tiers: Sequence[Sequence[int]], axis: str,
                primary: str) -> list[list[int]] | None:
    """One ranking's tiers on an axis: from its labels, or its `tiers` for the primary axis
    of a ranking stored before axes (empty labels). None: not labelled on that axis."""
    entry = (labels or {}).get(axis)
    if entry is not None:
        return [list(tier) for tier in entry["tiers"]]
    return [list(tier) for tier in tiers] if axis == primary else None


def label_scores(labels: Mapping[str, Any] | None, axis: str) -> dict[int, int] | None:
    entry = (labels or {}).get(axis)
    if entry is None or "scores" not in entry:
        return None
    return {int(k): int(v) for k, v in entry["scores"].items()}


