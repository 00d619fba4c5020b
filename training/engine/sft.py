"""Supervised fine-tuning: TRL's SFTTrainer on a snapshot's SFT rows, loss on the answer only.

    from training.engine.sft import SFTTrainingConfig, train
    results = train(SFTTrainingConfig(model=str(tiny_dir)), "sft-train.parquet", None, out)

Rows are ``{"messages": [...]}`` or ``{"prompt": [...], "completion": [...]}`` (messages),
as ``training.engine.datasets.build_sft`` writes them by default. A ``messages`` row is
split into ``prompt`` = every message but the last and ``completion`` = the last (the
answer), so TRL's completion-only loss applies; TRL's ``assistant_only_loss`` would
instead need a chat template with generation markers, which most templates (the built-in
tiny model's included) do not have. TRL renders the rows with the tokenizer's chat
template (the plain format for a model without one), exactly as the sampler renders
prompts (``training.engine.prompt_format``); text rows are refused, since no template can
render them. Sequences longer than max_length are truncated at the end (TRL's
``keep_start``).

LoRA by default. The final adapter (or full model) and tokenizer go to output_dir/model;
a folder that holds an adapter loads with ``AutoModelForCausalLM.from_pretrained`` when
peft is installed, so the sampling engine can use it as the next policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import checkpoints, prompt_format, trainer_config
from training.engine.callbacks import MetricsSink, callbacks_for
from training.engine.trainer_config import TrainingConfig

KIND = "sft"


@dataclass
class SFTTrainingConfig(TrainingConfig):
    """An SFT run: ``model`` is a causal LM folder, or a LoRA adapter folder from an earlier
    run (training continues that adapter)."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    packing: bool = field(
        default=False, metadata={"help": "Pack several examples per max_length sequence (faster on GPU)."}
    )


def train(config: SFTTrainingConfig, train_path: Path | str, eval_path: Path | str | None,
          output_dir: Path | str, on_metrics: MetricsSink | None = None, resume: bool = True) -> dict[str, Any]:
    """Fine-tune on an SFT file; returns the results (also in results.json)."""
    from trl import SFTConfig, SFTTrainer

    run = checkpoints.prepare_run(output_dir, train_path, eval_path, resume)
    model, tokenizer, peft_config = trainer_config.load_causal_lm(config)
    train_rows = prompt_completion(checkpoints.load_rows(train_path, run.cache_dir))
    eval_rows = prompt_completion(checkpoints.load_rows(eval_path, run.cache_dir)) if eval_path else None

    args = SFTConfig(
        **trainer_config.trainer_arguments(config, run.checkpoint_dir),
        max_length=config.max_length,
        completion_only_loss=True,
        packing=config.packing,
    )
    samples_per_step = trainer_config.samples_per_step(config)
    metrics, callbacks = callbacks_for(KIND, config, run, on_metrics, samples_per_step,
                                              {"accuracy": "mean_token_accuracy"})
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)

    results: dict[str, Any] = {
        "kind": KIND,
        "status": "cancelled" if metrics.cancelled else "completed",
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "train_runtime": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_examples": len(train_rows),
        "eval_examples": len(eval_rows) if eval_rows is not None else 0,
        "history": metrics.history,
    }
    if metrics.cancelled:
        return checkpoints.finish(run, results)
    if eval_rows is not None:
        results["eval"] = trainer.evaluate()
    model_dir = run.output_dir / checkpoints.MODEL
    checkpoints.save_final(trainer, tokenizer, model_dir, {
        "kind": KIND, "step": trainer.state.global_step, "config": config.to_dict(),
        "dataset_sha256": run.dataset_hash, "metrics": results.get("eval", {}),
        "format": {"base_model": trainer_config.adapter_base(config.model) or config.model, "lora": config.use_lora},
    })
    results["model_dir"] = str(model_dir)
    return checkpoints.finish(run, results)


def prompt_completion(rows: Any) -> Any:
    """``{"prompt", "completion"}`` rows (TRL's prompt-completion shape, messages) from SFT
    rows, without the provenance columns. Raises ValueError for text rows."""
    if "messages" in rows.column_names:
        rows = rows.map(_split_messages, remove_columns=rows.column_names)
    prompt_format.require_messages(rows, KIND, ["prompt", "completion"])
    return rows.select_columns(["prompt", "completion"])


def _split_messages(row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise ValueError("an SFT conversation must end with the assistant's answer after at least one message")
    return {"prompt": messages[:-1], "completion": messages[-1:]}
