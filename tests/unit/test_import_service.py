"""The import service: counts, idempotency, rejection of bad files, items and
external preferences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.importing import prompts_import
from labeling.models import Candidate, ExternalPreference, Item, Project, Prompt


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [
    {"prompt": "What is 2+2?", "candidates": ["4", "5", {"text": "four", "model": "m2"}]},
    {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
     "candidates": ["Hello!", "Hello!", "Go away."]},
    {"prompt": "Only a prompt"},
]


def test_import_adds_prompts_candidates_and_items(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)

    report = prompts_import(project=project, path=path)

    assert (report.prompts_added, report.candidates_added, report.items_added) == (3, 6, 2)
    assert report.duplicate_candidates == 1
    assert Candidate.objects.filter(is_duplicate=True).count() == 1
    # The duplicate "Hello!" is kept (counts match the file) but not put in an item.
    item = Item.objects.get(prompt__messages__1__content="Hi")
    assert sorted(c.text for c in item.candidates.all()) == ["Go away.", "Hello!"]
    assert item.required_rankings == project.overlap
    assert Candidate.objects.get(text="four").model_name == "m2"


def test_reimport_adds_nothing(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    prompts_import(project=project, path=path)

    report = prompts_import(project=project, path=path)

    assert (report.prompts_added, report.candidates_added, report.items_added) == (0, 0, 0)
    assert (report.prompts_skipped, report.candidates_skipped) == (3, 6)
    assert (Prompt.objects.count(), Candidate.objects.count(), Item.objects.count()) == (3, 6, 2)


def test_file_with_one_bad_row_is_rejected_whole(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [*ROWS, {"prompt": ""}, {"prompt": "fine"}])

    report = prompts_import(project=project, path=path)

    assert report.rejected
    assert report.errors == [{"line": 4, "reason": "prompt is empty"}]
    assert Prompt.objects.count() == 0


def test_skip_invalid_imports_the_valid_rows(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": ""}, *ROWS])

    report = prompts_import(project=project, path=path, skip_invalid=True)

    assert not report.rejected
    assert report.invalid == 1 and report.errors[0]["line"] == 1
    assert Prompt.objects.count() == 3


def test_preference_rows_become_external_preferences(project: Project, tmp_path: Path) -> None:
    rows = [
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Nice"},
    ]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)

    report = prompts_import(project=project, path=path)

    assert (report.prompts_added, report.prompts_skipped) == (1, 1)
    assert report.preferences_added == 2 and report.items_added == 0
    prompt = Prompt.objects.get()
    assert prompt.candidates.count() == 4
    preference = ExternalPreference.objects.order_by("id").first()
    assert (preference.chosen.text, preference.rejected.text) == ("Paris", "Lyon")
    assert prompts_import(project=project, path=path).preferences_added == 0


def test_pairwise_project_gets_one_item_per_pair(tmp_path: Path, db: None) -> None:
    project = Project.objects.create(name="P", slug="pairs", mode=Project.Mode.PAIRWISE)
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "q", "candidates": ["a", "b", "c"]}])

    report = prompts_import(project=project, path=path)

    assert report.items_added == 3
    assert all(item.candidates.count() == 2 for item in Item.objects.all())


def test_progress_is_reported_to_the_end(project: Project, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    seen: list[tuple[int, int]] = []

    prompts_import(project=project, path=path, progress=lambda d, t: seen.append((d, t)))

    assert seen[-1][0] == seen[-1][1] > 0


@pytest.mark.parametrize("name", ["rows.csv", "rows.csv.gz"])
def test_csv_import(project: Project, tmp_path: Path, name: str) -> None:
    import gzip

    text = "prompt,candidates\nHello?,\"[\"\"hi\"\", \"\"yo\"\"]\"\n"
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)

    report = prompts_import(project=project, path=path)

    assert (report.prompts_added, report.candidates_added, report.items_added) == (1, 2, 1)
