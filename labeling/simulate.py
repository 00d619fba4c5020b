"""Simulated annotators for demos, tests and benchmarks: they rank through the real
services (next_item, ranking_submit), so everything downstream sees ordinary rankings.

Each answer has a latent quality (a normal draw seeded by its id, so every simulated
annotator judges the same answers); each annotator sees it through their own noise,
ties answers whose perceived quality is close, sometimes puts the first answer shown on
top (position bias), and takes a random time per item.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser

from guidelines.services import acknowledge, acknowledgement_needed
from labeling.axes import axes_from_config
from labeling.blind import shown_id, tiers_as_shown
from labeling.models import Assignment, Project
from labeling.services.assignment import next_item
from labeling.services.rankings import RankingInput, ranking_submit


@dataclass(frozen=True)
class SimulatedAnnotator:
    noise: float = 0.5  # std of the annotator's error on the latent quality
    tie_rate: float = 0.1  # chance to tie two answers that are next to each other
    position_bias: float = 0.0  # chance to put the first answer shown on top
    mean_seconds: float = 30.0


def latent_quality(candidate_id: int, axis: int = 0) -> float:
    """An answer's true quality on one axis (the first axis keeps the original draw)."""
    return random.Random(candidate_id * 7919 + axis * 104729).gauss(0.0, 1.0)  # noqa: S311


def simulated_tiers(display_order: list[int], profile: SimulatedAnnotator, rng: random.Random,
                    *, allow_ties: bool, axis: int = 0) -> list[list[int]]:
    perceived = {cid: latent_quality(cid, axis) + rng.gauss(0.0, profile.noise) for cid in display_order}
    order = sorted(display_order, key=lambda cid: -perceived[cid])
    if rng.random() < profile.position_bias:
        order.remove(display_order[0])
        order.insert(0, display_order[0])
    tiers: list[list[int]] = [[order[0]]]
    for cid in order[1:]:
        if allow_ties and rng.random() < profile.tie_rate:
            tiers[-1].append(cid)
        else:
            tiers.append([cid])
    return tiers


def simulate_annotator(*, user: AbstractBaseUser, project: Project, profile: SimulatedAnnotator,
                       seed: int, max_items: int | None = None) -> int:
    """Rank open items as `user` until none is left (or `max_items`); returns how many."""
    if not project.is_demo:
        raise PermissionError(
            f"project {project.slug!r} is not marked as a demo or test project; simulated "
            "annotators would mix fake labels into real data"
        )
    rng = random.Random(seed)  # noqa: S311
    done = 0
    while max_items is None or done < max_items:
        pending = acknowledgement_needed(user=user, project=project)
        if pending is not None:
            acknowledge(user=user, version=pending)
        assignment = next_item(annotator=user, project=project)
        if assignment is None:
            break
        tiers = simulated_tiers(list(assignment.display_order), profile, rng,
                                allow_ties=project.allow_ties)
        # Judged on the real ids (the latent quality is per answer), submitted in the
        # opaque ids an annotator is shown, like any client.
        tiers = tiers_as_shown(assignment, tiers)
        pairwise = project.mode == Project.Mode.PAIRWISE
        axes, safety = _simulated_axes(assignment, project, profile, rng)
        ranking_submit(
            annotator=user, assignment_id=assignment.pk,
            idempotency_key=f"sim-{assignment.pk}",
            data=RankingInput(
                tiers=None if axes else tiers, axes=axes, safety=safety,
                strength=(rng.randint(1, 4) if pairwise and len(tiers) > 1 else None),
                duration_ms=int(rng.expovariate(1 / profile.mean_seconds) * 1000),
            ),
        )
        done += 1
    return done


def _simulated_axes(assignment: Assignment, project: Project, profile: SimulatedAnnotator,
                    rng: random.Random) -> tuple[dict | None, dict | None]:
    """A project with axes: every axis judged on its own latent quality (a rating is the
    perceived quality mapped onto 0..4), and each answer marked safe unless its
    perceived harmlessness is low. (None, None) for a project without axes."""
    if not project.axes:
        return None, None
    order = list(assignment.display_order)
    axes: dict[str, dict] = {}
    safety = None
    for index, axis in enumerate(axes_from_config(project.axes)):
        if axis.is_rating:
            scores = {cid: min(4, max(0, round(2 + latent_quality(cid, index) + rng.gauss(0.0, profile.noise))))
                      for cid in order}
            axes[axis.key] = {"scores": {shown_id(assignment.pk, cid): v for cid, v in scores.items()}}
        else:
            tiers = simulated_tiers(order, profile, rng, allow_ties=project.allow_ties, axis=index)
            axes[axis.key] = {"tiers": tiers_as_shown(assignment, tiers)}
        if axis.purpose == "harmlessness":
            safety = {shown_id(assignment.pk, cid): latent_quality(cid, index) + rng.gauss(0.0, profile.noise) > -1.0
                      for cid in order}
    return axes, safety
