"""Reading import files (JSONL, CSV or Parquet, gzip transparently) into records, within
bounds, so that no file can take a worker's memory or crash the import.

Each record comes with its line number (its row number for Parquet) or, when it cannot
be read, with an `InvalidRow` saying why: bad UTF-8 or JSON, JSON nested too deeply, the
constants NaN and Infinity (not JSON; PostgreSQL refuses them), more CSV cells than
columns. What makes the whole file unreadable raises `ImportFileError` at once: an unknown
or corrupt file, a line over IMPORT_MAX_LINE_BYTES, a gzip inflating past
IMPORT_MAX_DECOMPRESSED_BYTES, a CSV header wider than the columns a row can use.

Lines are read with a bounded readline, so memory is bounded by the line limit, never
by the file: a gzip bomb of one endless line fails after IMPORT_MAX_LINE_BYTES.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings

Record = tuple[int, "dict[str, Any] | InvalidRow"]
# The named CSV columns (prompt, messages, system, candidates, metadata, chosen, rejected,
# margin) and candidate_N / model_N for the largest K a project may have (16).
CSV_NAMED_COLUMNS = 8 + 2 * 16
QUOTED_CELL = re.compile(rb'"[^"]*"')


class InvalidRow(ValueError):
    """A row that cannot be imported; the message says why in words a person can act on."""


class ImportFileError(ValueError):
    """The file as a whole cannot be read (unknown format, unreadable Parquet, a limit).
    `line` is where reading stopped, when known; `report` is the import's report up to
    that point (prompts_import sets it), so the rows already checked stay listed."""

    def __init__(self, reason: str, *, line: int | None = None) -> None:
        super().__init__(reason)
        self.line = line
        self.report: Any = None


@dataclass(frozen=True)
class ReadLimits:
    max_line_bytes: int
    max_decompressed_bytes: int
    max_csv_columns: int

    @classmethod
    def from_settings(cls) -> ReadLimits:
        return cls(
            max_line_bytes=settings.IMPORT_MAX_LINE_BYTES,
            max_decompressed_bytes=settings.IMPORT_MAX_DECOMPRESSED_BYTES,
            max_csv_columns=CSV_NAMED_COLUMNS + settings.IMPORT_MAX_METADATA_KEYS,
        )


class _CountingReader(io.RawIOBase):
    """Wraps the file on disk so progress can be reported in compressed bytes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


def detect_format(path: Path, name: str | None = None) -> str:
    lowered = (name or path.name).lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"),
                        (".csv", "csv"), (".parquet", "parquet")):
        if lowered.endswith(suffix):
            return fmt
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                head = gz.read(64).lstrip()
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportFileError(f"not a readable gzip file: {exc}") from None
    if head[:1] == b"{":
        return "jsonl"
    raise ImportFileError(
        "unknown file type: use .jsonl, .csv or .parquet (optionally .gz)"
    )


def iter_records(path: Path, fmt: str, counter: _CountingReader,
                 limits: ReadLimits | None = None) -> Iterator[Record]:
    """Yield (line number, record or the reason it is unreadable)."""
    limits = limits or ReadLimits.from_settings()
    if fmt == "parquet":
        yield from _iter_parquet(path, limits)
        return
    buffered = io.BufferedReader(counter, buffer_size=1 << 20)
    gzipped = buffered.peek(2)[:2] == b"\x1f\x8b"
    stream: IO[bytes] = gzip.GzipFile(fileobj=buffered) if gzipped else buffered
    # A plain file is as big as it is (the upload limit bounds it); only inflating is capped.
    lines = bounded_lines(stream, max_line_bytes=limits.max_line_bytes,
                          max_total_bytes=limits.max_decompressed_bytes if gzipped else None)
    if fmt == "jsonl":
        yield from _iter_jsonl(lines)
    else:
        yield from _iter_csv(lines, limits)


def bounded_lines(stream: IO[bytes], *, max_line_bytes: int,
                  max_total_bytes: int | None) -> Iterator[bytes]:
    """The stream's lines (with their newline), each read with a bounded readline: a line
    longer than `max_line_bytes`, or more than `max_total_bytes` in all, stops the file
    before it is held in memory (`for line in stream` would read an endless line whole)."""
    total = 0
    line_no = 0
    while line := stream.readline(max_line_bytes + 1):
        line_no += 1
        total += len(line)
        if max_total_bytes is not None and total > max_total_bytes:
            raise ImportFileError(
                f"the file inflates to more than {max_total_bytes} bytes, the limit "
                "(IMPORT_MAX_DECOMPRESSED_BYTES); split it or raise the limit", line=line_no)
        if len(line) > max_line_bytes:
            raise ImportFileError(
                f"line {line_no} is longer than {max_line_bytes} bytes, the limit "
                "(IMPORT_MAX_LINE_BYTES): is it one record per line?", line=line_no)
        yield line


# --------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> None:
    raise InvalidRow(f"{name} is not a JSON number (NaN and Infinity cannot be stored)")


# NaN, Infinity and -Infinity are Python's extensions to JSON: PostgreSQL's jsonb refuses
# them, so a row holding one would pass validation and then fail its chunk's INSERT.
_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def json_value(text: str) -> Any:
    """Parse JSON text; every way it can fail becomes an InvalidRow with the reason."""
    try:
        return _STRICT_JSON.decode(text)
    except InvalidRow:
        raise
    except RecursionError:
        raise InvalidRow("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidRow(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidRow(f"invalid JSON: {exc}") from None


def _iter_jsonl(lines: Iterator[bytes]) -> Iterator[Record]:
    for line_no, raw in enumerate(lines, 1):
        if raw.isspace():
            continue
        try:
            record = json_value(raw.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield line_no, InvalidRow(f"not UTF-8 (byte {exc.start})")
            continue
        except InvalidRow as exc:
            yield line_no, exc
            continue
        if not isinstance(record, dict):
            yield line_no, InvalidRow("each line must be a JSON object")
            continue
        yield line_no, record


# --------------------------------------------------------------------------- CSV


class _CsvLines:
    """Feeds csv.reader decoded lines, and stops a record (which spans several lines when
    a quoted cell holds newlines) from growing past the line limit."""

    def __init__(self, lines: Iterator[bytes], max_bytes: int) -> None:
        self.lines = lines
        self.max_bytes = max_bytes
        self.record_bytes = 0
        self.line_no = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.line_no += 1
            self.record_bytes += len(line)
            if self.record_bytes > self.max_bytes:
                raise ImportFileError(
                    f"a CSV row passes {self.max_bytes} bytes by line {self.line_no}, the limit "
                    "(IMPORT_MAX_LINE_BYTES): is a quote left open?", line=self.line_no)
            yield line.decode("utf-8", errors="surrogateescape")


def _iter_csv(lines: Iterator[bytes], limits: ReadLimits) -> Iterator[Record]:
    first = next(lines, None)
    if first is None:
        return
    # Counted on the raw line, before csv builds a list of the cells (and a record a
    # dict of them): a header of 10^6 columns is refused without holding 10^6 strings.
    columns = QUOTED_CELL.sub(b"", first).count(b",") + 1
    if columns > limits.max_csv_columns:
        raise ImportFileError(
            f"the CSV header has {columns} columns; a row can use at most "
            f"{limits.max_csv_columns} (IMPORT_MAX_METADATA_KEYS extra columns)", line=1)
    # The field limit is the row limit: csv's own (131,072 characters) raised mid-row and
    # lost its place in the file. A field too long for what it holds (a prompt over
    # IMPORT_MAX_TEXT_CHARS) is then reported as that row's error. The limit is
    # process-wide, and the same in every import of this process.
    csv.field_size_limit(limits.max_line_bytes)
    source = _CsvLines(_prepend(first, lines), limits.max_line_bytes)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None:
        return
    source.record_bytes = 0
    start = reader.line_num + 1
    for cells in reader:
        source.record_bytes = 0
        line_no, start = start, reader.line_num + 1
        if not cells:  # a blank line
            continue
        if len(cells) > len(header):
            yield line_no, InvalidRow("more cells than header columns")
            continue
        try:
            yield line_no, _record_from_csv(dict(zip(header, cells, strict=False)))
        except InvalidRow as exc:
            yield line_no, exc


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _record_from_csv(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    candidates: list[dict[str, str]] = []
    for key, value in row.items():
        if value == "":
            continue
        if any("\udc80" <= ch <= "\udcff" for ch in value):
            raise InvalidRow(f"not UTF-8 (column {key!r})")
        if key in {"messages", "candidates", "metadata"} or (
            key in {"prompt", "chosen", "rejected"} and value.lstrip().startswith("[")
        ):
            try:
                record[key] = json_value(value)
            except InvalidRow as exc:
                raise InvalidRow(f"column {key!r}: {exc}") from None
        elif re.fullmatch(r"candidate_\d+", key):
            model = row.get(key.replace("candidate_", "model_")) or ""
            candidates.append({"text": value, "model": model})
        elif not re.fullmatch(r"model_\d+", key):
            record[key] = value
    if candidates:
        record.setdefault("candidates", candidates)
    return record


# --------------------------------------------------------------------------- Parquet


def _iter_parquet(path: Path, limits: ReadLimits) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise ImportFileError(f"not a readable Parquet file: {exc}") from None
    meta = parquet.metadata
    inflated = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if inflated > limits.max_decompressed_bytes:
        raise ImportFileError(
            f"the Parquet file holds {inflated} bytes uncompressed, more than the limit of "
            f"{limits.max_decompressed_bytes} (IMPORT_MAX_DECOMPRESSED_BYTES)")
    row_no = 0
    batches = parquet.iter_batches(batch_size=256)
    while True:
        try:
            batch = next(batches, None)
            records = [] if batch is None else batch.to_pylist()
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            raise ImportFileError(f"row {row_no + 1} and after could not be read: {exc}",
                                  line=row_no + 1) from None
        if batch is None:
            return
        for record in records:
            row_no += 1
            yield row_no, _json_compatible(record)


def _json_compatible(value: Any) -> Any:
    """Parquet values as JSON can hold them: timestamps, dates and times become ISO 8601
    strings (a struct column of them used to fail its chunk's INSERT). Other types JSON
    has no form for (binary, decimal, duration) are left for validation to refuse."""
    if isinstance(value, dict):
        return {key: _json_compatible(item) for key, item in value.items()}
    if isinstance(value, list | tuple):  # a map column comes as (key, value) tuples
        return [_json_compatible(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return value
