"""A reward model per label axis (issue #21): the HH-RLHF harmless file imported to the
harmless axis of a helpful + harmless project and its reward model trained through the
pipeline, beside today's single-axis run on the same file, same seeds, same steps.

    .venv/bin/python bench/axes_hh_bench.py                 # 60 steps each (the recorded setting)
    .venv/bin/python bench/axes_hh_bench.py --max-steps 3   # a smoke run

It reuses bench/reward_hh_bench.py's pipeline (its settings, private Django deployment,
training task and scorer) in one fresh SQLite database with two projects:

- **single**: a project without axes (the one implicit axis "overall"), as today:
  ``prompts_import`` of ../shared/data/hh_rlhf/harmless-base-test.jsonl.gz, a pairs
  snapshot with ``include_external`` (20% of prompts held out, seed 7), a reward
  TrainingRun with no axis named (so: the primary axis).
- **harmless**: a ``helpful_harmless`` project (axes "helpful", then "harmless"); the same
  file imported to the harmless axis (``ExternalPreference.axis = "harmless"``: by the
  importer's ``axis`` option when it has one, otherwise set on the imported rows here,
  which the JSON line says), a snapshot with the filter ``axis="harmless"`` (when the
  snapshot service does not know that filter yet, the filter is written on the snapshot
  row before its build task runs, which the JSON line says too) and a reward TrainingRun
  with ``config["axis"] = "harmless"``.

Both runs are executed by the real task ``training.tasks.train_run`` at the same time in
two processes (one torch thread each), and each registered ModelVersion is loaded back
from its folder and scores every held-out pair. The split is by prompt (the prompt's
content hash), so both projects hold out the same prompts; the JSON line (printed last)
has each held-out accuracy with a 95% bootstrap interval (resampling held-out pairs) and
the paired bootstrap interval of their difference.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import reward_hh_bench as base  # noqa: E402

AXIS = "harmless"
BOOTSTRAP = 10_000


def prepare(folder: Path, settings: base.Settings) -> dict[str, Any]:
    """migrate, then per project: import -> snapshot (its task) -> a queued reward run."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ.update(base.django_environment(folder, settings))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from django.db.models import Count

    import config.celery  # noqa: F401 - binds the shared tasks to the configured app
    from core.errors import DomainError
    from labeling.importing import prompts_import
    from labeling.models import ExternalPreference
    from labeling.services.projects import project_create
    from training.models import DatasetSnapshot
    from training.runs import data_files, training_run_create
    from training.snapshots import snapshot_create
    from training.tasks import build_snapshot

    call_command("migrate", verbosity=0, interactive=False)
    import_takes_axis = "axis" in inspect.signature(prompts_import).parameters
    out: dict[str, Any] = {"import_axis": "importer option" if import_takes_axis else "set on the imported rows"}
    for name, axes, axis in (("single", None, None), ("harmless", "helpful_harmless", AXIS)):
        started = time.monotonic()
        project = project_create(name=f"HH axes bench: {name}", slug=f"hh-axes-{name}",
                                 **({"axes": axes} if axes else {}))
        extra = {"axis": axis} if axis and import_takes_axis else {}
        report = prompts_import(project=project, path=base.DATA, skip_invalid=True,
                                source="hh-rlhf harmless-base test", **extra)
        if axis and not import_takes_axis:
            ExternalPreference.objects.filter(project=project).update(axis=axis)
        filters: dict[str, Any] = {"include_external": True}
        if axis:
            filters["axis"] = axis
        options = {"validation_fraction": 0.2, "split_seed": settings.seed}
        try:
            snapshot = snapshot_create(project=project, kinds=["pairs"], formats=["parquet"], filters=filters,
                                       options=options, enqueue=False)
            filter_note = "snapshot filter"
        except DomainError:  # the axis filter is not in snapshot_create yet: write it on the row
            snapshot = snapshot_create(project=project, kinds=["pairs"], formats=["parquet"],
                                       filters={"include_external": True}, options=options, enqueue=False)
            DatasetSnapshot.objects.filter(pk=snapshot.pk).update(filters={**snapshot.filters, "axis": axis})
            filter_note = "written on the snapshot row"
        build_snapshot.apply(args=[snapshot.pk])
        snapshot = DatasetSnapshot.objects.get(pk=snapshot.pk)
        if snapshot.status != "done":
            raise RuntimeError(f"snapshot {snapshot.pk} ended {snapshot.status}: {snapshot.error}")
        config = {**base.run_config(settings), **({"axis": axis} if axis else {})}
        run = training_run_create(project=project, kind="reward", snapshot=snapshot, config=config, enqueue=False)
        train_path, eval_path = data_files(snapshot, "reward")
        axes_counts = dict(ExternalPreference.objects.filter(project=project).values_list("axis")
                           .annotate(n=Count("id")).order_by())
        out[name] = {
            "run": run.pk, "run_axis": run.config["axis"], "snapshot": snapshot.pk,
            "snapshot_axis_filter": snapshot.filters.get("axis"),
            **({"axis_filter": filter_note} if axis else {}),
            "imported_pairs": report.preferences_added, "invalid_rows": report.invalid,
            "external_preferences_by_axis": {k or "(blank = primary)": v for k, v in axes_counts.items()},
            "train_pairs": snapshot.counts["pairs-train"], "eval_pairs": snapshot.counts["pairs-validation"],
            "eval": eval_path, "setup_seconds": round(time.monotonic() - started, 1),
        }
    connections.close_all()  # the children open their own
    return out


def run_and_score(run_id: int, eval_path: Path, out: Path, settings: base.Settings) -> dict[str, Any]:
    """The real training task, then the registered model's folder scores every held-out
    pair; returns the per-pair reward differences too (for the bootstrap)."""
    base._child_setup(settings)
    import django

    django.setup()
    import datasets

    import config.celery  # noqa: F401
    from training.artifacts import artifact_local
    from training.engine.reward import RewardScorer, pairwise_metrics, prepare_pairs
    from training.models import ModelVersion, TrainingRun
    from training.tasks import train_run

    started = time.monotonic()
    train_run.apply(args=[run_id])
    wall = time.monotonic() - started
    run = TrainingRun.objects.get(pk=run_id)
    if run.status != "done":
        raise RuntimeError(f"training run {run_id} ended {run.status}: {run.error}")
    version = ModelVersion.objects.get(source_run=run)
    scorer = RewardScorer.load(artifact_local(version.adapter_path), device="cpu",
                               batch_size=settings.eval_batch_size)
    held_out = datasets.load_dataset("parquet", data_files=str(eval_path), split="train",
                                     cache_dir=str(out / "hf-cache"))
    keys = [json.dumps([p, c, r], sort_keys=True) for p, c, r in
            zip(held_out["prompt"], held_out["chosen"], held_out["rejected"], strict=True)]
    pairs = prepare_pairs(held_out, scorer.tokenizer, replace(scorer.format, overlong="truncate"),
                          use_margin=False).dataset
    chosen, rejected = scorer.score_ids(pairs["chosen_ids"]), scorer.score_ids(pairs["rejected_ids"])
    metrics = pairwise_metrics(chosen, rejected)
    results = run.results
    return {
        "accuracy": metrics["accuracy"], "mean_margin": metrics["mean_margin"],
        "task_eval_accuracy": results["eval"]["accuracy"], "steps": results["global_step"],
        "train_pairs": results["train_pairs"], "train_runtime": results["train_runtime"],
        "wall_seconds": wall, "model_version": f"{version.name} v{version.version}",
        "model_version_axis": version.axis, "manifest_axis": _manifest_axis(artifact_local(version.adapter_path)),
        "diffs": {key: c - r for key, c, r in zip(keys, chosen, rejected, strict=True)},
    }


def _manifest_axis(folder: Path) -> str | None:
    manifest = Path(folder) / "manifest.json"
    return json.loads(manifest.read_text()).get("config", {}).get("axis") if manifest.exists() else None


def bootstrap(correct: list[bool], seed: int, draws: int = BOOTSTRAP) -> list[float]:
    """95% percentile interval of the accuracy, resampling pairs with replacement."""
    rng, n = random.Random(seed), len(correct)
    stats = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return [round(stats[int(0.025 * draws)], 4), round(stats[int(0.975 * draws) - 1], 4)]


def paired_bootstrap(a: list[bool], b: list[bool], seed: int, draws: int = BOOTSTRAP) -> list[float]:
    """95% interval of accuracy(b) - accuracy(a) on the same pairs, resampled together."""
    rng, n = random.Random(seed), len(a)
    stats = []
    for _ in range(draws):
        picks = [rng.randrange(n) for _ in range(n)]
        stats.append(sum(b[i] - a[i] for i in picks) / n)
    stats.sort()
    return [round(stats[int(0.025 * draws)], 4), round(stats[int(0.975 * draws) - 1], 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, default=base.PIPELINE_MAX_STEPS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "axes_hh")
    parser.add_argument("--sequential", action="store_true", help="train the two runs one after the other")
    options = parser.parse_args()
    settings = base.Settings(threads=options.threads, max_steps=options.max_steps if options.max_steps > 0 else -1)

    started = time.monotonic()
    data = prepare(options.workdir / "pipeline", settings)
    jobs = {name: (run_and_score, (data[name]["run"], data[name]["eval"], options.workdir / name, settings))
            for name in ("single", "harmless")}
    runs = base.run_both(jobs, options.sequential)

    single, harmless = runs["single"], runs["harmless"]
    shared = sorted(set(single["diffs"]) & set(harmless["diffs"]))
    result: dict[str, Any] = {"bench": "axes_hh", "data": base.DATA.name, "settings": asdict(settings),
                              "import_axis": data["import_axis"], "same_held_out_pairs": len(shared)}
    for name, run in runs.items():
        correct = [d > 0 for d in run["diffs"].values()]
        info = {k: v for k, v in data[name].items() if k != "eval"}
        result[name] = {**info, **{k: round(v, 4) if isinstance(v, float) else v
                                   for k, v in run.items() if k != "diffs"},
                        "accuracy_ci95": bootstrap(correct, seed=settings.seed)}
        print(f"{name:>9}: held-out accuracy {run['accuracy']:.4f} (95% CI {result[name]['accuracy_ci95']}) over "
              f"{len(correct)} pairs, {run['steps']} steps, registered {run['model_version']} "
              f"(axis {run['model_version_axis'] or '(blank)'}; manifest {run['manifest_axis']})")
    if shared:
        a = [single["diffs"][k] > 0 for k in shared]
        b = [harmless["diffs"][k] > 0 for k in shared]
        result["difference_points"] = round(100 * (sum(b) - sum(a)) / len(shared), 2)
        result["difference_ci95_points"] = [round(100 * x, 2) for x in paired_bootstrap(a, b, seed=settings.seed)]
        result["single_in_harmless_ci"] = (result["harmless"]["accuracy_ci95"][0] <= single["accuracy"]
                                           <= result["harmless"]["accuracy_ci95"][1])
    result.update({
        "schedule": "sequential" if options.sequential else "concurrent",
        "seconds": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    })
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
