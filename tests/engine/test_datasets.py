"""Snapshot builders and writers (training.engine.datasets, training.engine.writers):
pairs from consensus rankings, the SFT/KTO selection rules, raw rankings with
pseudonyms, the prompt-level split, and the files: JSONL, Parquet, manifest. No database."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.engine.datasets import (
    ALL_BAD,
    STRENGTH_MARGIN,
    CandidateInfo,
    ExportOptions,
    ExternalPair,
    RawRanking,
    SnapshotItem,
    build_dpo,
    build_kto,
    build_pairs,
    build_raw,
    build_sft,
    prompt_hash,
    pseudonym,
    sft_choice,
    split_of,
)
from training.engine.manifest import MANIFEST, file_sha256, read_manifest, write_manifest
from training.engine.pairs import InvalidRankingError, pairs_from_ranking
from training.engine.prompt_format import plain_prompt
from training.engine.writers import (
    FileStats,
    JsonlWriter,
    ParquetRowWriter,
    parquet_schema,
    write_jsonl,
    write_parquet,
    write_split_files,
)

SALT = b"export-salt-for-tests-0123456789"
HELLO = [{"role": "user", "content": "Say hello."}]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Another one?"},
]
STANDARD, CONVERSATIONAL = ExportOptions(conversational=False), ExportOptions(conversational=True)


def candidates(*ids: int, human: int | None = None) -> dict[int, CandidateInfo]:
    return {
        i: CandidateInfo(f"answer {i}", model=None if i == human else f"model-{i % 2}", temperature=1.0,
                         seed=1000 + i, origin="human" if i == human else "model")
        for i in ids
    }


def item(tiers: list[list[int]], *, item_id: int = 1, prompt: list[dict] = HELLO, **fields) -> SnapshotItem:
    ids = [c for tier in tiers for c in tier]
    return SnapshotItem(item_id=item_id, prompt=prompt, candidates=fields.pop("candidates", candidates(*ids)),
                        tiers=tiers, agreement=0.8, guideline_versions=(2,), **fields)


# --------------------------------------------------------------------------- pairs


@pytest.mark.parametrize(
    "tiers",
    [[[1], [2], [3], [4]], [[1], [2, 3], [4]], [[1, 2], [3, 4]], [[5], [1, 2, 3, 4]], [[1], [2]]],
)
def test_pairs_are_c_k_2_minus_the_pairs_inside_ties(tiers: list[list[int]]) -> None:
    k = sum(len(t) for t in tiers)

    rows = list(build_pairs([item(tiers)]))

    assert len(rows) == math.comb(k, 2) - sum(math.comb(len(t), 2) for t in tiers)
    assert len({(r["chosen_id"], r["rejected_id"]) for r in rows}) == len(rows)


def test_a_full_tie_and_an_unranked_item_give_no_pairs() -> None:
    assert list(build_pairs([item([[1, 2, 3]]), item([], candidates=candidates(1, 2))])) == []


def test_pairs_follow_pairs_from_ranking_and_carry_provenance() -> None:
    rows = list(build_pairs([item([[7], [3, 9], [4]], item_id=42)]))

    assert [(r["chosen_id"], r["rejected_id"], r["ordinal_margin"]) for r in rows] == [
        (b, w, float(d)) for b, w, d in pairs_from_ranking([[7], [3, 9], [4]])
    ]
    first = rows[0]
    assert (first["chosen"], first["rejected"]) == ("answer 7", "answer 3")
    assert (first["chosen_model"], first["rejected_model"]) == ("model-1", "model-1")
    assert (first["chosen_seed"], first["rejected_temperature"]) == (1007, 1.0)
    assert (first["item_id"], first["item_agreement"], first["guideline_versions"]) == (42, 0.8, [2])
    assert first["source"] == "consensus" and first["preference_id"] is None


def test_no_column_is_named_margin() -> None:
    # TRL's RewardTrainer subtracts a "margin" column from the reward gap whenever one exists.
    rows = list(build_pairs([item([[1], [2]])], external=[ExternalPair(1, HELLO, "a", "b", margin=2.0)]))

    assert all("margin" not in row for row in rows)


@pytest.mark.parametrize(("strength", "margin"), sorted(STRENGTH_MARGIN.items()))
def test_a_pairwise_strength_sets_the_margin(strength: int, margin: float) -> None:
    (row,) = build_pairs([item([[2], [1]], strength=strength)])

    assert (row["chosen_id"], row["ordinal_margin"], row["strength"]) == (2, margin, strength)


def test_a_strength_outside_the_scale_is_refused() -> None:
    with pytest.raises(ValueError, match="strength"):
        item([[2], [1]], strength=5)


def test_external_pairs_become_pairs_with_their_source_and_margin() -> None:
    external = [
        ExternalPair(9, HELLO, "good", "bad", source="hh-rlhf", margin=1.5, chosen_id=5, rejected_id=6),
        ExternalPair(10, HELLO, "fine", "worse"),
    ]

    rows = list(build_pairs([item([[1], [2]])], CONVERSATIONAL, external=external))

    assert [r["source"] for r in rows] == ["consensus", "external:hh-rlhf", "external"]
    assert [r["ordinal_margin"] for r in rows] == [1.0, 1.5, None]
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "good"}]
    assert (rows[1]["preference_id"], rows[1]["item_id"], rows[1]["chosen_id"]) == (9, None, 5)


def test_dpo_rows_are_the_pair_rows() -> None:
    items = [item([[1], [2, 3]]), item([[4], [5]], item_id=2)]

    assert list(build_dpo(items, CONVERSATIONAL)) == list(build_pairs(items, CONVERSATIONAL))


def test_a_ranked_candidate_without_info_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[3\]"):
        list(build_pairs([item([[1], [2], [3]], candidates=candidates(1, 2))]))


def test_a_malformed_ranking_is_an_error() -> None:
    with pytest.raises(InvalidRankingError):
        list(build_pairs([item([[1], [1]], candidates=candidates(1))]))


def test_builders_stream_without_reading_all_items() -> None:
    def endless() -> Iterator[SnapshotItem]:
        for n in itertools.count(1):
            yield item([[1], [2], [3]], item_id=n)

    rows = list(itertools.islice(build_pairs(endless()), 7))

    assert [r["item_id"] for r in rows] == [1, 1, 1, 2, 2, 2, 3]


# --------------------------------------------------------------------------- shapes


def test_standard_rows_are_text_with_the_prompt_flattened() -> None:
    row = next(build_pairs([item([[1], [2]], prompt=CHAT)], STANDARD))

    assert row["prompt"] == (
        "System:\nBe brief.\n\nUser:\nName a colour.\n\nAssistant:\nBlue.\n\n"
        "User:\nAnother one?\n\nAssistant:\n"
    )
    assert (row["chosen"], row["rejected"]) == ("answer 1", "answer 2")


def test_a_single_turn_prompt_is_flattened_the_same_way() -> None:
    assert plain_prompt(HELLO) == "User:\nSay hello.\n\nAssistant:\n"


def test_conversational_rows_are_message_lists() -> None:
    row = next(build_pairs([item([[1], [2]], prompt=[*CHAT[:1], {**CHAT[1], "name": "x"}])], CONVERSATIONAL))

    assert row["prompt"] == CHAT[:2]  # role and content only
    assert row["chosen"] == [{"role": "assistant", "content": "answer 1"}]
    assert row["rejected"] == [{"role": "assistant", "content": "answer 2"}]


@pytest.mark.parametrize(("kind", "messages"), [("pairs", False), ("dpo", True), ("sft", True), ("kto", True)])
def test_by_default_policy_kinds_carry_messages_and_reward_pairs_text(kind: str, messages: bool) -> None:
    """A policy is trained on its chat template's rendering of messages (what it is sampled
    with); the default reward model (MiniLM) has no chat template, so pairs stay text."""
    (row, *_) = rows_of(kind, ExportOptions())

    prompt = row["messages"][:-1] if "messages" in row else row["prompt"]
    assert prompt == (CHAT if messages else plain_prompt(CHAT))


def test_sft_rows_in_both_shapes() -> None:
    (standard,) = build_sft([item([[1], [2]], prompt=CHAT)], STANDARD)
    (conversational,) = build_sft([item([[1], [2]], prompt=CHAT)], CONVERSATIONAL)

    assert (standard["prompt"], standard["completion"]) == (plain_prompt(CHAT), "answer 1")
    assert conversational["messages"] == [*CHAT, {"role": "assistant", "content": "answer 1"}]
    assert conversational["candidate_id"] == standard["candidate_id"] == 1


# --------------------------------------------------------------------------- SFT and KTO rules


@pytest.mark.parametrize(
    ("tiers", "human", "flags", "expected"),
    [
        ([[1], [2], [3]], None, (), 1),  # a single best answer
        ([[1, 2], [3]], None, (), None),  # a tie at the top: no clear best
        ([[1, 2], [3]], 2, (), 2),  # ...unless one of the tied is a human demonstration
        ([[1], [2]], 1, (), 1),
        ([[1], [2]], 2, (), 1),  # a demonstration ranked below a model answer loses
        ([[1], [2]], None, (ALL_BAD,), None),  # nothing worth imitating
        ([], 3, (), 3),  # an unranked prompt with its demonstration
        ([], None, (), None),
    ],
)
def test_sft_choice(
    tiers: list[list[int]], human: int | None, flags: tuple[str, ...], expected: int | None
) -> None:
    ids = [c for tier in tiers for c in tier] or [3, 4]
    subject = item(tiers, candidates=candidates(*ids, human=human), flags=flags)

    assert sft_choice(subject) == expected
    assert [r["candidate_id"] for r in build_sft([subject])] == ([] if expected is None else [expected])


@pytest.mark.parametrize(
    ("tiers", "flags", "expected"),
    [
        ([[1], [2], [3]], (), [(1, True), (3, False)]),  # the middle tier gets no label
        ([[1, 2], [3, 4]], (), [(1, True), (2, True), (3, False), (4, False)]),
        ([[1], [2]], (), [(1, True), (2, False)]),
        ([[1, 2, 3]], (), []),  # a full tie says nothing about quality
        ([[1], [2]], (ALL_BAD,), [(1, False), (2, False)]),
        ([[1, 2]], (ALL_BAD,), [(1, False), (2, False)]),  # pairwise "both bad"
    ],
)
def test_kto_labels(tiers: list[list[int]], flags: tuple[str, ...], expected: list[tuple[int, bool]]) -> None:
    rows = list(build_kto([item(tiers, flags=flags)], CONVERSATIONAL))

    assert [(r["candidate_id"], r["label"]) for r in rows] == expected
    assert all(r["completion"][0]["role"] == "assistant" for r in rows)


# --------------------------------------------------------------------------- group and split


def test_group_id_is_the_prompt_hash_and_stable_across_items_and_sources() -> None:
    rows = list(build_pairs(
        [item([[1], [2]], item_id=1), item([[3], [4]], item_id=2, candidates=candidates(3, 4)),
         item([[1], [2]], item_id=3, prompt=CHAT)],
        external=[ExternalPair(1, HELLO, "a", "b")],
    ))

    groups = [r["group_id"] for r in rows]
    assert groups == [prompt_hash(HELLO), prompt_hash(HELLO), prompt_hash(CHAT), prompt_hash(HELLO)]
    assert prompt_hash(HELLO) == hashlib.sha256(b'[{"content":"Say hello.","role":"user"}]').hexdigest()


def test_an_explicit_group_id_is_kept() -> None:
    assert next(build_pairs([item([[1], [2]], group_id="prompt-7")]))["group_id"] == "prompt-7"


def test_split_keeps_every_prompt_on_one_side_and_is_deterministic() -> None:
    options = ExportOptions(validation_fraction=0.3, split_seed=11)
    prompts = [[{"role": "user", "content": f"question {n}"}] for n in range(200)]
    items = [item([[1], [2], [3]], item_id=n, prompt=prompts[n % 200]) for n in range(600)]

    rows = list(build_pairs(items, options))
    again = list(build_pairs(reversed(items), options))

    sides: dict[str, set[str]] = defaultdict(set)
    for row in rows + again:
        sides[row["group_id"]].add(row["split"])
    assert all(len(s) == 1 for s in sides.values())
    validation = sum(s == {"validation"} for s in sides.values())
    assert 30 <= validation <= 90  # 30% of 200 prompts, give or take
    assert {split_of(g, 0.3, 11) for g in sides} == {"train", "validation"}
    assert [split_of(g, 0.3, 12) for g in sides] != [split_of(g, 0.3, 11) for g in sides]


@pytest.mark.parametrize(("fraction", "side"), [(0.0, "train"), (1.0, "validation")])
def test_split_edges(fraction: float, side: str) -> None:
    rows = list(build_pairs([item([[1], [2]])], ExportOptions(validation_fraction=fraction)))

    assert rows[0]["split"] == split_of("anything", fraction, 0) == side


def test_split_fraction_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        ExportOptions(validation_fraction=1.5)


# --------------------------------------------------------------------------- raw rankings


def raw(annotator: str, ranking_id: int = 1) -> RawRanking:
    return RawRanking(ranking_id=ranking_id, item_id=3, annotator=annotator, prompt=HELLO,
                      candidates=candidates(1, 2, 3), tiers=[[2], [1, 3]], guideline_version=2,
                      flags=("needs_expert",), duration_ms=5400, created_at="2026-03-01T10:00:00+00:00",
                      display_order=(3, 1, 2))


def test_pseudonyms_are_stable_per_salt_and_unlinkable_across_salts() -> None:
    assert pseudonym(SALT, 7) == pseudonym(SALT, 7) != pseudonym(SALT, 8)
    assert pseudonym(SALT, 7) != pseudonym(b"another-salt-of-32-bytes-0000000", 7)
    assert pseudonym(SALT, 7) == hmac.new(SALT, b"7", hashlib.sha256).hexdigest()[:16]  # HMAC(salt, user id)
    with pytest.raises(ValueError, match="salt"):
        pseudonym(b"short", 7)


def test_raw_rows_carry_the_pseudonym_and_no_username() -> None:
    (row,) = build_raw([raw(pseudonym(SALT, 7))], ExportOptions(validation_fraction=0.5))

    assert row["annotator"] == pseudonym(SALT, 7)
    assert row["tiers"] == [[2], [1, 3]] and row["display_order"] == [3, 1, 2]
    assert [c["id"] for c in row["candidates"]] == [1, 2, 3]
    assert row["split"] == split_of(prompt_hash(HELLO), 0.5, 0)
    assert not {"username", "email", "user", "user_id", "annotator_id"} & row.keys()


@pytest.mark.parametrize("annotator", ["alice", "alice@example.com", "7", "ANN-0000000000000"])
def test_raw_refuses_an_annotator_that_is_not_a_pseudonym(annotator: str) -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        list(build_raw([raw(annotator)]))


# --------------------------------------------------------------------------- files


def rows_of(kind: str, options: ExportOptions) -> list[dict]:
    items = [
        item([[1], [2, 3], [4]], prompt=CHAT, flags=("unsafe",)),
        item([[5, 6], [7]], item_id=2, candidates=candidates(5, 6, 7, human=6), strength=None),
        item([[8], [9]], item_id=3, strength=3),
    ]
    if kind == "raw":
        return list(build_raw([raw(pseudonym(SALT, n), n) for n in range(3)], options))
    builder = {"pairs": build_pairs, "dpo": build_dpo, "sft": build_sft, "kto": build_kto}[kind]
    extra = {"external": [ExternalPair(4, HELLO, "x", "y", source="hh")]} if kind in ("pairs", "dpo") else {}
    return list(builder(items, options, **extra))


KIND_SHAPES = [(kind, conv) for kind in ("pairs", "dpo", "sft", "kto", "raw") for conv in (False, True, None)]


@pytest.mark.parametrize(("kind", "conversational"), KIND_SHAPES)
def test_parquet_round_trips_through_pyarrow(tmp_path: Path, kind: str, conversational: bool | None) -> None:
    options = ExportOptions(conversational=conversational)
    rows = rows_of(kind, options)
    schema = parquet_schema(kind, conversational=options.conversational_for(kind))

    stats = write_parquet(iter(rows), tmp_path / "out.parquet", schema, batch_rows=2)

    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.equals(schema)
    assert table.to_pylist() == rows
    assert stats.rows == len(rows)
    assert pq.ParquetFile(tmp_path / "out.parquet").num_row_groups == -(-len(rows) // 2)


@pytest.mark.parametrize(("kind", "conversational"), KIND_SHAPES)
def test_jsonl_round_trips(tmp_path: Path, kind: str, conversational: bool) -> None:
    rows = rows_of(kind, ExportOptions(conversational=conversational))

    stats = write_jsonl(rows, tmp_path / "out.jsonl")

    lines = (tmp_path / "out.jsonl").read_text(encoding="ascii").splitlines()
    assert [json.loads(line) for line in lines] == rows and stats.rows == len(rows)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_writer_stats_match_the_file_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pairs.{suffix}"
    rows = rows_of("pairs", STANDARD) * 50

    if suffix == "jsonl":
        stats = write_jsonl(rows, path)
    else:
        stats = write_parquet(rows, path, parquet_schema("pairs", conversational=False), batch_rows=64)

    data = path.read_bytes()
    assert stats == FileStats(rows=len(rows), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    assert file_sha256(path) == stats.sha256
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


def test_jsonl_keeps_non_ascii_text_exactly(tmp_path: Path) -> None:
    rows = [{"text": "naïve café, 東京 🙂 \"quoted\"\n"}]

    write_jsonl(rows, tmp_path / "x.jsonl")

    assert json.loads((tmp_path / "x.jsonl").read_text()) == rows[0]


def test_jsonl_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_jsonl([{"item_agreement": float("nan")}], tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_a_row_that_drifts_from_the_schema_fails_and_leaves_no_file(tmp_path: Path) -> None:
    rows = rows_of("pairs", STANDARD)
    rows[1] = {**rows[1], "margin": 1.0}

    with pytest.raises(ValueError, match="unexpected \\['margin'\\]"):
        write_parquet(rows, tmp_path / "x.parquet", parquet_schema("pairs", conversational=False))
    assert list(tmp_path.iterdir()) == []


def test_an_error_in_the_row_source_leaves_no_file(tmp_path: Path) -> None:
    def failing() -> Iterator[dict]:
        yield from rows_of("pairs", STANDARD)
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_parquet(failing(), tmp_path / "x.parquet", parquet_schema("pairs", conversational=False))
    with pytest.raises(RuntimeError, match="went away"):
        write_jsonl(failing(), tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_split_files_route_rows_by_prompt_in_one_pass(tmp_path: Path) -> None:
    options = ExportOptions(validation_fraction=0.5, split_seed=3)
    prompts = [[{"role": "user", "content": f"q{n}"}] for n in range(40)]
    rows = list(build_pairs((item([[1], [2]], item_id=n, prompt=p) for n, p in enumerate(prompts)), options))
    schema = parquet_schema("pairs", conversational=False)

    stats = write_split_files(iter(rows), lambda s: ParquetRowWriter(tmp_path / f"{s}.parquet", schema))

    for split in ("train", "validation"):
        written = pq.read_table(tmp_path / f"{split}.parquet").to_pylist()
        assert written == [r for r in rows if r["split"] == split] and stats[split].rows == len(written) > 0


def test_every_split_gets_a_file_even_an_empty_one(tmp_path: Path) -> None:
    stats = write_split_files(build_pairs([item([[1], [2]])]), lambda s: JsonlWriter(tmp_path / f"{s}.jsonl"))

    assert (stats["train"].rows, stats["validation"].rows) == (1, 0)
    assert (tmp_path / "validation.jsonl").read_bytes() == b""


def test_manifest_is_written_last_and_lists_every_file(tmp_path: Path) -> None:
    files = {"pairs-train.jsonl": write_jsonl(rows_of("pairs", STANDARD), tmp_path / "pairs-train.jsonl"),
             "sft-train.parquet": write_parquet(rows_of("sft", STANDARD), tmp_path / "sft-train.parquet",
                                                parquet_schema("sft", conversational=False))}
    assert read_manifest(tmp_path) is None  # not complete yet

    metadata = {"snapshot": "v3", "options": {"conversational": False}}
    path = write_manifest(tmp_path, metadata, files={name: st._asdict() for name, st in files.items()})

    manifest = read_manifest(tmp_path)
    assert path == tmp_path / MANIFEST and manifest["snapshot"] == "v3"
    assert manifest["files"]["sft-train.parquet"] == files["sft-train.parquet"]._asdict()
    assert all(file_sha256(tmp_path / name) == entry["sha256"] for name, entry in manifest["files"].items())
    assert path.stat().st_mtime_ns >= max((tmp_path / name).stat().st_mtime_ns for name in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files, MANIFEST])  # no temp file


def test_manifest_refuses_a_missing_or_changed_file(tmp_path: Path) -> None:
    stats = write_jsonl(rows_of("sft", STANDARD), tmp_path / "sft.jsonl")

    with pytest.raises(FileNotFoundError):
        write_manifest(tmp_path, {}, files={"gone.jsonl": stats._asdict()})
    with pytest.raises(ValueError, match="bytes"):
        write_manifest(tmp_path, {}, files={"sft.jsonl": stats._replace(bytes=stats.bytes + 1)._asdict()})
    assert read_manifest(tmp_path) is None


# --------------------------------------------------------------------------- boundaries


def test_importing_the_builders_loads_no_django_torch_or_pyarrow() -> None:
    code = (
        "import sys, training.engine.datasets, training.engine.writers, training.engine.pairs\n"
        "print(sorted(m for m in ('django', 'torch', 'transformers', 'trl', 'datasets', 'pyarrow') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])

    assert result.stdout.strip() == "[]"


def test_labeling_consensus_reexports_the_one_pairs_function() -> None:
    from labeling.stats import consensus

    assert consensus.pairs_from_ranking is pairs_from_ranking
    assert consensus.InvalidRankingError is InvalidRankingError
