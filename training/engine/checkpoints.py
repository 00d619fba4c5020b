"""A training run's output folder, the same for every kind (reward, sft, dpo, rl)::

    checkpoints/checkpoint-<step>/   what transformers' Trainer saves (model as safetensors,
                                     optimizer, scheduler, RNG, trainer_state.json), then
                                     manifest.json, written LAST (callbacks.py)
    model/                           the final model (a LoRA adapter or full weights) and its
                                     tokenizer, then manifest.json, written LAST
    results.json                     what `train` returned

A folder is complete when its ``manifest.json`` exists and every file it lists has the
recorded size and sha256 (training/engine/manifest.py). `resume_checkpoint` picks the
newest complete checkpoint (and removes newer, incomplete ones), so a run killed mid-save
resumes from the one before, and the Trainer's ``torch.load(..., weights_only=True)`` only
ever reads files whose hashes this code recorded when it wrote them.

torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.engine.manifest import MANIFEST, file_sha256, read_manifest, write_manifest

CHECKPOINTS = "checkpoints"
MODEL = "model"
RESULTS = "results.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def load_rows(path: Path | str, cache_dir: Path) -> Any:
    """A `datasets.Dataset` from a Parquet or JSONL file written by training.engine.writers
    (memory-mapped Arrow under ``cache_dir``, so a large snapshot does not fill RAM)."""
    import datasets

    path = Path(path)
    builder = "parquet" if path.suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir))


def dataset_sha256(*paths: Path | str | None) -> str:
    """One digest over the training inputs: a checkpoint of other data is never resumed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(b"-" if path is None else file_sha256(Path(path)).encode())
    return digest.hexdigest()


def resume_checkpoint(output_dir: Path, dataset_hash: str) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint under output_dir/checkpoints, or None to start fresh,
    and the names of newer incomplete ones, which are removed (a half-written save is
    worthless and would otherwise count toward save_total_limit).

    Raises ValueError if the checkpoint was trained on other data."""
    root = output_dir / CHECKPOINTS
    found = sorted(
        ((int(m.group(1)), p) for p in root.glob("checkpoint-*") if (m := _CHECKPOINT.fullmatch(p.name))),
        reverse=True,
    )
    discarded = []
    for step, folder in found:
        manifest = read_manifest(folder, verify=True)
        if manifest is None or manifest.get("step") != step:
            shutil.rmtree(folder, ignore_errors=True)
            discarded.append(folder.name)
            continue
        if manifest.get("dataset_sha256") != dataset_hash:
            raise ValueError(f"{folder} was trained on other data; use a new output folder for this run")
        return folder, discarded
    return None, discarded


def save_final(trainer: Any, tokenizer: Any, folder: Path, metadata: Mapping[str, Any]) -> Path:
    """The trained model and tokenizer in ``folder``, manifest last (main process writes)."""
    (folder / MANIFEST).unlink(missing_ok=True)  # a rerun overwrites: incomplete until the end
    trainer.save_model(str(folder))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(folder))
        write_manifest(folder, metadata)
    trainer.accelerator.wait_for_everyone()
    return folder


def write_results(output_dir: Path, results: Mapping[str, Any]) -> None:
    tmp = output_dir / f".{RESULTS}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, output_dir / RESULTS)


@dataclass
class RunContext:
    """What a module's ``train`` sets up before building its trainer."""

    output_dir: Path
    checkpoint_dir: Path
    cache_dir: Path
    dataset_hash: str
    resume_from: Path | None
    discarded_checkpoints: list[str]


def prepare_run(output_dir: Path | str, train_path: Path | str, eval_path: Path | str | None,
                resume: bool) -> RunContext:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset_hash = dataset_sha256(train_path, eval_path)
    resume_from, discarded = (None, [])
    if resume:
        resume_from, discarded = resume_checkpoint(output_dir, dataset_hash)
    elif (output_dir / CHECKPOINTS).exists():
        shutil.rmtree(output_dir / CHECKPOINTS)  # a fresh start: old checkpoints would mix in
    return RunContext(output_dir, output_dir / CHECKPOINTS, output_dir / ".datasets-cache", dataset_hash,
                      resume_from, discarded)


def finish(run: RunContext, results: dict[str, Any]) -> dict[str, Any]:
    """Write results.json and drop the datasets cache (derived data, rebuilt on a resume)."""
    results = {**results, "resumed_from": str(run.resume_from) if run.resume_from else None,
               "discarded_checkpoints": run.discarded_checkpoints}
    if int(os.environ.get("RANK", "0")) == 0:
        write_results(run.output_dir, results)
        shutil.rmtree(run.cache_dir, ignore_errors=True)
    return results
