"""The import reads on a thread of its own while it writes (labeling/importing/chunks.py):
chunks arrive in file order, hashed and keyed; a failing write stops the reading and
stores nothing; progress (a heartbeat, a database write) is passed on from the writer's
thread; a re-import renders no HTML beyond the chunks read before it knew."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

import labeling.importing as importing
from labeling.importing import prompts_import
from labeling.importing.chunks import QUEUE_CHUNKS, ChunkReader
from labeling.importing.rows import ParsedCandidate, ParsedRow
from labeling.models import Candidate, Item, Project, Prompt
from training.engine.prompt_format import prompt_hash


def rows(n: int) -> list[dict]:
    return [{"prompt": f"Question {i}?", "candidates": [f"yes {i}", f"no {i}"]} for i in range(n)]


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "import-reader"]


def test_chunks_come_in_file_order_with_hashes_and_candidate_keys() -> None:
    parsed = [ParsedRow(line=i, messages=[{"role": "user", "content": f"q{i}"}],
                        candidates=[ParsedCandidate("a"), ParsedCandidate("b"), ParsedCandidate("a")])
              for i in range(1, 8)]

    with ChunkReader(lambda _progress: iter(parsed), size=3, invalid_count=lambda: 0,
                     skip_after_invalid=True) as reader:
        chunks = list(reader.chunks(None))

    assert [[row.line for row in chunk.rows] for chunk in chunks] == [[1, 2, 3], [4, 5, 6], [7]]
    assert chunks[1].hashes == [prompt_hash(row.messages) for row in parsed[3:6]]
    keys = chunks[0].keys[0]
    assert [duplicate for _, duplicate in keys] == [False, False, True]
    assert keys[0][0] != keys[1][0] and keys[0][0].rsplit(":", 1)[0] == keys[2][0].rsplit(":", 1)[0]
    assert chunks[0].html["q1"] == chunks[0].render("q1") and "a" in chunks[0].html


def test_a_failing_write_stops_the_reading_thread_and_stores_nothing(
        project: Project, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    settings.IMPORT_CHUNK_ROWS = 10
    path = write(tmp_path / "rows.jsonl", rows(500))
    written = []
    real = importing._import_chunk

    def fail_on_the_third(*args: object, **kwargs: object) -> None:
        if len(written) == 2:
            raise RuntimeError("the database went away")
        written.append(1)
        real(*args, **kwargs)

    monkeypatch.setattr(importing, "_import_chunk", fail_on_the_third)

    with pytest.raises(RuntimeError, match="went away"):
        prompts_import(project=project, path=path)

    assert reader_threads() == []
    assert (Prompt.objects.count(), Candidate.objects.count(), Item.objects.count()) == (0, 0, 0)


def test_an_error_in_the_progress_callback_stops_the_import(project: Project, tmp_path: Path,
                                                            settings) -> None:  # noqa: ANN001
    """A cancelled run raises from its heartbeat: the reading stops with the writing."""
    settings.IMPORT_CHUNK_ROWS = 10
    path = write(tmp_path / "rows.jsonl", rows(3000))
    threads: list[str] = []

    def progress(done: int, total: int) -> None:
        threads.append(threading.current_thread().name)
        if done > 0:
            raise KeyboardInterrupt  # as a cancelled run's RunStopped: not an Exception

    with pytest.raises(KeyboardInterrupt):
        prompts_import(project=project, path=path, progress=progress)

    assert set(threads) == {threading.current_thread().name}
    assert reader_threads() == []
    assert Prompt.objects.count() == 0


def test_a_reimport_renders_nothing_after_the_chunks_read_ahead(
        project: Project, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    settings.IMPORT_CHUNK_ROWS = 10
    path = write(tmp_path / "rows.jsonl", rows(200))
    prompts_import(project=project, path=path)
    rendered: list[str] = []
    import labeling.importing.chunks as chunks

    real = chunks.render_markdown
    monkeypatch.setattr(chunks, "render_markdown", lambda text: rendered.append(text) or real(text))

    again = prompts_import(project=project, path=path)

    assert (again.prompts_added, again.candidates_added, again.items_added) == (0, 0, 0)
    # At most the chunks read before the first write showed nothing new: the one being
    # written, those queued, the one being filled (3 texts a row).
    assert len(rendered) <= (QUEUE_CHUNKS + 2) * 10 * 3 < 200 * 3
