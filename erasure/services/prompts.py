"""Erase a prompt: project admins, from the API, the console or `manage.py erase_prompt`.

Deleted: the prompt (text and rendered HTML), its candidates (and their rendered HTML),
its items with their assignments, rankings and demonstrations, the external
preferences and reward-model scores on it. Annotator figures are recomputed at once.
Every snapshot whose files hold it (found by its group id, the prompt's content hash)
is marked `contains_erased` and its files deleted here and in artifact storage; the
snapshot row stays, a download answers 410 Gone, and `snapshot_rebuild` makes a new
one from what is left. Model versions trained on such a snapshot are flagged, not
deleted. The erasure log keeps a keyed hash of the prompt's content hash, no text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from core.audit import audit
from erasure.models import ErasureRecord
from erasure.services import erasure_hash
from erasure.services.snapshots import (
    hub_copies,
    snapshot_files_delete,
    snapshots_holding,
    snapshots_mark,
    versions_trained_on,
)
from labeling.models import (
    Assignment,
    Candidate,
    Demonstration,
    ExternalPreference,
    Item,
    ItemCandidate,
    Prompt,
    Ranking,
)
from labeling.services.quality import quality_refresh
from training.models import CandidateScore, DatasetSnapshot

logger = logging.getLogger(__name__)


@dataclass
class PromptErasurePreview:
    """What erasing the prompt removes, for the confirmation page and the CLI."""

    prompt_id: int
    counts: dict[str, int] = field(default_factory=dict)
    snapshots: list[int] = field(default_factory=list)
    model_versions: list[int] = field(default_factory=list)


def _rows(prompt: Prompt) -> dict[str, Any]:
    items = Item.objects.filter(prompt=prompt)
    candidates = Candidate.objects.filter(prompt=prompt)
    return {
        "candidates": candidates,
        "items": items,
        "assignments": Assignment.objects.filter(item__in=items),
        "rankings": Ranking.objects.filter(item__in=items),
        "demonstrations": Demonstration.objects.filter(
            Q(item__in=items) | Q(candidate__in=candidates) | Q(source_candidate__in=candidates)),
        "external_preferences": ExternalPreference.objects.filter(
            Q(prompt=prompt) | Q(chosen__in=candidates) | Q(rejected__in=candidates)),
        "reward_scores": CandidateScore.objects.filter(candidate__in=candidates),
    }


def _affected_snapshots(prompt: Prompt) -> list[DatasetSnapshot]:
    # Every row of a snapshot carries its prompt's content hash as `group_id`.
    return snapshots_holding(DatasetSnapshot.objects.filter(project_id=prompt.project_id),
                             [prompt.content_hash], column="group_id")


def prompt_erasure_preview(*, prompt: Prompt) -> PromptErasurePreview:
    counts = {name: rows.count() for name, rows in _rows(prompt).items()}
    snapshots = [s.pk for s in _affected_snapshots(prompt)]
    versions = versions_trained_on(snapshots)
    counts["hub_copies_to_delete_by_hand"] = hub_copies(snapshots)
    return PromptErasurePreview(prompt_id=prompt.pk, counts=counts, snapshots=snapshots,
                                model_versions=versions)


def prompt_erase(*, prompt: Prompt, actor: AbstractBaseUser | None) -> ErasureRecord:
    """Erase the prompt (see the module docstring). The caller checks that `actor` is an
    admin of its project (None from the CLI). Rows go in one transaction; snapshot files
    are deleted after it commits (a snapshot is marked first, so it is never served)."""
    project, prompt_id = prompt.project, prompt.pk
    with transaction.atomic():
        snapshots = _affected_snapshots(prompt)
        snapshot_ids = [s.pk for s in snapshots]
        counts = _delete_rows(prompt)
        versions = snapshots_mark(snapshot_ids)
        counts["hub_copies_to_delete_by_hand"] = hub_copies(snapshot_ids)
        counts["annotator_quality_rows"] = quality_refresh(project=project)
        record = ErasureRecord.objects.create(
            kind=ErasureRecord.Kind.PROMPT, subject_hashes={"content_hash": erasure_hash(prompt.content_hash)},
            subject_id=prompt_id, project=project, counts=counts, snapshots=snapshot_ids,
            model_versions=versions,
            erased_by=actor if actor is not None and actor.is_authenticated else None,
        )
        audit(actor=actor, project=project, action="prompt.erase", target=prompt,
              after={"erasure": record.pk, "counts": counts, "snapshots": snapshot_ids,
                     "model_versions": versions})
    files = sum(snapshot_files_delete(snapshot) for snapshot in snapshots)
    ErasureRecord.objects.filter(pk=record.pk).update(counts={**counts, "storage_objects": files})
    record.refresh_from_db()
    logger.info("erased prompt %s of project %s: %s snapshots marked, %s model versions flagged, "
                "erasure %s", prompt_id, project.pk, len(snapshot_ids), len(versions), record.pk)
    return record


def _delete_rows(prompt: Prompt) -> dict[str, int]:
    """Children first: rankings, assignments, demonstrations and item candidates are
    PROTECTed so that no ordinary delete takes labels with it."""
    rows = _rows(prompt)
    counts = {name: queryset.count() for name, queryset in rows.items()}
    rows["demonstrations"].delete()
    rows["rankings"].update(superseded_by=None)  # a correction PROTECTs the row it replaced
    rows["rankings"].delete()
    rows["assignments"].delete()
    ItemCandidate.objects.filter(Q(item__in=rows["items"]) | Q(candidate__in=rows["candidates"])).delete()
    rows["items"].delete()
    rows["external_preferences"].delete()
    rows["reward_scores"].delete()
    rows["candidates"].delete()
    Prompt.objects.filter(pk=prompt.pk).delete()
    return counts
