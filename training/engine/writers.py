"""Streaming writers for snapshot rows: JSONL and Parquet files, and the manifest.

Rows come from the generators in ``training.engine.datasets`` and go to disk in batches,
so memory stays flat whatever the snapshot's size. Every writer

- writes to a hidden temporary file in the target folder and renames it into place on
  `close`, so a file under its final name is always complete (an error or `abort`
  removes the temporary file);
- hashes the bytes as they are written, and `close` returns ``FileStats(rows, sha256,
  bytes)`` of the finished file.

A snapshot folder is complete when its ``manifest.json`` exists: `write_manifest` is
called last, checks every listed file against its stats, and writes atomically.

    schema = parquet_schema("pairs", conversational=options.conversational_for("pairs"))
    stats = write_split_files(build_pairs(items, options),
                              lambda split: ParquetRowWriter(folder / f"pairs-{split}.parquet", schema))
    write_manifest(folder, files={f"pairs-{s}.parquet": st for s, st in stats.items()}, metadata={...})

pyarrow is imported when a Parquet writer or schema is made; `save_to_disk` imports
``datasets``. Nothing here imports torch or Django.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

KINDS = ("pairs", "dpo", "sft", "kto", "raw", "ratings")
# Short, repetitive columns where a dictionary pays; long texts are written plain (their
# dictionary would overflow its page in the first few rows and fall back anyway).
_DICTIONARY_COLUMNS = [
    "group_id", "source", "split", "model", "origin", "chosen_model", "rejected_model",
    "chosen_origin", "rejected_origin", "annotator", "flags", "axis", "safety_bin",
]
QUEUED_BATCHES = 2  # batches waiting for the background thread: bounds memory


class FileStats(NamedTuple):
    """What a writer wrote: row count, sha256 (hex) and size in bytes of the final file."""

    rows: int
    sha256: str
    bytes: int


class RowWriter(Protocol):
    def write(self, row: Mapping[str, Any]) -> None: ...
    def close(self) -> FileStats: ...
    def abort(self) -> None: ...


# --------------------------------------------------------------------------- writers


class JsonlWriter:
    """One JSON object per line: compact, ASCII (non-ASCII characters as ``\\uXXXX``
    escapes, the fastest encoding in CPython's json), NaN and infinities refused (not JSON).
    Lines are encoded here; hashing and writing happen on a background thread."""

    def __init__(self, path: Path, *, buffer_rows: int = 1000) -> None:
        self.path = Path(path)
        self._sink = _HashingSink(self.path)
        self._background = _Background(self._sink.write)
        self._encode = _json_encoder()
        self._lines: list[str] = []
        self._parts: list[bytes] = []  # `write_parts`' rows not yet handed to the background
        self._part_rows = 0
        self._buffer_rows = buffer_rows
        self.rows = 0

    def write(self, row: Mapping[str, Any]) -> None:
        self._lines.append(self._encode(row))
        self.rows += 1
        if len(self._lines) >= self._buffer_rows:
            self._flush()

    def write_parts(self, parts: Iterable[bytes], rows: int = 1) -> None:
        """``rows`` rows already encoded by this writer's encoder, as ASCII byte pieces, each
        row ending in its newline (``training.engine.pair_export`` hands an item's pairs in
        one call). Not mixed with `write` in one file."""
        if self._lines:
            raise ValueError("write_parts after write: one file takes rows one way")
        self._parts += parts
        self.rows += rows
        self._part_rows += rows
        if self._part_rows >= self._buffer_rows:
            self._background.submit(b"".join(self._parts))
            self._parts, self._part_rows = [], 0

    def close(self) -> FileStats:
        self._flush()
        self._background.finish()
        return self._sink.commit(self.rows)

    def abort(self) -> None:
        self._background.finish(raise_error=False)
        self._sink.discard()

    def _flush(self) -> None:
        if self._parts:
            self._background.submit(b"".join(self._parts))
            self._parts, self._part_rows = [], 0
        if self._lines:
            self._lines.append("")  # a newline after the last line too
            self._background.submit("\n".join(self._lines).encode("ascii"))
            self._lines = []


class ParquetRowWriter:
    """Parquet with a fixed schema, one row group per ``batch_rows`` rows, zstd.

    Rows are turned into Arrow batches here; compression, hashing and writing happen on
    a background thread (pyarrow releases the GIL), which overlaps them with building
    the next batch. Every row must have exactly the schema's columns: a builder that
    drifts from its schema fails here rather than writing nulls."""

    def __init__(self, path: Path, schema: pa.Schema, *, batch_rows: int = 10_000,
                 compression: str = "zstd") -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self._names = set(schema.names)
        self._batch: list[Mapping[str, Any]] = []
        self._tables: list[pa.Table] = []  # `write_table`'s rows not yet in a batch
        self._table_rows = 0
        self.batch_rows = batch_rows  # rows per row group
        self._sink = _HashingSink(self.path)
        self._writer = pq.ParquetWriter(
            self._sink, schema, compression=compression,
            use_dictionary=[n for n in schema.names if n in _DICTIONARY_COLUMNS],
        )
        self._background = _Background(self._writer.write_batch)

    def write(self, row: Mapping[str, Any]) -> None:
        if row.keys() != self._names:
            raise ValueError(
                f"row does not match the {self.path.name} schema: "
                f"missing {sorted(self._names - row.keys())}, unexpected {sorted(row.keys() - self._names)}"
            )
        self._batch.append(row)
        self.rows += 1
        if len(self._batch) >= self.batch_rows:
            self._flush()

    def write_table(self, table: pa.Table) -> None:
        """Rows as an Arrow table of this schema, cut into the same ``batch_rows`` row
        groups as `write` would make (so the file is the same bytes). Not mixed with
        `write` in one file."""
        if self._batch:
            raise ValueError("write_table after write: one file takes rows one way")
        if table.schema != self.schema:
            raise ValueError(f"table does not match the {self.path.name} schema")
        self._tables.append(table)
        self._table_rows += table.num_rows
        self.rows += table.num_rows
        while self._table_rows >= self.batch_rows:
            self._flush_tables(self.batch_rows)

    def close(self) -> FileStats:
        self._flush()
        self._flush_tables(self._table_rows)
        self._background.finish()
        self._writer.close()
        return self._sink.commit(self.rows)

    def abort(self) -> None:
        self._background.finish(raise_error=False)
        try:
            self._writer.close()
        finally:
            self._sink.discard()

    def _flush_tables(self, rows: int) -> None:
        import pyarrow as pa

        if not rows:
            return
        table = pa.concat_tables(self._tables)
        head = table.slice(0, rows).combine_chunks()
        rest = table.slice(rows)
        self._tables, self._table_rows = ([rest] if rest.num_rows else []), rest.num_rows
        for batch in head.to_batches(max_chunksize=rows):
            self._background.submit(batch)

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._batch:
            return
        columns = [pa.array(list(map(itemgetter(f.name), self._batch)), type=f.type) for f in self.schema]
        self._background.submit(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self._batch = []


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: Path) -> FileStats:
    """Stream rows to a JSONL file; returns its stats."""
    return _write_all(rows, JsonlWriter(path))


def write_parquet(rows: Iterable[Mapping[str, Any]], path: Path, schema: pa.Schema, *,
                  batch_rows: int = 10_000) -> FileStats:
    """Stream rows to a Parquet file with the given schema (see `parquet_schema`)."""
    return _write_all(rows, ParquetRowWriter(path, schema, batch_rows=batch_rows))


def write_split_files(
    rows: Iterable[Mapping[str, Any]],
    open_writer: Callable[[str], RowWriter],
    *,
    splits: Iterable[str] = ("train", "validation"),
) -> dict[str, FileStats]:
    """Route each row to its split's writer by the row's ``split`` column, in one pass.

    Every split gets a file, even an empty one, so a consumer can always load both."""
    writers = {split: open_writer(split) for split in splits}
    try:
        for row in rows:
            writers[row["split"]].write(row)
        return {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


# --------------------------------------------------------------------------- schemas


def parquet_schema(kind: str, *, conversational: bool, rating_axes: Sequence[str] = ()) -> pa.Schema:
    """The fixed Arrow schema of a kind's rows: column order as the builders write them,
    text as ``string`` (standard) or ``list<struct<role, content>>`` (conversational).
    ``rating_axes``: the ``ratings`` kind's score columns (a float each), in order."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    messages = pa.list_(message)
    text = messages if conversational else pa.string()
    ints, strings = pa.list_(pa.int64()), pa.list_(pa.string())
    provenance = [
        ("group_id", pa.string()), ("item_id", pa.int64()), ("candidate_id", pa.int64()),
        ("model", pa.string()), ("origin", pa.string()), ("temperature", pa.float64()), ("seed", pa.int64()),
        ("guideline_versions", ints), ("item_agreement", pa.float64()), ("flags", strings),
        ("split", pa.string()),
    ]
    if kind in ("pairs", "dpo"):
        fields = [("prompt", text), ("chosen", text), ("rejected", text), ("ordinal_margin", pa.float64())]
        for side in ("chosen", "rejected"):
            fields.append((f"{side}_id", pa.int64()))
        for column, kind_type in (("model", pa.string()), ("origin", pa.string()),
                                  ("temperature", pa.float64()), ("seed", pa.int64())):
            fields += [(f"chosen_{column}", kind_type), (f"rejected_{column}", kind_type)]
        fields += [("chosen_safe", pa.bool_()), ("rejected_safe", pa.bool_()), ("safety_bin", pa.string())]
        fields += [
            ("group_id", pa.string()), ("item_id", pa.int64()), ("preference_id", pa.int64()),
            ("source", pa.string()), ("axis", pa.string()), ("judge", pa.int64()), ("strength", pa.int64()),
            ("guideline_versions", ints),
            ("item_agreement", pa.float64()), ("flags", strings), ("split", pa.string()),
        ]
    elif kind == "sft":
        fields = [("messages", messages)] if conversational else [("prompt", text), ("completion", text)]
        fields += provenance
    elif kind == "ratings":
        fields = [("prompt", text), ("response", text), *((axis, pa.float64()) for axis in rating_axes),
                  *provenance]
    elif kind == "kto":
        fields = [("prompt", text), ("completion", text), ("label", pa.bool_()), *provenance]
    elif kind == "raw":
        candidate = pa.struct([
            ("id", pa.int64()), ("text", pa.string()), ("model", pa.string()), ("origin", pa.string()),
            ("temperature", pa.float64()), ("seed", pa.int64()),
        ])
        fields = [
            ("ranking_id", pa.int64()), ("item_id", pa.int64()), ("group_id", pa.string()),
            ("annotator", pa.string()), ("prompt", messages), ("candidates", pa.list_(candidate)),
            ("tiers", pa.list_(ints)), ("display_order", ints), ("guideline_version", pa.int64()),
            ("flags", strings), ("strength", pa.int64()), ("duration_ms", pa.int64()),
            ("created_at", pa.string()), ("source", pa.string()), ("judge", pa.int64()),
            ("labels", pa.list_(pa.struct([
                ("axis", pa.string()), ("tiers", pa.list_(ints)),
                ("scores", pa.list_(pa.struct([("id", pa.int64()), ("score", pa.int64())]))),
            ]))),
            ("safety", pa.list_(pa.struct([("id", pa.int64()), ("safe", pa.bool_())]))),
            ("split", pa.string()),
        ]
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {KINDS}")
    return pa.schema(fields)


# --------------------------------------------------------------------------- HF


def save_to_disk(parquet_files: Mapping[str, Path], target: Path) -> Path:
    """Also save finished Parquet files as a ``datasets.DatasetDict`` (one split per
    entry) with ``save_to_disk``, for ``datasets.load_from_disk``. The Arrow cache that
    ``datasets`` builds on the way goes to a temporary folder next to ``target``."""
    import tempfile

    from datasets import Dataset, DatasetDict

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".hf-cache-") as cache:
        splits = {name: Dataset.from_parquet(str(path), cache_dir=cache)
                  for name, path in parquet_files.items()}
        DatasetDict(splits).save_to_disk(str(target))
    return target


# --------------------------------------------------------------------------- internals


class _HashingSink:
    """A binary file that hashes and counts what is written; lives under a temporary
    name until `commit` renames it into place. Also passed to pyarrow as its sink."""

    def __init__(self, path: Path) -> None:
        self.final = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/discard
        self._digest = hashlib.sha256()
        self._size = 0

    # The file-object surface pyarrow's PythonFile uses.
    @property
    def closed(self) -> bool:
        return self._file.closed

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._size += view.nbytes
        return self._file.write(view)

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        pass  # pyarrow closes its sink when its writer closes; the file is closed in commit

    def commit(self, rows: int) -> FileStats:
        self._file.close()
        os.replace(self.tmp, self.final)
        return FileStats(rows=rows, sha256=self._digest.hexdigest(), bytes=self._size)

    def discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def _write_all(rows: Iterable[Mapping[str, Any]], writer: RowWriter) -> FileStats:
    try:
        for row in rows:
            writer.write(row)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


class _Background:
    """Runs ``work(item)`` for each submitted item on one daemon thread, in order, with at
    most QUEUED_BATCHES items waiting. An error in the thread is raised in the caller at
    the next `submit` or at `finish`."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self._work = work
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_BATCHES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ordinal-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        self._raise()
        self._queue.put(item)

    def finish(self, *, raise_error: bool = True) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if raise_error:
            self._raise()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is None:  # after an error, drain without working so submit never blocks
                try:
                    self._work(item)
                except BaseException as error:  # handed to the caller's thread
                    self._error = error

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


_STOP = object()


def _json_encoder() -> Callable[[Any], str]:
    """A compact, ASCII, NaN-refusing JSON encoder. CPython's C encoder is made once here
    rather than per call (as ``json.dumps`` does), which is a good part of its cost on
    small rows; without the C accelerator, the stdlib encoder."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    def refuse(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    if c_make_encoder is None:  # pragma: no cover - CPython always has _json
        return json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    encode = c_make_encoder(None, refuse, encode_basestring_ascii, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))
