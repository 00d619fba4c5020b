"""Snapshots that hold erased data: find them, mark them, delete their files, rebuild.

A snapshot's files are immutable, so one that holds an erased prompt or an erased
person's words can only go: the row stays (with `contains_erased`, so a download
answers 410 Gone and nothing trains on it), its folder is deleted here and in artifact
storage, and a rebuild makes a new snapshot from what the database still holds.
Model versions trained on it are flagged, not deleted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q

from core.errors import DomainError
from core.runs import Run, run_cancel
from training.artifacts import artifact_delete, artifact_open
from training.models import DatasetSnapshot, HubPush, ModelVersion
from training.snapshots import snapshot_create, snapshot_dir


def _jsonl_holds(file: Any, needles: list[bytes]) -> bool:
    return any(needle in line.lower() for line in file for needle in needles)


def _parquet_holds(file: Any, needles: list[str], column: str | None) -> bool:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    columns = [column] if column and column in parquet.schema_arrow.names else None
    for batch in parquet.iter_batches(batch_size=2000, columns=columns):
        for row in batch.to_pylist():
            text = json.dumps(row, default=str).lower()
            if any(needle in text for needle in needles):
                return True
    return False


def snapshot_holds(snapshot: DatasetSnapshot, needles: Iterable[str], *, column: str | None = None) -> bool:
    """Whether any file of a built snapshot contains one of `needles` (any case) in a
    value: a prompt's content hash (every row's `group_id`: pass `column` and Parquet
    files are read for that column only), a person's text. Files are read from local
    disk, else streamed from storage."""
    texts = [json.dumps(n.lower())[1:-1] for n in needles if n]  # as the writers escape them
    if not texts:
        return False
    for name in snapshot.files:
        try:
            opened = artifact_open(snapshot_dir(snapshot) / name)
        except FileNotFoundError:
            continue
        with opened as file:
            if name.endswith(".jsonl") and _jsonl_holds(file, [t.encode() for t in texts]):
                return True
            if name.endswith(".parquet") and _parquet_holds(file, texts, column):
                return True
    return False


def snapshots_holding(snapshots: Any, needles: list[str], *, column: str | None = None) -> list[DatasetSnapshot]:
    """Of `snapshots`, the built ones that hold a needle, and those being built now (they
    may have read it already: assumed to)."""
    found = []
    for snapshot in snapshots.filter(contains_erased=False).order_by("id"):
        if snapshot.status == Run.Status.RUNNING or (
                snapshot.status == Run.Status.DONE and snapshot_holds(snapshot, needles, column=column)):
            found.append(snapshot)
    return found


def versions_trained_on(snapshot_ids: list[int]) -> list[int]:
    return list(ModelVersion.objects.filter(
        Q(snapshot_id__in=snapshot_ids) | Q(source_run__snapshot_id__in=snapshot_ids))
        .values_list("id", flat=True))


def hub_copies(snapshot_ids: list[int]) -> int:
    """Pushes of these snapshots to the Hugging Face Hub: copies outside this deployment
    that erasure can't reach; the confirmation and the log count them so an admin can
    delete those repositories by hand."""
    return HubPush.objects.filter(snapshot_id__in=snapshot_ids, status=Run.Status.DONE).count()


def snapshots_mark(snapshot_ids: list[int]) -> list[int]:
    """Mark the snapshots and flag the model versions trained on them; returns those.
    One still being built is cancelled: its build stops at its next step and deletes
    its folder, and never uploads it."""
    for snapshot in DatasetSnapshot.objects.filter(pk__in=snapshot_ids, status=Run.Status.RUNNING):
        run_cancel(snapshot)
    DatasetSnapshot.objects.filter(pk__in=snapshot_ids).update(contains_erased=True)
    versions = versions_trained_on(snapshot_ids)
    ModelVersion.objects.filter(pk__in=versions).update(trained_on_erased=True)
    return versions


def snapshot_files_delete(snapshot: DatasetSnapshot) -> int:
    """Delete a marked snapshot's folder here and in storage (idempotent); returns the
    storage objects removed."""
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
