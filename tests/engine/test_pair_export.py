"""The fast pair export (training.engine.pair_export) writes the same bytes as the row
builders + writers (build_pairs / build_dpo -> write_split_files) for the same snapshot:
JSONL and Parquet, text and messages, ties, strengths, unranked items, AI judges' items, axes and
safety marks (all, some or none of an item's answers marked), NaN-free floats,
None models, non-ASCII text, two splits, external pairs, and row groups cut across
chunks. It also refuses what the builders refuse. No database."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from training.engine import pair_export
from training.engine.datasets import (
    CandidateInfo,
    ExportOptions,
    ExternalPair,
    SnapshotItem,
    build_dpo,
    build_pairs,
)
from training.engine.pairs import InvalidRankingError
from training.engine.writers import JsonlWriter, ParquetRowWriter, parquet_schema, write_split_files

# Plain ASCII (written as is) and every kind the encoder escapes: quotes, backslashes,
# control characters, DEL, non-ASCII, surrogate pairs.
TEXTS = ("answer {c} {x}", "answer {c} ✓ {x}", 'say "{c}" {x}', "C:\\dir\\{c} {x}", "line\n{c}\t{x}",
         "del\x7f{c} {x}", "emoji 🙂 {c}{x}", "")
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour, «vite»."}]


def snapshot(n_items: int, seed: int = 3) -> tuple[list[SnapshotItem], list[ExternalPair]]:
    rng = random.Random(seed)
    items = []
    for item_id in range(1, n_items + 1):
        k = rng.choice((2, 3, 4, 5))
        ids = rng.sample(range(1, 10_000), k)
        cands = {
            c: CandidateInfo(rng.choice(TEXTS).format(c=c, x="x" * rng.randint(0, 90)),
                             model=rng.choice((None, "m-a", "m-b")),
                             temperature=rng.choice((None, 0.7, 1.0)), seed=rng.choice((None, c)),
                             origin=rng.choice(("model", "human")))
            for c in ids
        }
        shape = rng.random()
        if shape < 0.1:
            tiers: list[list[int]] = []  # unranked: no pairs
        elif shape < 0.3:  # ties
            tiers = [ids[:2], ids[2:]] if k > 2 else [ids]
        else:
            tiers = [[c] for c in ids]
        prompt = CHAT if item_id % 3 == 0 else [{"role": "user", "content": f"Prompt {item_id % 50}"}]
        items.append(SnapshotItem(
            item_id, prompt, cands, tiers, group_id="" if item_id % 2 else f"g-{item_id % 40}",
            agreement=rng.choice((None, 0.5, 0.875)), guideline_versions=rng.choice(((), (1,), (1, 2))),
            strength=rng.choice((None, 1, 4)) if k == 2 else None,
            flags=rng.choice(((), ("unsafe",), ("all_bad", "needs_expert"))),
            judge=rng.choice((None, None, 7)),  # an AI judge's ranking: source "ai" and its id
            axis=rng.choice(("overall", "harmless")),
            # Safety marks: none asked, every answer marked, or some answers unmarked.
            safety=rng.choice((None, {c: rng.random() < 0.6 for c in ids},
                               {c: rng.random() < 0.5 for c in ids[1:]})),
        ))
    external = [
        ExternalPair(p, CHAT, f"chosen {p}", f"rejected {p} ü", source=rng.choice(("", "hh")),
                     margin=rng.choice((None, 1.5)), chosen_id=p, rejected_id=p + 1, chosen_model="x",
                     axis=rng.choice(("overall", "harmless")))
        for p in range(1, 40)
    ]
    return items, external


def export_both(tmp_path: Path, fmt: str, kind: str, options: ExportOptions, items, external,
                batch_rows: int = 10_000) -> tuple[dict, dict, list[Path], list[Path]]:
    schema = parquet_schema(kind, conversational=options.conversational_for(kind))
    splits = ("train", "validation") if options.validation_fraction > 0 else ("train",)

    def opener(folder: Path):
        def open_writer(split: str):
            path = folder / f"{kind}-{split}.{fmt}"
            if fmt == "jsonl":
                return JsonlWriter(path)
            return ParquetRowWriter(path, schema, batch_rows=batch_rows)
        return open_writer

    build = build_pairs if kind == "pairs" else build_dpo
    old = write_split_files(build(items, options, external=external), opener(tmp_path / "old"), splits=splits)
    new = pair_export.write_pair_files(items, options, kind, opener(tmp_path / "new"), splits=splits,
                                       external=external)
    return (old, new, sorted((tmp_path / "old").iterdir()), sorted((tmp_path / "new").iterdir()))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", ["pairs", "dpo"])
@pytest.mark.parametrize("options", [
    ExportOptions(),
    ExportOptions(conversational=True, validation_fraction=0.3, split_seed=7),
    ExportOptions(conversational=False, validation_fraction=0.5, split_seed=1),
], ids=["default", "messages-split", "text-split"])
def test_the_fast_export_writes_the_builders_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   fmt: str, kind: str, options: ExportOptions) -> None:
    monkeypatch.setattr(pair_export, "TABLE_ROWS", 350)  # tables of 3 row groups, items cut between them
    items, external = snapshot(400)

    old, new, old_files, new_files = export_both(tmp_path, fmt, kind, options, items, external, batch_rows=101)

    assert old == new
    assert sum(stats.rows for stats in new.values()) > 500
    assert [p.name for p in old_files] == [p.name for p in new_files]
    for before, after in zip(old_files, new_files, strict=True):
        assert before.read_bytes() == after.read_bytes(), before.name


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_default_batches_give_the_same_bytes_too(tmp_path: Path, fmt: str) -> None:
    items, external = snapshot(3000, seed=11)

    old, new, _, _ = export_both(tmp_path, fmt, "pairs", ExportOptions(), items, external)

    assert old == new and new["train"].rows > 10_000  # more than one row group


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_fast_export_refuses_what_the_builders_refuse(tmp_path: Path, fmt: str) -> None:
    schema = parquet_schema("pairs", conversational=False)
    cands = {1: CandidateInfo("a"), 2: CandidateInfo("b")}

    def open_writer(split: str):
        path = tmp_path / f"pairs-{split}.{fmt}"
        return JsonlWriter(path) if fmt == "jsonl" else ParquetRowWriter(path, schema)

    with pytest.raises(InvalidRankingError):
        pair_export.write_pair_files([SnapshotItem(1, CHAT, cands, [[1], [1]])], ExportOptions(), "pairs",
                                     open_writer, splits=("train",))
    with pytest.raises(ValueError, match="have no CandidateInfo"):
        pair_export.write_pair_files([SnapshotItem(1, CHAT, cands, [[1], [3]])], ExportOptions(), "pairs",
                                     open_writer, splits=("train",))
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even a temporary file


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_item_with_more_pairs_than_a_table_is_cut_across_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   fmt: str) -> None:
    monkeypatch.setattr(pair_export, "TABLE_ROWS", 100)  # a table is one row group of 64 rows
    ids = list(range(1, 31))
    big = SnapshotItem(1, CHAT, {c: CandidateInfo(f"answer {c}", model="m") for c in ids},
                       [[c] for c in ids[:20]] + [ids[20:]])  # 20 tiers and a tie of 10: 390 pairs
    items, external = snapshot(30, seed=5)

    old, new, old_files, new_files = export_both(tmp_path, fmt, "pairs", ExportOptions(), [*items, big, *items],
                                                 external, batch_rows=64)

    assert old == new and new["train"].rows > 390
    assert old_files[0].read_bytes() == new_files[0].read_bytes()
