"""Prompt import: JSONL, CSV or Parquet (gzip transparently) into prompts, candidates,
items and external preferences.

Row shapes (one JSON object per line, a CSV row, or a Parquet row):

- ``{"prompt": str}`` or ``{"messages": [{"role", "content"}, ...]}`` (optional
  ``"system"``), either with ``"candidates": [str | {"text", "model"}]``;
- TRL preference rows ``{"prompt", "chosen", "rejected"}``, standard (strings) or
  conversational (message lists), and the implicit-prompt form without ``prompt``;
- Anthropic HH-RLHF transcripts (``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` in
  ``chosen``/``rejected``).

A preference row becomes a prompt, two candidates and an ``ExternalPreference``; a row
with candidates becomes an item to rank. An import names the project axis its preferences
judge (``axis``, e.g. HH-RLHF's harmless file to the "harmless" axis; blank: the primary
axis), stored on each ``ExternalPreference``: a snapshot for an axis takes that axis's only.
Re-importing a file adds nothing: prompts are unique by content hash, candidates by
(prompt, text hash, occurrence within the row).

By default the file is validated first and rejected whole if any row is invalid, with a
report of every invalid row's line number and reason, and then written in one transaction:
nothing is stored unless the whole file is. ``skip_invalid`` imports the valid rows, each
chunk committing on its own. Validation checks all the write would refuse (texts and
metadata PostgreSQL cannot store, metadata over its limits: labeling/prompt_metadata.py).
Reading streams within bounds (`reading`), so memory stays flat for any file size;
`rows` turns one record into a ParsedRow; `chunks` reads, hashes and renders them on a
thread of its own, at most two chunks ahead of this module, which writes them.
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.lookups import int_array
from labeling.axes import axes_from_config
from labeling.importing.chunks import Chunk, ChunkReader
from labeling.importing.reading import (
    ImportFileError,
    InvalidRow,
    _CountingReader,
    detect_format,
    iter_records,
)
from labeling.importing.rows import ParsedRow, parse_row
from labeling.models import Candidate, ExternalPreference, Project, Prompt
from labeling.services.items import items_create_bulk

__all__ = ["ImportFileError", "ImportReport", "InvalidRow", "import_axis_problem", "prompts_import"]

MAX_REPORTED_ERRORS = 1000
ProgressCallback = Callable[[int, int], None]


@dataclass
class ImportReport:
    rows: int = 0
    invalid: int = 0
    rejected: bool = False
    prompts_added: int = 0
    prompts_skipped: int = 0
    candidates_added: int = 0
    candidates_skipped: int = 0
    duplicate_candidates: int = 0
    preferences_added: int = 0
    preferences_skipped: int = 0
    items_added: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_error(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "reason": reason})

    def add_file_error(self, line: int | None, reason: str) -> None:
        """The error that stopped reading; listed after the rows' errors, never cut."""
        self.errors.append({"line": line, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors_truncated"] = self.invalid > len(self.errors)
        return data


def import_axis_problem(project: Project, axis: str) -> str | None:
    """Why `axis` is no axis of this project to import preferences to, or None (blank is
    the primary axis)."""
    keys = [a.key for a in axes_from_config(project.axes)]
    if axis and axis not in keys:
        return f"unknown axis {axis!r}; this project's axes are {keys}"
    return None


# --------------------------------------------------------------------------- writing


def prompts_import(
    *,
    project: Project,
    path: Path,
    skip_invalid: bool = False,
    source: str = "",
    original_name: str | None = None,
    progress: ProgressCallback | None = None,
    axis: str = "",
) -> ImportReport:
    """Import a file into `project`. By default every row is validated first and the file
    is written, in one transaction, only if all are valid; with `skip_invalid` the valid
    rows are written chunk by chunk, each chunk committing on its own. A re-run adds
    nothing already there. A file that cannot be read raises ImportFileError, its
    `report` holding what was found (and, with `skip_invalid`, written) until then.
    `axis`: the project axis the file's preference pairs judge (ValueError if unknown)."""
    problem = import_axis_problem(project, axis)
    if problem:
        raise ValueError(problem)
    path = Path(path)
    total = path.stat().st_size
    source = source or (original_name or path.name)
    report = ImportReport()
    try:
        fmt = detect_format(path, original_name)
        if skip_invalid:
            _write_rows(project, path, fmt, source, report, _phase(progress, total, total), axis=axis)
        else:
            # All or nothing, in one pass (the file is parsed once): the rows are written
            # chunk by chunk inside one transaction, and the first invalid row stops the
            # writing (the rest is still read, to list every invalid row) and rolls it all
            # back: nothing is stored unless the whole file is, and no one ever sees a
            # part of it (by then annotators could be ranking its items). Validation
            # checks all the write refuses, so only what it cannot foresee fails a write:
            # a lost connection, a deadlock, a bug. The price: the import shows when
            # complete, and on SQLite it holds the write lock while reading the file.
            # Heartbeats use their own connection (run_heartbeat_detached).
            try:
                with transaction.atomic():
                    _write_rows(project, path, fmt, source, report, _doubled(progress, total),
                                all_or_nothing=True, axis=axis)
                    if report.invalid:
                        raise _Rejected
            except _Rejected:
                return _rejected(report)
    except ImportFileError as exc:
        if not skip_invalid:
            report = _rejected(report)  # what was written is rolled back
        exc.report = report
        report.add_file_error(exc.line, str(exc))
        raise
    if progress:
        progress(2 * total, 2 * total)
    return report


class _Rejected(Exception):  # noqa: N818 - not an error: rolls back an invalid file's writes
    pass


def _rejected(report: ImportReport) -> ImportReport:
    """A rejected file's report: its rows and errors, nothing written."""
    return ImportReport(rows=report.rows, invalid=report.invalid, rejected=True, errors=report.errors)


def _doubled(progress: ProgressCallback | None, total: int) -> ProgressCallback | None:
    """One pass reports over the two halves the progress bar has always shown."""
    if progress is None:
        return None
    return lambda done, _total: progress(2 * done, 2 * total)


def _write_rows(project: Project, path: Path, fmt: str, source: str, report: ImportReport,
                progress: ProgressCallback | None, *, all_or_nothing: bool = False, axis: str = "") -> None:
    """Parse and write the file's valid rows in chunks: a thread reads and renders the
    next chunks while this one writes (`chunks`). ``all_or_nothing``: after the first
    invalid row nothing more is written (the caller rolls back what was)."""
    reader = ChunkReader(lambda seen: parsed_rows(project, path, fmt, report, seen),
                         size=settings.IMPORT_CHUNK_ROWS, invalid_count=lambda: report.invalid,
                         skip_after_invalid=all_or_nothing)
    growing = 0  # chunks that added rows
    with reader:
        for chunk in reader.chunks(progress):
            if all_or_nothing and report.invalid:
                continue  # read before the invalid row: rolled back, so not written
            before = report.prompts_added + report.candidates_added
            _import_chunk(project, chunk, source, report, axis)
            added = report.prompts_added + report.candidates_added > before
            # A chunk that added nothing (a re-import) stops the rendering ahead: the
            # next chunks render only what they insert.
            reader.render_ahead = added
            growing += added
            # Statistics only go stale as the tables grow: a re-import analyzes nothing
            # (ANALYZE was half of its time).
            if added and (growing in {1, 10} or growing % 100 == 0):
                _refresh_statistics()


def _refresh_statistics() -> None:
    """A large import grows the tables faster than autovacuum (if it runs at all) updates
    their statistics; with stale ones the planner turns the per-chunk look-ups into
    sequential scans that get slower with every chunk. ANALYZE samples, so it is cheap.
    Inside the all-or-nothing transaction its lock lasts until the commit: SKIP_LOCKED
    lets a concurrent import go on without it rather than wait for that commit."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE (SKIP_LOCKED) labeling_prompt, labeling_candidate")


def _phase(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """Progress runs over both passes: validation is the first half, writing the second."""
    if progress is None:
        return None
    return lambda done, _total: progress(offset + done, 2 * total)


def parsed_rows(
    project: Project, path: Path, fmt: str, report: ImportReport,
    progress: ProgressCallback | None,
) -> Iterator[ParsedRow]:
    """Each valid row of the file, parsed; every invalid one goes into `report` with its
    line and reason. An unreadable file raises ImportFileError. (The import and its dry
    run read through this one function, so they refuse the same rows.)"""
    counter = _CountingReader(open(path, "rb"))  # noqa: SIM115 - closed below
    total = path.stat().st_size
    max_chars = settings.IMPORT_MAX_TEXT_CHARS
    try:
        for line, record in iter_records(path, fmt, counter):
            report.rows += 1
            if progress and report.rows % 500 == 0:
                progress(counter.bytes_read if fmt != "parquet" else total, total)
            if isinstance(record, InvalidRow):
                report.add_error(line, str(record))
                continue
            try:
                yield parse_row(record, line, max_chars=max_chars, max_candidates=project.k)
            except InvalidRow as exc:
                report.add_error(line, str(exc))
    except (EOFError, OSError, zlib.error, csv.Error) as exc:
        raise ImportFileError(f"the file could not be read to the end: {exc}") from None
    finally:
        counter.raw.close()
    if progress:
        progress(total, total)


# Inside the validate-first transaction a failed chunk fails the whole import, so a
# savepoint per chunk would be two statements for nothing; with skip_invalid this is the
# chunk's own transaction.
@transaction.atomic(savepoint=False)
def _import_chunk(project: Project, chunk: Chunk, source: str,
                  report: ImportReport, axis: str = "") -> None:
    """One chunk: a few set-based statements per table, never a query per row."""
    # One comparison judged on two axes is two preferences (the same file imported to
    # "helpful" and to "harmless"); the primary axis keeps the key it had before axes.
    axis_key = "" if axis in ("", axes_from_config(project.axes)[0].key) else f"{axis}:"
    prompt_ids, new_prompts = _upsert_prompts(project, chunk, source, report)
    created, existing = _upsert_candidates(chunk, prompt_ids, new_prompts, report)
    candidate_ids: dict[tuple[int, str], int] = {}
    if any(row.preference is not None for row in chunk.rows):
        candidate_ids = {**existing, **{pair: cid for pair, (cid, _) in created.items()}}
    preferences: list[ExternalPreference] = []
    candidate_sets: list[tuple[int, list[int]]] = []
    for row, digest, row_keys in zip(chunk.rows, chunk.hashes, chunk.keys, strict=True):
        prompt_id = prompt_ids[digest]
        keys = [key for key, _ in row_keys]
        if row.preference is not None:
            chosen, rejected = (keys[i] for i in row.preference)
            preferences.append(ExternalPreference(
                project=project, prompt_id=prompt_id, chosen_id=candidate_ids[(prompt_id, chosen)],
                rejected_id=candidate_ids[(prompt_id, rejected)], source=source[:255],
                margin=row.margin, axis=axis, dedupe_key=f"pref:{axis_key}{chosen}:{rejected}"[:200],
            ))
            continue
        # Only candidates this row created make a new item (an item's set is fixed), and
        # an exact duplicate of a sibling answer gives annotators nothing to compare.
        fresh = [created.pop((prompt_id, key)) for key in keys if (prompt_id, key) in created]
        candidate_sets.append((prompt_id, [cid for cid, duplicate in fresh if not duplicate]))
    if project.demonstrations == Project.Demonstrations.ONLY:
        # Annotators write the answers: one demonstration item per new prompt.
        from labeling.services.demonstrations import demonstration_items_create

        report.items_added += demonstration_items_create(project=project,
                                                         prompt_ids=sorted(new_prompts))
    else:
        report.items_added += items_create_bulk(project=project, candidate_sets=candidate_sets)
    if preferences:
        _insert_preferences(preferences, report)
    if connection.vendor == "postgresql":
        # The foreign keys are deferred (Django makes them DEFERRABLE INITIALLY DEFERRED):
        # their checks, one per prompt, candidate, item and link, would all wait for the
        # commit, and run there one after the other with nothing else to do, on pages
        # long gone from shared buffers. Checked here, chunk by chunk, they run while the
        # chunk's rows are cached and while the reading thread prepares the next chunk.
        connection.check_constraints()


def _upsert_prompts(project: Project, chunk: Chunk, source: str,
                    report: ImportReport) -> tuple[dict[str, int], set[int]]:
    """Returns every row's prompt id by content hash, and the ids created here."""
    hashes = chunk.hashes
    if connection.vendor == "postgresql":  # one array parameter, not an IN list of 1,000
        existing = dict(_fetch("SELECT content_hash, id FROM labeling_prompt "
                               "WHERE project_id = %s AND content_hash = ANY(%s)",
                               [project.pk, sorted(set(hashes))]))
    else:
        existing = dict(
            Prompt.objects.filter(project=project, content_hash__in=set(hashes)).order_by()
            .values_list("content_hash", "id")
        )
    new: dict[str, tuple[list, list[str], dict]] = {}  # hash -> messages, their HTML, metadata
    for row, digest in zip(chunk.rows, hashes, strict=True):
        if digest in existing or digest in new:
            report.prompts_skipped += 1
            continue
        new[digest] = (row.messages, chunk.render_messages(row.messages), row.metadata)
    created: set[int] = set()
    if new and connection.vendor == "postgresql":
        fetched = _insert_prompts(project, new, source[:255])
        created = set(fetched.values())
        existing.update(fetched)
    elif new:
        Prompt.objects.bulk_create(
            [Prompt(project=project, messages=messages, content_hash=digest, source=source[:255],
                    metadata=metadata, messages_html=html) for digest, (messages, html, metadata) in new.items()],
            ignore_conflicts=True,
        )
        fetched = dict(Prompt.objects.filter(project=project, content_hash__in=list(new))
                       .order_by().values_list("content_hash", "id"))
        created = {fetched[h] for h in new}
        existing.update(fetched)
    report.prompts_added += len(new)
    return existing, created


def _fetch(sql: str, params: list[Any]) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


PROMPT_COLUMNS = ["project_id", "messages", "messages_html", "content_hash", "source", "metadata",
                  "created_at"]


def _insert_prompts(project: Project, new: dict[str, tuple[list, list[str], dict]], source: str) -> dict[str, int]:
    """PostgreSQL: the new prompts through COPY into a temporary table and one INSERT ...
    ON CONFLICT DO NOTHING RETURNING, instead of model instances (a third of the import's
    Python time went to Django's bulk_create here). Returns content hash -> id, also for
    a prompt a concurrent import inserted first."""
    now = timezone.now()
    columns = ", ".join(PROMPT_COLUMNS)
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS import_prompt_rows ON COMMIT DELETE ROWS "  # noqa: S608
            f"AS SELECT {columns} FROM labeling_prompt WITH NO DATA"  # (constants only)
        )
        with cursor.cursor.copy(f"COPY import_prompt_rows ({columns}) FROM STDIN") as copy:
            for digest, (messages, html, metadata) in new.items():
                copy.write_row((project.pk, dumps(messages), dumps(html), digest, source, dumps(metadata), now))
        cursor.execute(
            f"INSERT INTO labeling_prompt ({columns}) SELECT {columns} "  # noqa: S608 - constants
            "FROM import_prompt_rows ON CONFLICT (project_id, content_hash) DO NOTHING "
            "RETURNING content_hash, id"
        )
        fetched = dict(cursor.fetchall())
        cursor.execute("TRUNCATE import_prompt_rows")
    missing = [digest for digest in new if digest not in fetched]
    if missing:  # inserted by a concurrent import since the look-up: not created here
        raced = dict(Prompt.objects.filter(project=project, content_hash__in=missing).order_by()
                     .values_list("content_hash", "id"))
        for digest in missing:
            new.pop(digest)
        return {**fetched, **raced}
    return fetched


CANDIDATE_COLUMNS = ["prompt_id", "text", "origin", "model_name", "sampling_params",
                     "sample_index", "dedupe_key", "is_duplicate", "text_html", "created_at"]


def _upsert_candidates(
    chunk: Chunk, prompt_ids: dict[str, int], new_prompts: set[int], report: ImportReport,
) -> tuple[dict[tuple[int, str], tuple[int, bool]], dict[tuple[int, str], int]]:
    """Insert the rows' candidates that are not there yet. Returns, for the candidates this
    chunk inserted, (prompt id, key) -> (id, is duplicate), and for those already there
    (of the chunk's prompts that existed before it) (prompt id, key) -> id."""
    # Candidates of prompts created in this chunk cannot exist yet: only look up the others',
    # all of them in one query by prompt (their ids serve the preferences too).
    old = {prompt_ids[digest] for digest in chunk.hashes} - new_prompts
    if old and connection.vendor == "postgresql":
        existing = {(prompt_id, key): cid for prompt_id, key, cid in _fetch(
            "SELECT prompt_id, dedupe_key, id FROM labeling_candidate WHERE prompt_id = ANY(%s::bigint[])",
            [int_array(sorted(old))])}
    elif old:
        existing = {(prompt_id, key): cid for prompt_id, key, cid in Candidate.objects.filter(
            prompt_id__in=old).order_by().values_list("prompt_id", "dedupe_key", "id")}
    else:
        existing = {}
    # Rendered once, and only for the rows inserted (ahead, on the reading thread, while
    # the rows are new): pages show the stored HTML.
    todo: dict[tuple[int, str], tuple] = {}
    total = 0
    for row, digest, keys in zip(chunk.rows, chunk.hashes, chunk.keys, strict=True):
        prompt_id = prompt_ids[digest]
        total += len(keys)
        for index, (candidate, (key, duplicate)) in enumerate(zip(row.candidates, keys, strict=True)):
            pair = (prompt_id, key)
            if pair not in existing and pair not in todo:
                todo[pair] = (prompt_id, candidate.text, Candidate.Origin.IMPORT, candidate.model, "{}",
                              index, key, duplicate, chunk.render(candidate.text))
    created = _insert_candidates(list(todo.values()), new_prompts)
    report.candidates_added += len(created)
    report.candidates_skipped += total - len(created)
    report.duplicate_candidates += sum(duplicate for _, duplicate in created.values())
    return created, existing


def _insert_candidates(rows: list[tuple], new_prompts: set[int] = frozenset()
                       ) -> dict[tuple[int, str], tuple[int, bool]]:
    """Insert candidate rows, skipping conflicts; returns what was inserted.

    PostgreSQL: the candidates of prompts this transaction created (`new_prompts`) cannot
    conflict with anything (no one else can see those prompts yet), so they are COPied
    straight into the table and their ids read back by prompt; the others go through a
    temporary table and one INSERT ... ON CONFLICT DO NOTHING RETURNING, exact under
    concurrent imports. Elsewhere (SQLite): bulk_create, then read the ids back."""
    if not rows:
        return {}
    now = timezone.now()
    if connection.vendor == "postgresql" and new_prompts:
        fresh = [values for values in rows if values[0] in new_prompts]
        rest = [values for values in rows if values[0] not in new_prompts]
        inserted = _copy_candidates(fresh, now) if fresh else {}
        if rest:
            inserted.update(_insert_candidates(rest))
        return inserted
    if connection.vendor != "postgresql":
        fields = [dict(zip(CANDIDATE_COLUMNS[:-1], values, strict=True)) for values in rows]
        Candidate.objects.bulk_create(
            [Candidate(**{**f, "sampling_params": {}}) for f in fields], ignore_conflicts=True
        )
        keys = {(values[0], values[6]): values[7] for values in rows}
        found = Candidate.objects.filter(prompt_id__in={p for p, _ in keys},
                                         dedupe_key__in={k for _, k in keys}).order_by()
        return {(p, k): (cid, keys[(p, k)]) for p, k, cid in
                found.values_list("prompt_id", "dedupe_key", "id") if (p, k) in keys}
    columns = ", ".join(CANDIDATE_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS import_candidate_rows ON COMMIT DELETE ROWS "  # noqa: S608
            f"AS SELECT {columns} FROM labeling_candidate WITH NO DATA"  # (constants only)
        )
        with cursor.cursor.copy(f"COPY import_candidate_rows ({columns}) FROM STDIN") as copy:
            for values in rows:
                copy.write_row((*values, now))
        cursor.execute(
            f"INSERT INTO labeling_candidate ({columns}) SELECT {columns} "  # noqa: S608 - constants
            "FROM import_candidate_rows ON CONFLICT (prompt_id, dedupe_key) DO NOTHING "
            "RETURNING prompt_id, dedupe_key, id, is_duplicate"
        )
        inserted = {(p, k): (cid, duplicate) for p, k, cid, duplicate in cursor.fetchall()}
        # ON COMMIT DELETE ROWS does not empty it between the chunks of one transaction.
        cursor.execute("TRUNCATE import_candidate_rows")
        return inserted


def _copy_candidates(rows: list[tuple], now: Any) -> dict[tuple[int, str], tuple[int, bool]]:
    columns = ", ".join(CANDIDATE_COLUMNS)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY labeling_candidate ({columns}) FROM STDIN") as copy:
            for values in rows:
                copy.write_row((*values, now))
        cursor.execute(
            "SELECT prompt_id, dedupe_key, id, is_duplicate FROM labeling_candidate "
            "WHERE prompt_id = ANY(%s::bigint[])", [int_array(sorted({values[0] for values in rows}))],
        )
        return {(p, k): (cid, duplicate) for p, k, cid, duplicate in cursor.fetchall()}


def _insert_preferences(preferences: list[ExternalPreference], report: ImportReport) -> None:
    existing = set(
        ExternalPreference.objects.filter(
            prompt_id__in={p.prompt_id for p in preferences},
            dedupe_key__in={p.dedupe_key for p in preferences},
        ).values_list("prompt_id", "dedupe_key")
    )
    new, seen = [], set(existing)
    for preference in preferences:
        pair = (preference.prompt_id, preference.dedupe_key)
        if pair in seen:
            report.preferences_skipped += 1
            continue
        seen.add(pair)
        new.append(preference)
    ExternalPreference.objects.bulk_create(new, ignore_conflicts=True)
    report.preferences_added += len(new)
