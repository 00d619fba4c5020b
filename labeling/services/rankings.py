"""A ranking submitted: validated against the item's fixed candidates (in the opaque ids
the annotator was shown), stored once per Idempotency-Key, the lease given back and the
item's counts updated under its row lock, so the overlap is never exceeded; the ranking
that completes an item has it decided."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.axes import AxisError, asks_safety, axes_from_config, check_ratings, tiers_from_ratings
from labeling.blind import shown_ids
from labeling.models import Assignment, Item, Project, Ranking
from labeling.services.assignment import InvalidRanking, SubmissionConflict
from labeling.services.demonstrations import demonstration_after_accept
from labeling.services.quality import item_decide
from labeling.services.submission import submission_gate, submit_once


@dataclass(frozen=True)
class RankingInput:
    # The primary axis, in the annotator's opaque ids (labeling.blind), best first. A
    # project with axes may send it here or in `axes` (its first axis's key).
    tiers: list[list[str]] | None = None
    # {axis key: {"tiers": [[id, ...], ...]}} for ranking axes, {"scores": {id: 0..4}}
    # for rating axes: every axis of a project with axes (labeling/axes.py).
    axes: dict[str, Any] | None = None
    safety: dict[str, bool] | None = None  # {id: safe?}: asked with a harmlessness axis
    unsafe: bool = False
    all_bad: bool = False
    needs_expert: bool = False
    rationale: str = ""
    strength: int | None = None
    duration_ms: int | None = None


def validate_tiers(tiers: object, candidate_ids: set[int] | set[str], *, allow_ties: bool,
                   id_type: type = int) -> list[list]:
    """The ranking must be a permutation of the item's candidates, ties as groups. Ids are
    candidate ids (int) or, from annotators, the opaque ids they were shown (str)."""
    if not isinstance(tiers, list) or not tiers or not all(
        isinstance(tier, list) and tier for tier in tiers
    ):
        raise InvalidRanking("tiers must be a non-empty list of non-empty lists of candidate ids")
    flat = [cid for tier in tiers for cid in tier]
    if not all(isinstance(cid, id_type) and not isinstance(cid, bool) for cid in flat):
        raise InvalidRanking("candidate ids must be integers" if id_type is int else
                             "candidate ids must be the ids shown with the answers (strings)")
    duplicated = sorted({cid for cid in flat if flat.count(cid) > 1})
    missing = sorted(candidate_ids - set(flat))
    extra = sorted(set(flat) - candidate_ids)
    problems = [
        f"{label}: {ids}" for label, ids in
        (("missing", missing), ("not in this item", extra), ("duplicated", duplicated)) if ids
    ]
    if problems:
        raise InvalidRanking("the ranking must cover each candidate once; " + "; ".join(problems))
    if not allow_ties and any(len(tier) > 1 for tier in tiers):
        raise InvalidRanking("this project does not allow ties")
    return [list(tier) for tier in tiers]


@dataclass(frozen=True)
class Labels:
    """A submission's labels in candidate ids, as stored on the Ranking."""

    tiers: list[list[int]]  # the primary axis's
    labels: dict[str, Any]  # every axis's (empty for a project without axes)
    safety: dict[str, bool] | None


def resolve_labels(project: Project, data: RankingInput, shown: dict[str, int]) -> Labels:
    """Validate a submission against the project's axes and map the annotator's ids to
    candidate ids. InvalidRanking (400) names the axis and the ids that are wrong."""
    allow_ties = project.allow_ties or project.mode == Project.Mode.PAIRWISE

    def ranked(tiers: object) -> list[list[int]]:
        return [[shown[sid] for sid in tier]
                for tier in validate_tiers(tiers, set(shown), id_type=str, allow_ties=allow_ties)]

    if not project.axes:  # the one implicit axis: tiers, as always
        if data.axes:
            raise InvalidRanking("this project has one axis: send `tiers` only (no `axes`)")
        if data.safety is not None:
            raise InvalidRanking("this project asks no safety bin (it has no harmlessness axis)")
        if data.tiers is None:
            raise InvalidRanking("tiers is required: the answers best to worst")
        return Labels(ranked(data.tiers), {}, None)
    axes = axes_from_config(project.axes)
    given = dict(data.axes or {})
    primary = axes[0]
    if data.tiers is not None:
        if primary.key in given:
            raise InvalidRanking(f"axis {primary.key} was sent twice: in `tiers` and in `axes`")
        if primary.is_rating:
            raise InvalidRanking(f"axis {primary.key} is a rating axis: send its scores in `axes`")
        given[primary.key] = {"tiers": data.tiers}
    keys = [axis.key for axis in axes]
    unknown, missing = sorted(set(given) - set(keys)), [k for k in keys if k not in given]
    if unknown or missing:
        raise InvalidRanking("label every axis of this project once (" + ", ".join(keys) + "); "
                             + "; ".join(f"{what}: {names}" for what, names in
                                         (("missing", missing), ("unknown", unknown)) if names))
    labels: dict[str, Any] = {}
    for axis in axes:
        entry = given[axis.key]
        field = "scores" if axis.is_rating else "tiers"
        if not isinstance(entry, dict) or set(entry) != {field}:
            raise InvalidRanking(f"axis {axis.key} is a {axis.kind} axis: send "
                                 + ('{"scores": {answer id: 0..4}}' if axis.is_rating
                                    else '{"tiers": [[answer id, ...], ...]}'))
        if axis.is_rating:
            try:
                scores = {shown[sid]: v for sid, v in check_ratings(
                    entry["scores"], set(shown), axis=axis.key).items()}
            except AxisError as exc:
                raise InvalidRanking(str(exc)) from None
            labels[axis.key] = {"scores": {str(c): scores[c] for c in sorted(scores)},
                                "tiers": tiers_from_ratings(scores)}
        else:
            try:
                labels[axis.key] = {"tiers": ranked(entry["tiers"])}
            except InvalidRanking as exc:
                raise InvalidRanking(f"axis {axis.key}: {exc}") from None
    safety = None
    if asks_safety(axes):
        marks = data.safety
        if not isinstance(marks, dict) or set(marks) != set(shown) or not all(
                isinstance(v, bool) for v in marks.values()):
            raise InvalidRanking("mark every answer safe (true) or unsafe (false) in `safety`, "
                                 "by the ids shown")
        safety = {str(shown[sid]): marks[sid] for sid in sorted(marks, key=lambda s: shown[s])}
    elif data.safety is not None:
        raise InvalidRanking("this project asks no safety bin (it has no harmlessness axis)")
    return Labels(labels[primary.key]["tiers"], labels, safety)


def _validate_pairwise(data: RankingInput, tiers: list[list[int]]) -> None:
    tie = len(tiers) == 1
    if data.all_bad and not tie:
        raise InvalidRanking("'both bad' is a tie: send both answers in one tier")
    if not tie and data.strength not in {1, 2, 3, 4}:
        raise InvalidRanking(
            "pairwise mode needs a strength: 1 negligibly/unsure, 2 slightly, 3 better, "
            "4 significantly better"
        )


def ranking_submit(
    *, annotator: AbstractBaseUser, assignment_id: int, data: RankingInput, idempotency_key: str,
    members_only: bool = False,
) -> tuple[Ranking, bool]:
    """Store one ranking; returns (ranking, created). A retry with the same key returns
    the stored ranking. Raises InvalidRanking (400) or SubmissionConflict (409), and
    Assignment.DoesNotExist when the assignment is not the annotator's (or, with
    `members_only`, they have left its project)."""
    return submit_once(annotator=annotator, assignment_id=assignment_id, idempotency_key=idempotency_key,
                       model=Ranking, store=lambda item, assignment: _store(annotator, item, assignment,
                                                                            data, idempotency_key),
                       members_only=members_only)


def _store(annotator: AbstractBaseUser, item: Item, assignment: Assignment, data: RankingInput,
           idempotency_key: str) -> tuple[Ranking | None, bool, SubmissionConflict | None]:
    project = item.project
    if item.kind != Item.Kind.RANKING:
        raise InvalidRanking("this item asks for a written answer, not a ranking")
    # The annotator ranks the opaque ids they were shown; errors name only those.
    shown = shown_ids(assignment)  # from the recorded display order: no query
    resolved = resolve_labels(project, data, shown)
    tiers = resolved.tiers
    if project.mode == Project.Mode.PAIRWISE:
        _validate_pairwise(data, tiers)
    holds_lease, conflict = submission_gate(assignment, item, what="ranking")
    if conflict is not None:
        return None, False, conflict
    ranking = Ranking(
        assignment=assignment, item=item, annotator=annotator, tiers=tiers,
        labels=resolved.labels, safety=resolved.safety,
        guideline_version_id=assignment.guideline_version_id, unsafe=data.unsafe,
        all_bad=data.all_bad, needs_expert=data.needs_expert, rationale=data.rationale,
        strength=data.strength, duration_ms=data.duration_ms, idempotency_key=idempotency_key,
    )
    finished_at = timezone.now()
    item.rankings_count += 1
    complete = not item.is_gold and item.rankings_count >= item.required_rankings
    if connection.vendor == "postgresql":
        _write_in_one_statement(ranking, assignment, item, finished_at=finished_at,
                                holds_lease=holds_lease, unsafe=data.unsafe, complete=complete)
    else:
        ranking.save(force_insert=True)
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.SUBMITTED,
                                                           finished_at=finished_at)
        updates = {"rankings_count": F("rankings_count") + 1}
        if holds_lease:  # the lease goes back in the same UPDATE (the item row is locked)
            updates["active_leases"] = Greatest(F("active_leases") - 1, 0)
        if data.unsafe:
            updates["flagged_unsafe"] = True
        if complete:
            updates["status"] = Item.Status.COMPLETE
        Item.objects.filter(pk=item.pk).update(**updates)
    if holds_lease:
        item.active_leases = max(0, item.active_leases - 1)
    if complete:
        item_completed(item_id=item.pk)
    return ranking, True, None


def _write_in_one_statement(ranking: Ranking, assignment: Assignment, item: Item, *,
                            finished_at: object, holds_lease: bool, unsafe: bool,
                            complete: bool) -> None:
    """PostgreSQL: the ranking's INSERT, its assignment marked submitted and the item's
    counts (the lease back, one more ranking, flagged, complete) in one statement
    (data-modifying CTEs: all or nothing; the item and the assignment are locked by
    the caller). The ranking's columns come from the model, so a field added later is
    written too."""
    fields = [f for f in Ranking._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(ranking, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH done AS (UPDATE labeling_assignment SET status = %s, finished_at = %s "  # noqa: S608 - column names from the model
            "WHERE id = %s), "
            "counts AS (UPDATE labeling_item SET rankings_count = rankings_count + 1, "
            "active_leases = GREATEST(active_leases - %s, 0), "
            "flagged_unsafe = flagged_unsafe OR %s, "
            "status = CASE WHEN %s THEN %s ELSE status END WHERE id = %s) "
            f"INSERT INTO labeling_ranking ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id",
            [Assignment.Status.SUBMITTED, finished_at, assignment.pk,
             int(holds_lease), unsafe, complete, Item.Status.COMPLETE, item.pk, *values],
        )
        ranking.pk = cursor.fetchone()[0]
    ranking._state.adding = False
    ranking._state.db = connection.alias


def item_completed(*, item_id: int) -> None:
    """An item reached its required rankings: the agreement step decides it (accepted,
    disputed, or back to open for one more ranking under adaptive overlap); an accepted
    item of a project that asks for demonstrations "after" ranking gets one."""
    if item_decide(item_id=item_id) == Item.Status.ACCEPTED:
        item = Item.objects.select_related("project").get(pk=item_id)
        demonstration_after_accept(item=item)
