"""Direct preference optimisation: TRL's DPOTrainer on a snapshot's pairs, with LoRA.

    from training.engine.dpo import DPOTrainingConfig, train
    results = train(DPOTrainingConfig(model=str(sft_out / "model"), beta=0.1), "dpo-train.parquet",
                    "dpo-validation.parquet", out)

The reference model is never a second copy of the weights:

- from a full model, TRL wraps it in a new LoRA adapter and ``ref_model=None`` makes the
  frozen base, adapter disabled, the reference;
- from a LoRA adapter folder of an earlier run (SFT, say), the adapter is loaded as a
  trainable PeftModel and TRL copies it into a frozen "ref" adapter: the reference is
  the starting policy (base + starting adapter), not the bare base. The "ref" adapter is
  deleted before the final save, so output_dir/model holds the one trained adapter.

Full fine-tuning (``use_lora=False``) loads a second copy as the reference.

Pairs rows are used as exported (``prompt``/``chosen``/``rejected`` as messages, which TRL
renders with the tokenizer's chat template exactly as the sampler renders prompts: see
``training.engine.prompt_format``); text rows are refused, and the provenance columns
are dropped. Reported: TRL's reward accuracies and margins
(implicit rewards beta * log pi/pi_ref) from the training logs and on the eval file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import checkpoints, prompt_format, trainer_config
from training.engine.callbacks import MetricsSink, callbacks_for
from training.engine.trainer_config import TrainingConfig

KIND = "dpo"


@dataclass
class DPOTrainingConfig(TrainingConfig):
    """A DPO run: ``model`` is a causal LM folder or a LoRA adapter folder of an earlier run."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak AdamW learning rate."})
    beta: float = field(default=0.1, metadata={"help": "Strength of the pull toward the reference (DPO's beta)."})
    loss_type: str = field(
        default="sigmoid",
        metadata={"help": "TRL loss: 'sigmoid' (DPO), 'ipo', 'hinge', 'robust', 'apo_zero', ... (see DPOConfig)."},
    )
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Assumed share of flipped labels (cDPO / robust); 0 trusts every label."}
    )


def train(config: DPOTrainingConfig, train_path: Path | str, eval_path: Path | str | None,
          output_dir: Path | str, on_metrics: MetricsSink | None = None, resume: bool = True) -> dict[str, Any]:
    """DPO on a pairs file; returns the results (also in results.json)."""
    from trl import DPOConfig, DPOTrainer

    run = checkpoints.prepare_run(output_dir, train_path, eval_path, resume)
    model, tokenizer, peft_config = trainer_config.load_causal_lm(config)
    train_rows = preference_rows(checkpoints.load_rows(train_path, run.cache_dir))
    eval_rows = preference_rows(checkpoints.load_rows(eval_path, run.cache_dir)) if eval_path else None

    args = DPOConfig(
        **trainer_config.trainer_arguments(config, run.checkpoint_dir),
        max_length=config.max_length,
        beta=config.beta,
        loss_type=[config.loss_type],
        label_smoothing=config.label_smoothing,
    )
    samples_per_step = trainer_config.samples_per_step(config)
    metrics, callbacks = callbacks_for(
        KIND, config, run, on_metrics, samples_per_step,
        {"accuracy": "rewards/accuracies", "margin": "rewards/margins", "reward": "rewards/chosen"},
    )
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
                         processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)

    logged = [h for h in metrics.history if h["event"] == "log" and h["accuracy"] is not None]
    results: dict[str, Any] = {
        "kind": KIND,
        "status": "cancelled" if metrics.cancelled else "completed",
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "train_runtime": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_pairs": len(train_rows),
        "eval_pairs": len(eval_rows) if eval_rows is not None else 0,
        "first_reward_accuracy": logged[0]["accuracy"] if logged else None,
        "last_reward_accuracy": logged[-1]["accuracy"] if logged else None,
        "last_reward_margin": logged[-1]["margin"] if logged else None,
        "history": metrics.history,
    }
    if metrics.cancelled:
        return checkpoints.finish(run, results)
    if eval_rows is not None:
        scores = trainer.evaluate()
        results["eval"] = {
            "reward_accuracy": scores.get("eval_rewards/accuracies"),
            "reward_margin": scores.get("eval_rewards/margins"),
            "loss": scores.get("eval_loss"),
            "logs": scores,
        }
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        unwrapped.delete_adapter("ref")  # TRL's frozen copy of the starting adapter: not part of the result
    model_dir = run.output_dir / checkpoints.MODEL
    checkpoints.save_final(trainer, tokenizer, model_dir, {
        "kind": KIND, "step": trainer.state.global_step, "config": config.to_dict(),
        "dataset_sha256": run.dataset_hash, "metrics": results.get("eval", {}),
        "format": {"base_model": trainer_config.adapter_base(config.model) or config.model,
                   "lora": config.use_lora or trainer_config.adapter_base(config.model) is not None},
    })
    results["model_dir"] = str(model_dir)
    return checkpoints.finish(run, results)


def preference_rows(rows: Any) -> Any:
    """The three columns DPOTrainer reads; the provenance columns (some all-null) are dropped.
    Raises ValueError for text rows."""
    prompt_format.require_messages(rows, KIND, ["prompt", "chosen", "rejected"])
    return rows.select_columns(["prompt", "chosen", "rejected"])
