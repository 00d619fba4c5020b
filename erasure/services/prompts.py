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

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q

from core.audit import audit
from core.errors import DomainError
from core.runs import Run
from erasure.models import ErasureRecord
from erasure.services import erasure_hash
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
from training.artifacts import artifact_delete, artifact_open
from training.models import CandidateScore, DatasetSnapshot, ModelVersion
from training.snapshots import snapshot_create, snapshot_dir

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


def snapshot_holds(snapshot: DatasetSnapshot, group_id: str) -> bool:
    """Whether any file of a built snapshot has a row of this prompt. Every row carries
    its prompt's content hash as `group_id`; files are read from local disk or storage."""
    for name in snapshot.files:
        try:
            opened = artifact_open(snapshot_dir(snapshot) / name)
        except FileNotFoundError:
            continue
        with opened as file:
            if name.endswith(".jsonl"):
                needle = json.dumps(group_id).encode()
                if any(needle in line for line in file):
                    return True
            elif name.endswith(".parquet"):
                import pyarrow.parquet as pq

                if group_id in set(pq.read_table(file, columns=["group_id"])
                                   .column("group_id").to_pylist()):
                    return True
    return False


def _affected_snapshots(prompt: Prompt) -> list[DatasetSnapshot]:
    snapshots = DatasetSnapshot.objects.filter(project_id=prompt.project_id).order_by("id")
    affected = []
    for snapshot in snapshots:
        if snapshot.status == Run.Status.DONE and not snapshot.contains_erased:
            if snapshot_holds(snapshot, prompt.content_hash):
                affected.append(snapshot)
        elif snapshot.status == Run.Status.RUNNING:
            affected.append(snapshot)  # it may have read the prompt already: assume so
    return affected


def _flagged_versions(snapshot_ids: list[int]) -> Any:
    return ModelVersion.objects.filter(
        Q(snapshot_id__in=snapshot_ids) | Q(source_run__snapshot_id__in=snapshot_ids))


def prompt_erasure_preview(*, prompt: Prompt) -> PromptErasurePreview:
    counts = {name: rows.count() for name, rows in _rows(prompt).items()}
    snapshots = [s.pk for s in _affected_snapshots(prompt)]
    versions = list(_flagged_versions(snapshots).values_list("id", flat=True))
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
        DatasetSnapshot.objects.filter(pk__in=snapshot_ids).update(contains_erased=True)
        versions = list(_flagged_versions(snapshot_ids).values_list("id", flat=True))
        ModelVersion.objects.filter(pk__in=versions).update(trained_on_erased=True)
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


def snapshot_files_delete(snapshot: DatasetSnapshot) -> int:
    """Delete a marked snapshot's folder here and in storage (idempotent)."""
    if not DatasetSnapshot.objects.filter(pk=snapshot.pk, contains_erased=True).exists():
        raise DomainError(f"snapshot {snapshot.pk} holds no erased data; its files stay")
    return artifact_delete(snapshot_dir(snapshot))


def snapshot_rebuild(*, snapshot: DatasetSnapshot, user: AbstractBaseUser | None) -> DatasetSnapshot:
    """A new snapshot with the same kinds, formats, filters and options, built from the
    labels that are left (the erased ones are gone from the database)."""
    if not snapshot.contains_erased:
        raise DomainError(f"snapshot {snapshot.pk} holds no erased data; nothing to rebuild")
    return snapshot_create(project=snapshot.project, kinds=snapshot.kinds, formats=snapshot.formats,
                           filters=snapshot.filters, options=snapshot.options, user=user)
