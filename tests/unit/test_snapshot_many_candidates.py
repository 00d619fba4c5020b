"""A snapshot of many items with many answers builds on SQLite: the prefetch of their
candidates once passed SQLite's expression-depth limit ("Expression tree is too large")."""

from __future__ import annotations

import json

from django.core.management import call_command

from labeling.models import Item, Project
from tests.factories import make_items
from tests.unit.test_snapshots import build
from training.snapshots import snapshot_dir


def test_seventy_items_of_sixteen_answers_export_every_kind(db: None) -> None:
    # Given 70 accepted items of K=16 answers: 1,120 candidates, more than SQLite's
    # limit of 1,000 terms if they are prefetched in one query.
    project = Project.objects.create(name="Wide", slug="wide", is_demo=True, overlap=1, k=16)
    make_items(project, 70, k=16)
    call_command("simulate_annotators", "--project", "wide", "--create", "1", "--noise", "0.0")
    assert Item.objects.filter(project=project, status="accepted").count() == 70

    # When every kind is exported
    snapshot = build(project, kinds=["pairs", "sft", "raw"], formats=["jsonl"])

    # Then it is built with every item in it
    assert snapshot.status == "done", snapshot.error
    expected_pairs = sum(
        sum(len(a) * len(b) for i, a in enumerate(item.consensus) for b in item.consensus[i + 1:])
        for item in Item.objects.filter(project=project))
    assert snapshot.counts["pairs-train"] == expected_pairs > 0
    assert snapshot.counts["raw-train"] == 70
    rows = (snapshot_dir(snapshot) / "raw-train.jsonl").read_text().splitlines()
    assert len({json.loads(row)["group_id"] for row in rows}) == 70
