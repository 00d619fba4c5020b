"""Row parsing and file reading: every supported shape, and a clear reason per bad row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling.importing.reading import ImportFileError, InvalidRow, _CountingReader, detect_format, iter_records
from labeling.importing.rows import parse_row


def parse(record: dict, max_candidates: int = 4):  # noqa: ANN201
    return parse_row(record, 1, max_chars=1000, max_candidates=max_candidates)


def test_plain_prompt_becomes_one_user_message() -> None:
    row = parse({"prompt": "Name a prime.", "candidates": ["2", {"text": "9", "model": "m"}]})

    assert row.messages == [{"role": "user", "content": "Name a prime."}]
    assert [(c.text, c.model) for c in row.candidates] == [("2", ""), ("9", "m")]
    assert row.preference is None


def test_system_field_is_prepended() -> None:
    row = parse({"prompt": "Hi", "system": "Be brief."})

    assert row.messages[0] == {"role": "system", "content": "Be brief."}


def test_multi_turn_messages_must_end_with_user() -> None:
    with pytest.raises(InvalidRow, match="end with a user message"):
        parse({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})


def test_trl_standard_preference_row() -> None:
    row = parse({"prompt": "2+2?", "chosen": "4", "rejected": "5", "margin": 2})

    assert [c.text for c in row.candidates] == ["4", "5"]
    assert row.preference == (0, 1)
    assert row.margin == 2.0


def test_trl_conversational_implicit_prompt() -> None:
    chosen = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    rejected = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]

    row = parse({"chosen": chosen, "rejected": rejected})

    assert row.messages == [{"role": "user", "content": "Hi"}]
    assert [c.text for c in row.candidates] == ["Hello!", "Go away."]


def test_hh_transcript_splits_prompt_and_answers() -> None:
    prefix = "\n\nHuman: What is 2+2?\n\nAssistant: Four.\n\nHuman: And 3+3?\n\nAssistant:"
    row = parse({"chosen": prefix + " Six.", "rejected": prefix + " Seven."})

    assert [m["role"] for m in row.messages] == ["user", "assistant", "user"]
    assert row.messages[-1]["content"] == "And 3+3?"
    assert [c.text for c in row.candidates] == ["Six.", "Seven."]


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"candidates": ["a", "b"]}, "missing field 'prompt'"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"prompt": "x" * 1001}, "too long"),
        ({"prompt": "q", "candidates": ["a", ""]}, r"candidates\[1\] is empty"),
        ({"prompt": "q", "candidates": ["a"] * 5}, "at most 4 answers"),
        ({"prompt": "q", "chosen": "a"}, "both 'chosen' and 'rejected'"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: z\n\nAssistant: c"},
         "differ before the final assistant turn"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: ", "rejected": "\n\nHuman: a\n\nAssistant: c"},
         "chosen answer is empty"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
         "system message may only come first"),
        ({"prompt": "q", "metadata": [1]}, "metadata must be an object"),
    ],
)
def test_invalid_rows_name_the_reason(record: dict, reason: str) -> None:
    with pytest.raises(InvalidRow, match=reason):
        parse(record)


def read_all(path: Path, name: str | None = None) -> list:
    fmt = detect_format(path, name)
    return list(iter_records(path, fmt, _CountingReader(open(path, "rb"))))


def test_jsonl_reports_line_numbers_for_bad_json_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"prompt": "a"}\n\n{"prompt": \n"\xff"\n[1]\n')

    records = read_all(path)

    assert records[0] == (1, {"prompt": "a"})
    assert [(line, str(r)) for line, r in records[1:]] == [
        (3, "invalid JSON: Expecting value at column 12"),
        (4, "not UTF-8 (byte 1)"),
        (5, "each line must be a JSON object"),
    ]


def test_gzip_is_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps({"prompt": "zipped"}) + "\n")

    assert read_all(path) == [(1, {"prompt": "zipped"})]


def test_csv_with_candidate_columns_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        'prompt,candidate_1,model_1,candidate_2\n"multi\nline",yes,m1,no\nsecond,a,,b\n'
    )

    records = read_all(path)

    assert records[0] == (2, {"prompt": "multi\nline", "candidates": [
        {"text": "yes", "model": "m1"}, {"text": "no", "model": ""}]})
    assert records[1][0] == 4


def test_csv_not_utf8_row_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"prompt\nfine\nbad \xff byte\n")

    records = read_all(path)

    assert records[0] == (2, {"prompt": "fine"})
    assert records[1][0] == 3 and "not UTF-8" in str(records[1][1])


def test_parquet_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "chosen": ["c1", "c2"],
                             "rejected": ["r1", "r2"]}), path)

    records = read_all(path)

    assert [line for line, _ in records] == [1, 2]
    assert records[1][1] == {"prompt": "p2", "chosen": "c2", "rejected": "r2"}


def test_unknown_format_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<html><script>alert(1)</script></html>")

    with pytest.raises(ImportFileError, match="unknown file type"):
        detect_format(path)
