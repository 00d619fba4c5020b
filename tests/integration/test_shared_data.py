"""The real data in ../shared/data, imported into PostgreSQL through the CLI."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from labeling.models import Candidate, ExternalPreference, Item, Project, Prompt

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

HH_INVALID = [87, 517, 926, 1104, 1255, 1689, 1951, 1953, 2037]


def run_import(*args: str) -> str:
    out, err = StringIO(), StringIO()
    call_command("import_prompts", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_alpaca_eval_imports_805_prompts_with_4_candidates_once(shared_data: Path) -> None:
    path = str(shared_data / "alpaca_eval" / "prompts_with_candidates.jsonl.gz")

    first = run_import(path, "--project", "x")
    second = run_import(path, "--project", "x")

    project = Project.objects.get(slug="x")
    assert Prompt.objects.filter(project=project).count() == 805
    assert Candidate.objects.filter(prompt__project=project).count() == 805 * 4
    assert "prompts: 805 added" in first and "candidates: 3220 added" in first
    assert "prompts: 0 added, 805 already there" in second
    assert Item.objects.filter(project=project).count() >= 800


def test_hh_rlhf_is_rejected_naming_its_nine_invalid_lines(shared_data: Path) -> None:
    path = str(shared_data / "hh_rlhf" / "harmless-base-test.jsonl.gz")

    err = StringIO()
    with pytest.raises(CommandError, match="9 invalid rows"):
        call_command("import_prompts", path, "--project", "hh", "--no-progress", stderr=err)

    for line in HH_INVALID:
        assert f"line {line}: " in err.getvalue()
    assert ExternalPreference.objects.count() == 0 and Prompt.objects.count() == 0


def test_hh_rlhf_with_skip_invalid_gives_2303_preferences_over_2301_prompts(
    shared_data: Path,
) -> None:
    path = str(shared_data / "hh_rlhf" / "harmless-base-test.jsonl.gz")

    output = run_import(path, "--project", "hh", "--skip-invalid")

    for line in HH_INVALID:
        assert f"line {line}: " in output
    assert ExternalPreference.objects.count() == 2303
    assert Prompt.objects.count() == 2301
    assert Item.objects.count() == 0
