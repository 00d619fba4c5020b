"""Online RL against a trained reward model: TRL's GRPOTrainer or RLOOTrainer, with LoRA.

    from training.engine.rl import RLTrainingConfig, train
    config = RLTrainingConfig(model=str(sft_out / "model"), reward_model=str(rm_out / "model"),
                              algorithm="grpo", num_generations=4, temperature=1.0, beta=0.04)
    results = train(config, "prompts.parquet", None, out)

For each prompt the policy samples ``num_generations`` (K) completions at ``temperature``;
the reward model scores each (prompt, completion) with `training.engine.reward.RewardScorer`,
which reproduces the reward model's training format (TRL's built-in reward-model path
would tokenize without special tokens or EOS, so it is not used); GRPO normalises the
rewards within the K samples of a prompt, RLOO uses the leave-one-out baseline. ``beta``
> 0 adds the KL penalty to the reference and makes TRL log ``kl`` (reported as "kl").

Reference model: the policy with its LoRA adapter disabled. Starting from a LoRA adapter
folder (an SFT or DPO result), that adapter is merged into the base first, so the
reference is the starting policy; the final model is then saved merged (full weights).
Starting from a full model, the final model is the adapter.

Prompts come from any snapshot file with a ``prompt`` column of messages (DPO, KTO,
conversational pairs) or ``messages`` (SFT: the answer is dropped), one per distinct
prompt; the policy renders them with its chat template, as the sampler does
(``training.engine.prompt_format``), and text prompts are refused.
``per_device_train_batch_size`` counts completions, so it (times processes and
accumulation) must be a multiple of ``num_generations``.

Per-axis reward models (issue #21): instead of ``reward_model``, ``reward_models`` maps
label axes to reward model folders and ``combination`` says how their scores become one
reward (``training.engine.combination``; Llama 2's rule: the safety model's score where
the prompt is flagged unsafe, by a boolean ``unsafe`` column in the prompts file, or the
safety score is below the threshold, else the helpfulness model's). Both are recorded in
the config, hence in the model's manifest and the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.engine import checkpoints, prompt_format, trainer_config
from training.engine.callbacks import MetricsSink, callbacks_for
from training.engine.combination import Combination, combination_from_dict, combine
from training.engine.manifest import MANIFEST, write_manifest
from training.engine.trainer_config import TrainingConfig

KIND = "rl"
ALGORITHMS = ("grpo", "rloo")


@dataclass
class RLTrainingConfig(TrainingConfig):
    """An online RL run: ``model`` is the policy (causal LM or adapter folder),
    ``reward_model`` an Ordinal reward model folder (output_dir/model of a reward run)."""

    reward_model: str = field(default="", metadata={"help": "Folder of a trained Ordinal reward model."})
    algorithm: str = field(default="grpo", metadata={"help": "'grpo' (GRPOTrainer) or 'rloo' (RLOOTrainer)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak AdamW learning rate."})
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt (K)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the policy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold; 1.0 is off."})
    max_completion_length: int = field(default=256, metadata={"help": "Longest sampled completion, in tokens."})
    beta: float = field(
        default=0.04, metadata={"help": "KL penalty toward the reference; > 0 also reports the KL."}
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Completions per reward model forward pass."})
    reward_models: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Per-axis reward models, {axis key: folder of a trained reward model}, combined by "
                          "'combination'; replaces reward_model."},
    )
    combination: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "How reward_models' scores become one reward: {'rule': 'llama2', 'safety_axis', "
                          "'helpful_axis', 'safety_threshold': 0.15} (training.engine.combination)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_models is not None:
            if self.reward_model:
                raise ValueError("give reward_model or reward_models (per axis), not both")
            if not isinstance(self.reward_models, dict) or not self.reward_models or not all(
                    isinstance(k, str) and isinstance(v, str) and v for k, v in self.reward_models.items()):
                raise ValueError("reward_models must map axis keys to reward model folders")
            if self.combination is None:
                raise ValueError("reward_models needs a combination, e.g. {'rule': 'llama2', ...}")
            combination_from_dict(self.combination, set(self.reward_models))
        elif self.combination is not None:
            raise ValueError("combination needs reward_models (one reward model per axis)")
        elif not self.reward_model:
            raise ValueError("reward_model is required: the folder of a trained reward model")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2: both algorithms compare samples of a prompt")


def train(config: RLTrainingConfig, train_path: Path | str, eval_path: Path | str | None,
          output_dir: Path | str, on_metrics: MetricsSink | None = None, resume: bool = True) -> dict[str, Any]:
    """Optimise the policy against the reward model; returns the results (also in results.json)."""
    completions_per_step = trainer_config.samples_per_step(config)
    if completions_per_step % config.num_generations:
        raise ValueError(f"{completions_per_step} completions per step is not a multiple of num_generations "
                         f"({config.num_generations}): adjust per_device_train_batch_size")
    run = checkpoints.prepare_run(output_dir, train_path, eval_path, resume)
    from_adapter = trainer_config.adapter_base(config.model) is not None
    model, tokenizer, peft_config = trainer_config.load_causal_lm(config, merge_adapter=True)
    prompts = unique_prompts(checkpoints.load_rows(train_path, run.cache_dir))
    eval_prompts = unique_prompts(checkpoints.load_rows(eval_path, run.cache_dir)) if eval_path else None
    if config.reward_models is None:  # the unsafe flags only matter to a combination
        prompts = prompts.select_columns(["prompt"])
        eval_prompts = eval_prompts.select_columns(["prompt"]) if eval_prompts is not None else None
    trainer_class, args = _trainer_and_args(config, run.checkpoint_dir)
    scorer = reward_function(config, str(args.device))
    metrics, callbacks = callbacks_for(KIND, config, run, on_metrics, completions_per_step,
                                              {"reward": "reward", "kl": "kl"})
    trainer = trainer_class(model=model, reward_funcs=[scorer], args=args, train_dataset=prompts,
                            eval_dataset=eval_prompts, processing_class=tokenizer, peft_config=peft_config,
                            callbacks=callbacks)
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)

    logged = [h for h in metrics.history if h["event"] == "log" and h["reward"] is not None]
    results: dict[str, Any] = {
        "kind": KIND,
        "algorithm": config.algorithm,
        "combination": config.combination,
        "status": "cancelled" if metrics.cancelled else "completed",
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "train_runtime": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "prompts": len(prompts),
        "first_reward": logged[0]["reward"] if logged else None,
        "last_reward": logged[-1]["reward"] if logged else None,
        "last_kl": logged[-1]["kl"] if logged else None,
        "history": metrics.history,
    }
    if metrics.cancelled:
        return checkpoints.finish(run, results)
    if eval_prompts is not None:
        scores = trainer.evaluate()
        results["eval"] = {"reward": scores.get("eval_reward"), "kl": scores.get("eval_kl"), "logs": scores}
    model_dir = run.output_dir / checkpoints.MODEL
    metadata = {
        "kind": KIND, "step": trainer.state.global_step, "config": config.to_dict(),
        "dataset_sha256": run.dataset_hash, "metrics": results.get("eval", {}),
        "format": {"base_model": trainer_config.adapter_base(config.model) or config.model,
                   "lora": config.use_lora and not from_adapter, "merged": from_adapter},
    }
    if from_adapter:
        _save_merged(trainer, tokenizer, model_dir, metadata)
    else:
        checkpoints.save_final(trainer, tokenizer, model_dir, metadata)
    results["model_dir"] = str(model_dir)
    return checkpoints.finish(run, results)


def _trainer_and_args(config: RLTrainingConfig, checkpoint_dir: Path) -> tuple[type, Any]:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    trainer_class, config_class = (GRPOTrainer, GRPOConfig) if config.algorithm == "grpo" else (RLOOTrainer, RLOOConfig)
    args = config_class(
        **trainer_config.trainer_arguments(config, checkpoint_dir),
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        beta=config.beta,
        log_completions=False,
    )
    return trainer_class, args


def unique_prompts(rows: Any) -> Any:
    """One ``{"prompt"}`` row per distinct prompt (messages), in file order, with its
    boolean ``unsafe`` flag when the file has that column, or an Ordinal snapshot's
    ``flags`` column (where "unsafe" means people marked one of its answers unsafe); a
    prompt is unsafe when any of its rows says so. Raises ValueError for text prompts."""
    if "prompt" not in rows.column_names and "messages" in rows.column_names:
        rows = rows.map(lambda row: {"prompt": row["messages"][:-1]})
    prompt_format.require_messages(rows, KIND, ["prompt"])
    seen: dict[str, int] = {}
    keep = []
    if "unsafe" in rows.column_names:
        flags = rows["unsafe"]
    elif "flags" in rows.column_names:
        flags = ["unsafe" in (row_flags or []) for row_flags in rows["flags"]]
    else:
        flags = None
    unsafe: list[bool] = []
    for index, prompt in enumerate(rows["prompt"]):
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen[key] = len(keep)
            keep.append(index)
            unsafe.append(False)
        if flags is not None and flags[index]:
            unsafe[seen[key]] = True
    unique = rows.select(keep).select_columns(["prompt"])
    return unique.add_column("unsafe", unsafe) if flags is not None else unique


class CombinedReward:
    """A TRL reward function over several per-axis reward models: every model scores each
    completion and `combination` picks the reward (TRL passes the prompts' ``unsafe``
    column, when the dataset has one, as a keyword)."""

    __name__ = "ordinal_combined_reward"  # TRL names the reward column after it

    def __init__(self, scorers: dict[str, Any], combination: Combination) -> None:
        self.scorers, self.combination = scorers, combination

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float]:
        scores = {axis: scorer(prompts, completions) for axis, scorer in self.scorers.items()}
        return combine(self.combination, scores, kwargs.get("unsafe"))


def reward_function(config: RLTrainingConfig, device: str) -> Any:
    """The one reward model, or the per-axis models under their combination."""
    from training.engine.reward import RewardScorer

    if config.reward_models is None:
        return RewardScorer.load(config.reward_model, device=device, batch_size=config.reward_batch_size)
    combination = combination_from_dict(config.combination or {}, set(config.reward_models))
    scorers = {axis: RewardScorer.load(folder, device=device, batch_size=config.reward_batch_size)
               for axis, folder in sorted(config.reward_models.items())}
    return CombinedReward(scorers, combination)


def _save_merged(trainer: Any, tokenizer: Any, folder: Path, metadata: dict[str, Any]) -> None:
    """Merge the trained adapter into the (already merged) starting policy and save full
    weights: the adapter alone would need a base that exists only in this process."""
    (folder / MANIFEST).unlink(missing_ok=True)
    if trainer.is_world_process_zero():
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        merged.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        write_manifest(folder, metadata)
    trainer.accelerator.wait_for_everyone()
