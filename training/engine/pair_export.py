"""Fast export of preference pairs (kinds ``pairs`` and ``dpo``): the same files, byte for
byte, as ``write_split_files(build_pairs(...), open_writer)``, without a Python dict per pair.

An item of K candidates gives up to C(K,2) pairs that all repeat the item's prompt and
provenance and each repeat two of its K answers. The row builders make one dict per pair
and the writers then encode every value of every dict again; here each value is prepared
once per item (or per candidate) and the pairs only index them:

- JSONL: the prompt, each answer and the item's trailing columns are JSON-encoded once by
  the writers' own encoder, and a pair's line is one ``%`` format of those fragments
  (`JsonlWriter.write_line`). The encoder is the one `JsonlWriter` uses, so the bytes are
  the same; NaN still raises.
- Parquet: a chunk of items becomes per-item and per-candidate Arrow arrays, and every
  column of the chunk's pairs is one ``take`` of them (pyarrow, in C), handed to
  `ParquetRowWriter.write_table`, which cuts the same ``batch_rows`` row groups.

Rows are validated as the builders do (`pairs_from_ranking`, unknown candidates), split by
prompt with the same `split_of`, and the external pairs follow the items, as in
``build_pairs``. A writer of another type gets the builder's rows (`write_split_files`).
No Django, nothing heavier than pyarrow (imported for Parquet only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

from training.engine.datasets import (
    STRENGTH_MARGIN,
    ExportOptions,
    ExternalPair,
    SnapshotItem,
    _answer,
    _check_known,
    _external_pair_row,
    _pair_rows,
    _prompt_value,
    _split,
    pair_safety_bin,
)
from training.engine.pairs import pairs_from_ranking
from training.engine.writers import (
    FileStats,
    JsonlWriter,
    ParquetRowWriter,
    RowWriter,
    _json_encoder,
    write_split_files,
)

CHUNK_ITEMS = 2048  # items per Arrow chunk: ~8 MB of answers at 1,000 characters, K=4

# The row layout of `datasets._item_pairs`, pair columns first (key order is the bytes).
_PAIR_LINE = (
    '{"prompt":%s,"chosen":%s,"rejected":%s,"ordinal_margin":%s,"chosen_id":%s,"rejected_id":%s,'
    '"chosen_model":%s,"rejected_model":%s,"chosen_origin":%s,"rejected_origin":%s,'
    '"chosen_temperature":%s,"rejected_temperature":%s,"chosen_seed":%s,"rejected_seed":%s,'
    '"chosen_safe":%s,"rejected_safe":%s,"safety_bin":%s%s'
)  # the last %s: the item's columns, from group_id on


def write_pair_files(
    items: Iterable[SnapshotItem],
    options: ExportOptions,
    kind: str,
    open_writer: Callable[[str], RowWriter],
    *,
    splits: Iterable[str] = ("train", "validation"),
    external: Iterable[ExternalPair] = (),
) -> dict[str, FileStats]:
    """Write the ``kind`` ("pairs" or "dpo") rows of these items, then the external pairs,
    to one file per split; returns each split's stats (as `write_split_files` does)."""
    if kind not in ("pairs", "dpo"):
        raise ValueError(f"write_pair_files writes pairs or dpo, not {kind!r}")
    writers = {split: open_writer(split) for split in splits}
    kinds = {type(writer) for writer in writers.values()}
    if kinds not in ({JsonlWriter}, {ParquetRowWriter}):
        for writer in writers.values():
            writer.abort()
        return write_split_files(_pair_rows(items, options, kind, external),
                                 open_writer, splits=splits)
    conversational = options.conversational_for(kind)
    try:
        if kinds == {JsonlWriter}:
            _write_jsonl(items, external, options, conversational, writers)
        else:
            _write_parquet(items, external, options, conversational, writers)
        return {split: writer.close() for split, writer in writers.items()}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


# --------------------------------------------------------------------------- JSONL


def _write_jsonl(items: Iterable[SnapshotItem], external: Iterable[ExternalPair], options: ExportOptions,
                 conversational: bool, writers: dict[str, Any]) -> None:
    encode = _json_encoder()
    scalar = _ScalarEncoder(encode)
    # Pair columns after the texts: '"ordinal_margin":M,"chosen_id":I,...,"rejected_seed":S'.
    small = _PAIR_LINE[_PAIR_LINE.index(',"ordinal_margin"'):]
    for item in items:
        if not item.tiers:
            continue
        pairs = pairs_from_ranking(item.tiers)  # validates the tiers
        _check_known(item.item_id, item.tiers, item.candidates)
        split = _split(item.group_id, options)
        write = writers[split].write_parts
        prompt_value = _prompt_value(item.prompt, conversational)
        prompt = b'{"prompt":' + (encode(prompt_value).encode("ascii") if conversational
                                  else scalar.text(prompt_value))
        tail = "," + encode({
            "group_id": item.group_id, "item_id": item.item_id, "preference_id": None,
            "source": "consensus" if item.judge is None else "ai", "axis": item.axis,
            "judge": item.judge, "strength": item.strength,
            "guideline_versions": list(item.guideline_versions), "item_agreement": item.agreement,
            "flags": list(item.flags), "split": split,
        })[1:] + "\n"
        fields = {}
        safety = item.safety or {}
        for c, i in item.candidates.items():
            text = encode([_answer(i.text)]).encode("ascii") if conversational else scalar.text(i.text)
            fields[c] = (text, int.__repr__(c) if type(c) is int else scalar(c), scalar(i.model),
                         scalar(i.origin), scalar(i.temperature), scalar(i.seed), scalar(safety.get(c)))
        fixed = None if item.strength is None else scalar(STRENGTH_MARGIN[item.strength])
        for better, worse, distance in pairs:
            b, w = fields[better], fields[worse]
            margin = scalar(float(distance)) if fixed is None else fixed
            bin_ = scalar(pair_safety_bin(safety.get(better), safety.get(worse))) if safety else "null"
            write((prompt, b',"chosen":', b[0], b',"rejected":', w[0],
                   (small % (margin, b[1], w[1], b[2], w[2], b[3], w[3], b[4], w[4], b[5], w[5],
                             b[6], w[6], bin_, tail))
                   .encode("ascii")))
    for pair in external:
        row = _external_pair_row(pair, options, conversational)
        writers[row["split"]].write_parts(((encode(row) + "\n").encode("ascii"),))


# Bytes JSON writes as themselves inside a string: printable ASCII but '"' and '\\'.
_PLAIN = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')


class _ScalarEncoder:
    """JSON of one value, as the writers' encoder writes it inside a row; short values
    (models, origins, temperatures, margins) are remembered by type and value (1, 1.0 and
    True are equal keys of a dict, not equal JSON)."""

    def __init__(self, encode: Callable[[Any], str]) -> None:
        from json.encoder import encode_basestring_ascii

        self._encode, self._string = encode, encode_basestring_ascii
        self._known: dict[tuple[type, Any], str] = {}

    def text(self, value: Any) -> bytes:
        """A long string's JSON as ASCII bytes: printable ASCII without quotes or
        backslashes is itself in quotes (what the encoder writes too, in half the time);
        anything else goes through the encoder."""
        if type(value) is str and value.isascii():
            raw = value.encode("ascii")
            if not raw.translate(None, _PLAIN):
                return b'"' + raw + b'"'
        return self(value).encode("ascii")

    def __call__(self, value: Any) -> str:
        kind = type(value)
        if kind is int:
            return int.__repr__(value)
        if kind is str and len(value) > 64:
            return self._string(value)
        key = (kind, value)
        known = self._known.get(key)
        if known is None:
            known = self._encode(value)  # raises for NaN and infinities, as the writer does
            if len(self._known) < 10_000:
                self._known[key] = known
        return known


# --------------------------------------------------------------------------- Parquet


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _write_parquet(items: Iterable[SnapshotItem], external: Iterable[ExternalPair], options: ExportOptions,
                   conversational: bool, writers: dict[str, Any]) -> None:
    schema = next(iter(writers.values())).schema
    for chunk in _chunks(items, CHUNK_ITEMS):
        table = _item_chunk_table(chunk, options, conversational, schema)
        if table is not None:
            _route(table, writers)
    for chunk in _chunks(external, CHUNK_ITEMS * 4):
        rows = [_external_pair_row(pair, options, conversational) for pair in chunk]
        _route(_rows_table(rows, schema), writers)


def _route(table: Any, writers: dict[str, Any]) -> None:
    """Each row to its split's writer, in order (a KeyError for an unknown split, as
    `write_split_files`)."""
    import pyarrow.compute as pc

    splits = table.column("split").unique().to_pylist()
    if len(splits) == 1:
        writers[splits[0]].write_table(table)
        return
    for split in splits:
        writer = writers[split]
        writer.write_table(table.filter(pc.equal(table.column("split"), split)))


def _rows_table(rows: list[dict[str, Any]], schema: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_arrays([pa.array([row[f.name] for row in rows], type=f.type) for f in schema],
                                schema=schema)


def _item_chunk_table(chunk: list[SnapshotItem], options: ExportOptions, conversational: bool,
                      schema: Any) -> Any:
    import pyarrow as pa

    # Per item (index i), per candidate (index j, all items' candidates in one list) and
    # per pair (item, better, worse candidate indexes and the margin).
    prompts, group_ids, item_ids, strengths, versions, agreements, flags, splits = ([] for _ in range(8))
    sources, axes, judges = [], [], []
    texts, cand_ids, models, origins, temperatures, seeds, safe = ([] for _ in range(7))
    pair_item, pair_better, pair_worse, margins, bins = [], [], [], [], []
    for item in chunk:
        if not item.tiers:
            continue
        pairs = pairs_from_ranking(item.tiers)
        _check_known(item.item_id, item.tiers, item.candidates)
        index = len(prompts)
        prompts.append(_prompt_value(item.prompt, conversational))
        group_ids.append(item.group_id)
        item_ids.append(item.item_id)
        sources.append("consensus" if item.judge is None else "ai")
        axes.append(item.axis)
        judges.append(item.judge)
        strengths.append(item.strength)
        versions.append(list(item.guideline_versions))
        agreements.append(item.agreement)
        flags.append(list(item.flags))
        splits.append(_split(item.group_id, options))
        position = {}
        safety = item.safety or {}
        for cid, info in item.candidates.items():
            position[cid] = len(texts)
            texts.append(info.text)
            cand_ids.append(cid)
            models.append(info.model)
            origins.append(info.origin)
            temperatures.append(info.temperature)
            seeds.append(info.seed)
            safe.append(safety.get(cid))
        fixed = None if item.strength is None else STRENGTH_MARGIN[item.strength]
        for better, worse, distance in pairs:
            pair_item.append(index)
            pair_better.append(position[better])
            pair_worse.append(position[worse])
            margins.append(float(distance) if fixed is None else fixed)
            bins.append(pair_safety_bin(safety.get(better), safety.get(worse)))
    if not pair_item:
        return None

    types = {f.name: f.type for f in schema}
    per_item = pa.array(pair_item, type=pa.int32())
    better, worse = pa.array(pair_better, type=pa.int32()), pa.array(pair_worse, type=pa.int32())
    if conversational:
        answers = pa.array([[_answer(text)] for text in texts], type=types["chosen"])
    else:
        answers = pa.array(texts, type=types["chosen"])
    candidate = {
        "id": pa.array(cand_ids, type=pa.int64()), "model": pa.array(models, type=pa.string()),
        "origin": pa.array(origins, type=pa.string()), "temperature": pa.array(temperatures, type=pa.float64()),
        "seed": pa.array(seeds, type=pa.int64()), "safe": pa.array(safe, type=pa.bool_()),
    }
    item_columns = {
        "prompt": prompts, "group_id": group_ids, "item_id": item_ids, "strength": strengths,
        "guideline_versions": versions, "item_agreement": agreements, "flags": flags, "split": splits,
        "source": sources, "axis": axes, "judge": judges,
    }
    n = len(pair_item)
    columns: dict[str, Any] = {
        "chosen": answers.take(better), "rejected": answers.take(worse),
        "ordinal_margin": pa.array(margins, type=types["ordinal_margin"]),
        "preference_id": pa.nulls(n, type=types["preference_id"]),
        "safety_bin": pa.array(bins, type=types["safety_bin"]),
    }
    for name, values in candidate.items():
        columns[f"chosen_{name}"] = values.take(better)
        columns[f"rejected_{name}"] = values.take(worse)
    for name, values in item_columns.items():
        columns[name] = pa.array(values, type=types[name]).take(per_item)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
