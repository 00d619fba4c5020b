"""The validate-first import reads the file once: valid chunks are written inside one
transaction and rolled back when a later row is invalid or the file stops being
readable, so nothing is stored; the report lists the rows and errors and no writes.
Runs on SQLite here and on PostgreSQL (the COPY paths) with DATABASE_URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.importing import ImportFileError, prompts_import
from labeling.models import Candidate, Item, Project, Prompt


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question {i}?", "candidates": [f"yes {i}", f"no {i}", f"maybe {i}"]}
            for i in range(start, start + n)]


def write(path: Path, records: list) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in records))
    return path


def stored() -> tuple[int, int, int]:
    return Prompt.objects.count(), Candidate.objects.count(), Item.objects.count()


def test_a_bad_row_after_written_chunks_rolls_everything_back(project: Project, tmp_path: Path,
                                                              settings) -> None:  # noqa: ANN001
    settings.IMPORT_CHUNK_ROWS = 10  # three chunks written before the bad row
    path = write(tmp_path / "rows.jsonl", [*rows(35), {"prompt": ""}, *rows(5, 100), {"prompt": 7}])
    progress: list[tuple[int, int]] = []

    report = prompts_import(project=project, path=path, progress=lambda d, t: progress.append((d, t)))

    assert report.rejected and report.rows == 42 and report.invalid == 2
    assert [e["line"] for e in report.errors] == [36, 42]  # every invalid row, after the first too
    assert (report.prompts_added, report.candidates_added, report.items_added) == (0, 0, 0)
    assert stored() == (0, 0, 0)
    assert progress[-1][0] == progress[-1][1]  # the bar still ends full

    fixed = write(tmp_path / "fixed.jsonl", [*rows(35), *rows(5, 100)])
    first = prompts_import(project=project, path=fixed)
    again = prompts_import(project=project, path=fixed)
    assert (first.prompts_added, first.candidates_added, first.items_added) == (40, 120, 40)
    assert (again.prompts_added, again.candidates_added, again.items_added) == (0, 0, 0)
    assert stored() == (40, 120, 40)


def test_a_file_that_stops_being_readable_after_written_chunks_stores_nothing(
        project: Project, tmp_path: Path, settings) -> None:  # noqa: ANN001
    settings.IMPORT_CHUNK_ROWS = 10
    settings.IMPORT_MAX_LINE_BYTES = 1024
    path = write(tmp_path / "rows.jsonl", [*rows(25), json.dumps({"prompt": "x" * 5000}) + "\n"])

    with pytest.raises(ImportFileError) as raised:
        prompts_import(project=project, path=path)

    report = raised.value.report
    assert report.rejected and report.rows == 25
    assert (report.prompts_added, report.candidates_added, report.items_added) == (0, 0, 0)
    assert report.errors[-1]["line"] == 26
    assert stored() == (0, 0, 0)
