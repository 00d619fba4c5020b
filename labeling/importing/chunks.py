"""The import's reading side, on a thread of its own: the file's rows read, validated,
hashed and (while they turn out to be new) rendered to HTML, in chunks handed to the
writer through a queue of two.

Why a thread: the writer's client is synchronous, so while PostgreSQL inserts a chunk the
Python side waits, and while Python parses and renders the server idles; one after the
other they took about the sum of the two. psycopg releases the GIL while it waits on the
server, so reading the next chunk on this thread while the writer (the caller's thread,
which keeps the transaction and the connection: Django's connections are per thread)
writes the previous one puts both cores to work. This thread never touches the database.

The queue (core.read_ahead) holds two chunks, so memory stays bounded whatever the
file's size. An error on this thread (an unreadable file) is raised again in the
writer's thread; when the writer stops (an error, a cancelled run, a time limit) this
thread stops too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from core.read_ahead import read_ahead
from core.rendering import render_markdown, rendering_ready
from labeling.importing.rows import ParsedRow, text_hash
from training.engine.prompt_format import prompt_hash

Progress = Callable[[int, int], None]
QUEUE_CHUNKS = 2
POLL_SECONDS = 0.5  # how often a waiting writer passes on progress (heartbeats)


@dataclass
class Chunk:
    rows: list[ParsedRow] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # each row's prompt content hash
    # Each row's candidates' (dedupe key, is a repeat of an earlier answer of the row).
    keys: list[list[tuple[str, bool]]] = field(default_factory=list)
    html: dict[str, str] = field(default_factory=dict)  # text -> its HTML, rendered ahead

    def render(self, text: str) -> str:
        """`text`'s sanitized HTML: rendered ahead on the reading thread, or now."""
        found = self.html.get(text)
        return found if found is not None else str(render_markdown(text))

    def render_messages(self, messages: list[dict[str, str]]) -> list[str]:
        return [self.render(message["content"]) for message in messages]


def candidate_keys(row: ParsedRow) -> list[tuple[str, bool]]:
    """A row's candidates' dedupe keys: the text's hash and its occurrence within the row
    (an answer repeated in one row is stored twice, marked a duplicate)."""
    seen: dict[str, int] = {}
    keys = []
    for candidate in row.candidates:
        digest = text_hash(candidate.text)
        occurrence = seen.get(digest, 0)
        seen[digest] = occurrence + 1
        keys.append((f"import:{digest}:{occurrence}", occurrence > 0))
    return keys


class ChunkReader:
    """Reads the rows `read` yields (given a progress callback) into chunks of `size`, on
    a thread (`core.read_ahead`); the writer iterates `chunks()`.

    ``render_ahead``: the writer clears it when a chunk it wrote added nothing (a
    re-import), so HTML is then rendered only for the rows that will be inserted, by the
    writer; it sets it again when rows are new. ``skip_after_invalid``: after the first
    invalid row no more chunks are made (validate-first writes nothing more), but the
    rest of the file is still read so that every invalid row is listed."""

    def __init__(self, read: Callable[[Progress], Iterator[ParsedRow]], *, size: int,
                 invalid_count: Callable[[], int], skip_after_invalid: bool) -> None:
        # A generator: nothing is read until the thread iterates it.
        self._rows = read(self.report_progress)
        self._size = size
        self._invalid_count = invalid_count
        self._skip_after_invalid = skip_after_invalid
        self._chunks: Iterator[Chunk] | None = None
        self._stopped = False  # the writer has stopped: the reading stops at its next row
        self.render_ahead = True
        # The latest (done, total) the reading reported: the writer passes it on from
        # its own thread (a heartbeat is a database write, and may stop the run).
        self.progress_seen: tuple[int, int] | None = None

    def report_progress(self, done: int, total: int) -> None:
        """The reading's progress callback (runs on the reading thread)."""
        self.progress_seen = (done, total)

    def __enter__(self) -> ChunkReader:
        rendering_ready()  # registers cmark's extensions before two threads render
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopped = True
        if self._chunks is not None:
            self._chunks.close()  # stops the reading thread and waits for it

    def chunks(self, progress: Progress | None) -> Iterator[Chunk]:
        """The chunks in file order; raises what the reading raised."""
        passed_on = None

        def pass_progress_on() -> None:
            nonlocal passed_on
            seen = self.progress_seen
            if progress and seen is not None and seen != passed_on:
                passed_on = seen
                progress(*seen)

        self._chunks = read_ahead(self._produce(), depth=QUEUE_CHUNKS, name="import-reader",
                                  on_tick=pass_progress_on, tick_seconds=POLL_SECONDS)
        return self._chunks

    # ----------------------------------------------------------------- reading thread

    def _produce(self) -> Iterator[Chunk]:
        try:
            chunk = Chunk()
            for row in self._rows:
                if self._stopped:
                    return
                if self._skip_after_invalid and self._invalid_count():
                    chunk = Chunk()
                    continue
                self._add(chunk, row)
                if len(chunk.rows) >= self._size:
                    yield chunk
                    chunk = Chunk()
            if chunk.rows and not (self._skip_after_invalid and self._invalid_count()):
                yield chunk
        finally:
            close = getattr(self._rows, "close", None)
            if close is not None:
                close()  # the file, when the writer stopped first

    def _add(self, chunk: Chunk, row: ParsedRow) -> None:
        chunk.rows.append(row)
        chunk.hashes.append(prompt_hash(row.messages))
        chunk.keys.append(candidate_keys(row))
        if self.render_ahead:
            html = chunk.html
            for text in [message["content"] for message in row.messages] + [c.text for c in row.candidates]:
                if text not in html:
                    html[text] = str(render_markdown(text))
