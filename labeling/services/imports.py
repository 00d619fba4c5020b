"""Uploads: storing a file as an import job, a dry run that validates every row and writes
nothing, and the import that follows a dry run (skipping invalid rows only when asked).

The API (POST /api/projects/{id}/imports, with `dry_run`) and the console's upload page
both come here, so both audit alike. A dry run is an ImportJob with `dry_run` set: the
same task reads it, its report lists every invalid row with its line and reason (up to
labeling.importing.MAX_REPORTED_ERRORS), and its upload is kept for the import, which
takes the file over (the task deletes it when that import ends); a dry run nobody imports
loses its upload after DRY_RUN_KEEP."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from core.runs import Run, run_enqueue
from labeling.importing import ImportFileError, ImportReport, import_axis_problem, parsed_rows
from labeling.importing.reading import detect_format
from labeling.models import ImportJob, Project
from labeling.prompt_metadata import unstorable_at

IMPORT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


def upload_name_problem(name: str, size: int) -> str | None:
    """Why this upload is refused before it is stored, or None."""
    if not name.lower().removesuffix(".gz").endswith(IMPORT_SUFFIXES):
        return "use a .jsonl, .csv or .parquet file (optionally .gz)"
    if unstorable_at(name) is not None:
        return "the file name holds a character that cannot be stored"
    if size > settings.IMPORT_MAX_UPLOAD_BYTES:
        return f"the file is {size} bytes; the limit is {settings.IMPORT_MAX_UPLOAD_BYTES}"
    return None


DRY_RUN_KEEP = timedelta(hours=24)


def dry_run_uploads_prune(*, now: datetime | None = None) -> int:
    """Delete the uploads of dry runs nobody imported within DRY_RUN_KEEP (each new upload
    calls this, so abandoned files don't pile up); returns how many were deleted."""
    cutoff = (now or timezone.now()) - DRY_RUN_KEEP
    stale = ImportJob.objects.filter(dry_run=True, status=Run.Status.DONE, finished_at__lt=cutoff,
                                     imports__isnull=True).exclude(report__has_key="upload_removed")
    removed = 0
    for job in stale[:1000]:
        Path(job.file_path).unlink(missing_ok=True)
        ImportJob.objects.filter(pk=job.pk).update(report={**job.report, "upload_removed": True})
        removed += 1
    return removed


def import_upload(*, project: Project, name: str, size: int, chunks: Iterable[bytes],
                  actor: AbstractBaseUser, dry_run: bool = False, skip_invalid: bool = False,
                  axis: str = "") -> ImportJob:
    """Store the upload under a generated name (the user's name is only a label) and queue
    its job: a dry run, or an import. `axis`: the project axis its preference pairs judge
    (blank: the primary axis); a dry run passes it on to its import. Audited."""
    name = Path(name or "").name
    problem = upload_name_problem(name, size) or import_axis_problem(project, axis)
    if problem:
        raise DomainError(problem)
    dry_run_uploads_prune()
    settings.UPLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_ROOT / f"{uuid.uuid4().hex}.upload"
    try:
        with open(path, "wb") as fh:
            for part in chunks:
                fh.write(part)
        with transaction.atomic():
            job = ImportJob.objects.create(
                project=project, created_by=actor, file_path=str(path), original_name=name[:255],
                skip_invalid=skip_invalid, dry_run=dry_run, axis=axis,
            )
            audit(actor=actor, project=project, action="import.dry_run" if dry_run else "import.start",
                  target=job, after={"file": job.original_name, "bytes": size, "axis": axis,
                                     **({} if dry_run else {"skip_invalid": skip_invalid})})
            run_enqueue(job)
    except BaseException:
        # No job holds the file: nothing else would ever delete it.
        path.unlink(missing_ok=True)
        raise
    return job


@transaction.atomic
def import_after_dry_run(*, dry_run: ImportJob, skip_invalid: bool, actor: AbstractBaseUser) -> ImportJob:
    """Import the file a finished dry run checked. With invalid rows, only `skip_invalid`
    imports it (the valid rows); the import takes the upload over. Audited."""
    dry_run = ImportJob.objects.select_for_update().get(pk=dry_run.pk)
    if not dry_run.dry_run or dry_run.status != Run.Status.DONE:
        raise DomainError("only a finished dry run can be imported")
    if dry_run.imports.exists():
        raise DomainError("this upload was already imported")
    if not Path(dry_run.file_path).exists():
        raise DomainError("the upload is gone; upload the file again")
    invalid = int(dry_run.report.get("invalid") or 0)
    if invalid and not skip_invalid:
        raise DomainError(f"{invalid} rows are invalid: fix the file, or import with "
                          "\"skip invalid rows\" to import the valid ones")
    job = ImportJob.objects.create(
        project=dry_run.project, created_by=actor, file_path=dry_run.file_path,
        original_name=dry_run.original_name, skip_invalid=skip_invalid, dry_run_of=dry_run,
        axis=dry_run.axis,
    )
    audit(actor=actor, project=dry_run.project, action="import.start", target=job,
          after={"file": job.original_name, "dry_run": dry_run.pk, "skip_invalid": skip_invalid,
                 "axis": job.axis,
                 "invalid_rows_skipped": invalid if skip_invalid else 0})
    run_enqueue(job)
    return job


def import_validate(*, job: ImportJob, progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """A dry run's work: read every row as the import would and keep every invalid one
    (line and reason); write nothing. An unreadable file raises ImportFileError with the
    report so far."""
    path = Path(job.file_path)
    report = ImportReport()
    try:
        fmt = detect_format(path, job.original_name)
        for _row in parsed_rows(job.project, path, fmt, report, progress):
            pass  # a dry run writes nothing: the report holds what was refused
    except ImportFileError as exc:
        report.add_file_error(exc.line, str(exc))
        exc.report = report
        raise
    return report
