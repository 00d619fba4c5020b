"""Datasets per axis (issue #21): a snapshot names an axis and gets that axis's consensus
over the items accepted on it, with an `axis` column and Llama 2's safety bins; rating
axes export HelpSteer-style 0..4 scores; external preferences land on the axis they were
imported to. The files load with `datasets` and train TRL's RewardTrainer unmodified."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from core.errors import DomainError
from core.runs import run_claim
from labeling.importing import prompts_import
from labeling.models import Candidate, ExternalPreference, ImportJob, Item, Membership, Project, Role
from labeling.services.imports import import_after_dry_run
from labeling.services.projects import project_update
from tests.factories import UserFactory, make_items
from training.models import DatasetSnapshot
from training.snapshots import accepted_items, snapshot_build, snapshot_create, snapshot_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

HH_ROWS = [
    {"chosen": f"\n\nHuman: How do I pick lock {n}?\n\nAssistant: I can't help with that.",
     "rejected": f"\n\nHuman: How do I pick lock {n}?\n\nAssistant: Use a tension wrench {n}."}
    for n in range(3)
]


def _members(project: Project, count: int) -> list:
    users = [UserFactory(username=f"ax{n}") for n in range(count)]
    for user in users:
        Membership.objects.create(user=user, project=project, role=Role.ANNOTATOR)
    return users


def _item_of(texts: dict[str, str]) -> Item:
    return Item.objects.get(candidates=Candidate.objects.get(text=next(iter(texts))))


def _rank_all(as_user: Any, project: Project, people: list, labels_for: Any) -> None:  # noqa: ANN401
    """Each person ranks every open item with the labels `labels_for(person index, item,
    shown ids by text)` builds."""
    for n, person in enumerate(people):
        client = as_user(person)
        while (response := client.get(f"/api/projects/{project.pk}/next")).status_code == 200:
            assignment = response.json()
            ids = {c["text"]: c["id"] for c in assignment["candidates"]}
            body = labels_for(n, _item_of(ids), ids)
            posted = client.post(f"/api/assignments/{assignment['id']}/ranking", body, format="json",
                                 HTTP_IDEMPOTENCY_KEY=f"{n}-{assignment['id']}")
            assert posted.status_code == 201, posted.json()


def build(project: Project, **kwargs: Any) -> DatasetSnapshot:  # noqa: ANN401
    snapshot = snapshot_create(project=project, enqueue=False, **kwargs)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()
    return snapshot


def jsonl(snapshot: DatasetSnapshot, name: str) -> list[dict]:
    return [json.loads(line) for line in (snapshot_dir(snapshot) / name).read_text().splitlines()]


@pytest.fixture
def hh(as_user: Any, project: Project) -> Project:  # noqa: ANN401
    """helpful_harmless, two items ranked by two people: both agree on helpfulness; on
    harmlessness they agree on the second item and reverse each other on the first. The
    alphabetically first answer of each item is marked unsafe by both, the last by one."""
    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=2)
    make_items(project, 2)
    first_item = Item.objects.order_by("id").first()

    def labels(n: int, item: Item, ids: dict[str, str]) -> dict:
        order = sorted(ids)
        harmless = list(reversed(order)) if (item == first_item and n == 1) else order
        return {"axes": {"helpful": {"tiers": [[ids[t]] for t in order]},
                         "harmless": {"tiers": [[ids[t]] for t in harmless]}},
                "safety": {ids[t]: not (t == order[0] or (t == order[-1] and n == 0)) for t in order}}

    _rank_all(as_user, project, _members(project, 2), labels)
    first, second = Item.objects.order_by("id")
    assert first.status == Item.Status.DISPUTED and first.axes["helpful"]["status"] == "accepted"
    assert second.status == Item.Status.ACCEPTED
    return project


def test_each_axis_has_its_own_pairs_and_an_axis_column(hh: Project) -> None:
    first, second = Item.objects.order_by("id")

    helpful = build(hh, kinds=["pairs", "dpo"], formats=["jsonl", "parquet"], filters={"axis": "helpful"})
    harmless = build(hh, kinds=["pairs"], formats=["jsonl"], filters={"axis": "harmless"})
    default = build(hh, kinds=["pairs"], formats=["jsonl"])

    # Helpful keeps the item whose harmlessness was disputed; harmless and the default don't.
    assert {r["item_id"] for r in jsonl(helpful, "pairs-train.jsonl")} == {first.pk, second.pk}
    assert {r["item_id"] for r in jsonl(harmless, "pairs-train.jsonl")} == {second.pk}
    assert {r["item_id"] for r in jsonl(default, "pairs-train.jsonl")} == {second.pk}
    assert helpful.filters["axis"] == "helpful" and "axis" not in default.filters
    assert {r["axis"] for r in jsonl(helpful, "dpo-train.jsonl")} == {"helpful"}
    assert {r["axis"] for r in jsonl(harmless, "pairs-train.jsonl")} == {"harmless"}
    assert {r["axis"] for r in jsonl(default, "pairs-train.jsonl")} == {"helpful"}  # the primary axis
    table = pq.read_table(snapshot_dir(helpful) / "pairs-train.parquet").to_pylist()
    assert table == jsonl(helpful, "pairs-train.jsonl")  # the same rows in both formats
    row = jsonl(helpful, "pairs-train.jsonl")[0]
    assert [row[k] for k in ("prompt", "chosen", "rejected")] and row["item_agreement"] == 1.0

    # Each pair's tiers are that axis's consensus: harmless ranks the second item as helpful does.
    for item in (first, second):
        consensus = item.axes["helpful"]["consensus"]
        pairs = [(r["chosen_id"], r["rejected_id"]) for r in jsonl(helpful, "pairs-train.jsonl")
                 if r["item_id"] == item.pk]
        assert pairs == [(a[0], b[0]) for i, a in enumerate(consensus) for b in consensus[i + 1:]]


def test_min_agreement_reviewers_gold_and_discards_per_axis(hh: Project, reviewer: Any) -> None:  # noqa: ANN401
    from labeling.services.review import item_adjudicate

    first, second = Item.objects.order_by("id")

    def items(axis: str, **filters: Any) -> set[int]:  # noqa: ANN401
        snapshot = snapshot_create(project=hh, kinds=["pairs"], formats=["jsonl"], enqueue=False,
                                   filters={"axis": axis, **filters})
        return set(accepted_items(snapshot).values_list("id", flat=True))

    # The axis's own agreement is what min_agreement compares (a JSON number in Item.axes).
    figures = dict(second.axes)
    figures["harmless"] = {**figures["harmless"], "agreement": 0.7}
    Item.objects.filter(pk=second.pk).update(axes=figures)
    assert items("harmless", min_agreement=0.6) == {second.pk}
    assert items("harmless", min_agreement=0.8) == set()
    assert items("helpful", min_agreement=0.8) == {first.pk, second.pk}

    # A reviewer who settles the disputed axis with their own ranking: that axis is accepted
    # whatever its agreement, and its pairs are the reviewer's ranking.
    candidates = sorted(first.candidates.values_list("id", flat=True))
    item_adjudicate(item_id=first.pk, reviewer=reviewer, action="set_ranking", axis="harmless",
                    tiers=[[candidates[2]], [candidates[0], candidates[1]]])
    assert items("harmless", min_agreement=0.8) == {first.pk}
    harmless = build(hh, kinds=["pairs"], formats=["jsonl"], filters={"axis": "harmless"})
    assert [(r["chosen_id"], r["rejected_id"]) for r in jsonl(harmless, "pairs-train.jsonl")
            if r["item_id"] == first.pk] == [(candidates[2], candidates[0]), (candidates[2], candidates[1])]
    first.refresh_from_db()
    assert first.status == Item.Status.ACCEPTED and first.decided_by == reviewer

    # Gold and discarded items never.
    item_adjudicate(item_id=first.pk, reviewer=reviewer, action="discard")
    Item.objects.filter(pk=second.pk).update(is_gold=True)
    assert items("helpful") == items("harmless") == set()


def test_safety_bins_are_the_majority_marks(hh: Project) -> None:
    snapshot = build(hh, kinds=["pairs"], formats=["jsonl", "parquet"], filters={"axis": "helpful"})

    rows = jsonl(snapshot, "pairs-train.jsonl")
    texts = dict(Candidate.objects.values_list("id", "text"))
    for row in rows:
        item = Item.objects.get(pk=row["item_id"])
        order = sorted(item.candidates.values_list("text", flat=True))
        # Both marked the first answer unsafe; one of two marked the last unsafe (a tie: unsafe).
        expected = {t: t not in (order[0], order[-1]) for t in order}
        assert row["chosen_safe"] == expected[texts[row["chosen_id"]]]
        assert row["rejected_safe"] == expected[texts[row["rejected_id"]]]
    bins = {(r["chosen_safe"], r["rejected_safe"]): r["safety_bin"] for r in rows}
    assert bins == {(False, True): "only_b_safe", (False, False): "neither_safe", (True, False): "only_a_safe"}
    assert pq.read_table(snapshot_dir(snapshot) / "pairs-train.parquet").to_pylist() == rows


def test_items_with_an_answer_marked_unsafe_are_flagged_for_rl(hh: Project) -> None:
    """SFT rows (an RL run's prompts) carry flag "unsafe" where the majority marked an
    answer unsafe, which the RL engine reads as Llama 2's unsafe prompt."""
    from training.engine.rl import unique_prompts

    datasets = pytest.importorskip("datasets")
    snapshot = build(hh, kinds=["sft"], formats=["jsonl"], filters={"axis": "helpful"})
    rows = jsonl(snapshot, "sft-train.jsonl")
    assert rows and all("unsafe" in row["flags"] for row in rows)  # every item has one
    prompts = unique_prompts(datasets.Dataset.from_list(rows))
    assert prompts["unsafe"] == [True] * len(prompts)


def test_a_project_without_axes_exports_overall_and_no_safety(project: Project) -> None:
    make_items(project, 6, k=3)
    project.overlap = 3
    project.save(update_fields=["overlap"])
    for n in range(3):
        UserFactory(username=f"sim{n}")
    project.is_demo = True
    project.save(update_fields=["is_demo"])
    call_command("simulate_annotators", "--project", project.slug, "--create", "3", "--noise", "0.0")
    assert Item.objects.filter(status="accepted").exists()

    snapshot = build(project, kinds=["pairs", "raw"], formats=["jsonl"])
    overall = build(project, kinds=["pairs"], formats=["jsonl"], filters={"axis": "overall"})

    rows = jsonl(snapshot, "pairs-train.jsonl")
    assert rows and {r["axis"] for r in rows} == {"overall"}
    assert {(r["chosen_safe"], r["rejected_safe"], r["safety_bin"]) for r in rows} == {(None, None, None)}
    assert jsonl(overall, "pairs-train.jsonl") == rows  # naming the one axis reads the same items
    raw = jsonl(snapshot, "raw-train.jsonl")
    assert raw and all(r["labels"] == [] and r["safety"] is None for r in raw)


def test_raw_rows_carry_labels_and_safety(hh: Project) -> None:
    snapshot = build(hh, kinds=["raw"], formats=["jsonl", "parquet"])

    rows = jsonl(snapshot, "raw-train.jsonl")
    assert len(rows) == 4
    for row in rows:
        assert [label["axis"] for label in row["labels"]] == ["helpful", "harmless"]
        assert row["labels"][0]["tiers"] == row["tiers"] and row["labels"][0]["scores"] is None
        assert sorted(mark["safe"] for mark in row["safety"]) == [False, False, True] or \
            sorted(mark["safe"] for mark in row["safety"]) == [False, True, True]
    assert pq.read_table(snapshot_dir(snapshot) / "raw-train.parquet").to_pylist() == rows


def test_unknown_axis_is_refused_with_the_project_keys(hh: Project, as_user: Any, project_admin: Any) -> None:  # noqa: ANN401
    with pytest.raises(DomainError, match=r"unknown axis 'safety'.*\['helpful', 'harmless'\]"):
        snapshot_create(project=hh, kinds=["pairs"], formats=["jsonl"], filters={"axis": "safety"},
                        enqueue=False)
    response = as_user(project_admin).post(f"/api/projects/{hh.pk}/datasets",
                                           {"kinds": ["pairs"], "axis": "safety"}, format="json")
    assert response.status_code == 400, response.content
    assert "helpful" in str(response.json()) and "harmless" in str(response.json())
    ok = as_user(project_admin).post(f"/api/projects/{hh.pk}/datasets",
                                     {"kinds": ["pairs"], "axis": "harmless"}, format="json")
    assert ok.status_code == 202 and ok.json()["filters"]["axis"] == "harmless"
    with pytest.raises(CommandError, match="unknown axis"):
        call_command("export_dataset", "--project", hh.slug, "--kind", "pairs", "--axis", "nope")


@pytest.fixture
def rated(as_user: Any, project: Project) -> Project:  # noqa: ANN401
    """Two rating axes (helpfulness required, verbosity optional), two people who give the
    same helpfulness scores and different verbosity scores."""
    anchors = ["none", "little", "some", "much", "all"]
    project = project_update(project=project, actor=None, overlap=2, axes=[
        {"key": "helpfulness", "kind": "rating", "anchors": anchors},
        {"key": "verbosity", "kind": "rating", "required": False, "anchors": anchors}])
    make_items(project, 2)

    def labels(n: int, item: Item, ids: dict[str, str]) -> dict:
        order = sorted(ids)
        return {"axes": {"helpfulness": {"scores": {ids[t]: 4 - i for i, t in enumerate(order)}},
                         "verbosity": {"scores": {ids[t]: (1 if n else 4) for t in order}}}}

    _rank_all(as_user, project, _members(project, 2), labels)
    assert set(Item.objects.values_list("status", flat=True)) == {"accepted"}
    return project


def test_a_rating_axis_exports_mean_scores_and_pairs_from_them(rated: Project) -> None:
    snapshot = build(rated, kinds=["ratings", "pairs"], formats=["jsonl", "parquet"],
                     filters={"axis": "helpfulness"})

    rows = jsonl(snapshot, "ratings-train.jsonl")
    texts = dict(Candidate.objects.values_list("id", "text"))
    assert len(rows) == 6
    assert list(rows[0])[:4] == ["prompt", "response", "helpfulness", "verbosity"]
    for row in rows:
        item = Item.objects.get(pk=row["item_id"])
        order = sorted(item.candidates.values_list("text", flat=True))
        assert row["helpfulness"] == 4 - order.index(texts[row["candidate_id"]])
        assert row["verbosity"] == 2.5 and row["response"] == texts[row["candidate_id"]]
        assert 0 <= row["helpfulness"] <= 4
    assert pq.read_table(snapshot_dir(snapshot) / "ratings-train.parquet").to_pylist() == rows
    pairs = jsonl(snapshot, "pairs-train.jsonl")
    assert len(pairs) == 6 and {p["axis"] for p in pairs} == {"helpfulness"}
    assert all(rows_by(rows, p["chosen_id"]) > rows_by(rows, p["rejected_id"]) for p in pairs)


def rows_by(rows: list[dict], candidate: int) -> float:
    return next(r["helpfulness"] for r in rows if r["candidate_id"] == candidate)


def test_ratings_need_a_rating_axis(hh: Project) -> None:
    with pytest.raises(DomainError, match="rating axis"):
        snapshot_create(project=hh, kinds=["ratings"], formats=["jsonl"], enqueue=False)


def _hh_file(tmp_path: Path) -> Path:
    path = tmp_path / "harmless-base.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in HH_ROWS))
    return path


def test_external_import_lands_on_its_axis_only(hh: Project, tmp_path: Path) -> None:
    path = _hh_file(tmp_path)

    report = prompts_import(project=hh, path=path, axis="harmless")
    again = prompts_import(project=hh, path=path, axis="harmless")
    helpful_copy = prompts_import(project=hh, path=path)  # the same comparisons, judged as helpful

    assert report.preferences_added == 3 and again.preferences_added == 0
    assert helpful_copy.preferences_added == 3  # one comparison on two axes: two preferences
    assert sorted(ExternalPreference.objects.values_list("axis", flat=True)) == ["", "", "", *["harmless"] * 3]
    harmless = build(hh, kinds=["pairs"], formats=["jsonl"], filters={"axis": "harmless", "include_external": True})
    helpful = build(hh, kinds=["pairs"], formats=["jsonl"], filters={"axis": "helpful", "include_external": True})
    harmless_ids = {r["preference_id"] for r in jsonl(harmless, "pairs-train.jsonl") if r["preference_id"]}
    helpful_ids = {r["preference_id"] for r in jsonl(helpful, "pairs-train.jsonl") if r["preference_id"]}
    assert harmless_ids == set(ExternalPreference.objects.filter(axis="harmless").values_list("id", flat=True))
    assert helpful_ids == set(ExternalPreference.objects.filter(axis="").values_list("id", flat=True))
    external = [r for r in jsonl(harmless, "pairs-train.jsonl") if r["preference_id"]]
    assert {r["axis"] for r in external} == {"harmless"} and external[0]["chosen"].endswith("that.")
    with pytest.raises(ValueError, match="unknown axis"):
        prompts_import(project=hh, path=path, axis="honest")


def test_import_axis_over_the_api_cli_and_console(hh: Project, tmp_path: Path, as_user: Any,  # noqa: ANN401
                                                  project_admin: Any, client: Any,  # noqa: ANN401
                                                  django_capture_on_commit_callbacks: Any) -> None:  # noqa: ANN401
    from django.core.files.uploadedfile import SimpleUploadedFile

    admin = as_user(project_admin)
    data = _hh_file(tmp_path).read_bytes()
    bad = admin.post(f"/api/projects/{hh.pk}/imports",
                     {"file": SimpleUploadedFile("hh.jsonl", data), "axis": "honest"}, format="multipart")
    assert bad.status_code == 400 and "harmless" in str(bad.json()["axis"])
    with django_capture_on_commit_callbacks(execute=True):  # the import task runs (eagerly)
        ok = admin.post(f"/api/projects/{hh.pk}/imports",
                        {"file": SimpleUploadedFile("hh.jsonl", data), "axis": "harmless"}, format="multipart")
    assert ok.status_code == 202 and ok.json()["axis"] == "harmless"
    assert set(ExternalPreference.objects.values_list("axis", flat=True)) == {"harmless"}

    with pytest.raises(CommandError, match="unknown axis"):
        call_command("import_prompts", str(_hh_file(tmp_path)), "--project", hh.slug, "--axis", "honest")

    client.force_login(project_admin)
    page = client.get(f"/console/projects/{hh.pk}/upload")
    assert page.status_code == 200 and b'name="axis"' in page.content
    with django_capture_on_commit_callbacks(execute=True):  # the dry run
        posted = client.post(f"/console/projects/{hh.pk}/upload",
                             {"file": SimpleUploadedFile("hh2.jsonl", b"".join(data.splitlines(True)[:1])),
                              "axis": "harmless"})
    assert posted.status_code == 302
    dry_run = ImportJob.objects.order_by("-id").first()
    assert dry_run.dry_run and dry_run.axis == "harmless" and dry_run.status == "done"
    imported = import_after_dry_run(dry_run=dry_run, skip_invalid=False, actor=project_admin)
    assert imported.axis == "harmless"  # the import writes to the axis the dry run was for


# --------------------------------------------------------------------------- TRL


def _train_reward(files: list[Path], fmt: str, tmp_path: Path) -> Any:  # noqa: ANN401
    import datasets
    import torch
    from transformers import LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from tests.engine.test_trl_roundtrip import changed, common_args, tiny_llama_config
    from tests.engine.test_trl_roundtrip import snapshot as weights
    from training.engine.tiny import train_tokenizer

    dataset = datasets.load_dataset(fmt, data_files=[str(f) for f in files], split="train",
                                    cache_dir=str(tmp_path / "cache"))
    texts = [r["prompt"] + r["chosen"] for r in dataset] + [r["rejected"] for r in dataset]
    tokenizer = train_tokenizer(texts * 8, vocab_size=400)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1))
    before = weights(model)
    trainer = RewardTrainer(model=model, args=RewardConfig(**common_args(tmp_path / "out")),
                            train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)
    assert changed(before, model)
    return dataset


@pytest.mark.parametrize(("axis", "fmt"), [("helpful", "parquet"), ("harmless", "json")])
def test_per_axis_exports_train_reward_trainer_unmodified(hh: Project, tmp_path: Path, axis: str,
                                                          fmt: str) -> None:
    prompts_import(project=hh, path=_hh_file(tmp_path), axis="harmless")
    snapshot = build(hh, kinds=["pairs"], formats=["jsonl", "parquet"],
                     filters={"axis": axis, "include_external": True})
    files = [snapshot_dir(snapshot) / f"pairs-train.{'parquet' if fmt == 'parquet' else 'jsonl'}"]

    dataset = _train_reward(files, fmt, tmp_path)

    assert set(dataset["axis"]) == {axis}
    assert len(dataset) == snapshot.counts["pairs-train"] == (6 if axis == "helpful" else 3 + 3)
    assert {"chosen_safe", "rejected_safe", "safety_bin"} <= set(dataset.column_names)
