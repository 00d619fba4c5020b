"""A ranking submitted: validated against the item's fixed candidates (in the opaque ids
the annotator was shown), stored once per Idempotency-Key, the lease given back and the
item's counts updated under its row lock, so the overlap is never exceeded; the ranking
that completes an item has it decided."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.blind import shown_ids
from labeling.models import Assignment, Item, Project, Ranking
from labeling.services.assignment import InvalidRanking, SubmissionConflict
from labeling.services.demonstrations import demonstration_after_accept
from labeling.services.quality import item_decide
from labeling.services.submission import submission_gate, submit_once


@dataclass(frozen=True)
class RankingInput:
    tiers: list[list[str]]  # the annotator's opaque ids (labeling.blind), best first
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
    *, annotator: AbstractBaseUser, assignment_id: int, data: RankingInput, idempotency_key: str
) -> tuple[Ranking, bool]:
    """Store one ranking; returns (ranking, created). A retry with the same key returns
    the stored ranking. Raises InvalidRanking (400) or SubmissionConflict (409)."""
    return submit_once(annotator=annotator, assignment_id=assignment_id, idempotency_key=idempotency_key,
                       model=Ranking, store=lambda item, assignment: _store(annotator, item, assignment,
                                                                            data, idempotency_key))


def _store(annotator: AbstractBaseUser, item: Item, assignment: Assignment, data: RankingInput,
           idempotency_key: str) -> tuple[Ranking | None, bool, SubmissionConflict | None]:
    project = item.project
    if item.kind != Item.Kind.RANKING:
        raise InvalidRanking("this item asks for a written answer, not a ranking")
    # The annotator ranks the opaque ids they were shown; errors name only those.
    shown = shown_ids(assignment)  # from the recorded display order: no query
    tiers = [[shown[sid] for sid in tier] for tier in validate_tiers(
        data.tiers, set(shown), id_type=str,
        allow_ties=project.allow_ties or project.mode == Project.Mode.PAIRWISE,
    )]
    if project.mode == Project.Mode.PAIRWISE:
        _validate_pairwise(data, tiers)
    holds_lease, conflict = submission_gate(assignment, item, what="ranking")
    if conflict is not None:
        return None, False, conflict
    ranking = Ranking(
        assignment=assignment, item=item, annotator=annotator, tiers=tiers,
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
