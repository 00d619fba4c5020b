"""What every trainer module (reward, sft, dpo, rl) shares: the config fields they have in
common, device settings, model loading, metric streaming and checkpoints.

Output folder of a run (``output_dir``), the same for every kind::

    checkpoints/checkpoint-<step>/   what transformers' Trainer saves (model as safetensors,
                                     optimizer, scheduler, RNG, trainer_state.json), then
                                     manifest.json, written LAST by `CheckpointManifest`
    model/                           the final model (a LoRA adapter or full weights) and its
                                     tokenizer, then manifest.json, written LAST
    results.json                     what `train` returned

A folder is complete when its ``manifest.json`` exists and every file it lists has the
recorded size and sha256. `resume_checkpoint` picks the newest complete checkpoint (and
removes newer, incomplete ones), so a run killed mid-save resumes from the one before,
and the Trainer's ``torch.load(..., weights_only=True)`` only ever reads files whose
hashes this code recorded when it wrote them.

Metric streaming: the caller passes ``on_metrics(event: dict) -> bool | None``. Events:

- ``{"event": "start", "step", "max_steps"}`` when training starts (or resumes);
- ``{"event": "log", "step", "epoch", "loss", "accuracy", "reward", "margin", "kl",
  "learning_rate", "samples_per_second", "logs": {...raw Trainer logs}}`` every
  ``logging_steps`` (fields a kind does not have are None);
- ``{"event": "eval", "step", ..., "logs"}`` for evaluation logs;
- ``{"event": "checkpoint", "step", "path"}`` after a checkpoint is complete;
- ``{"event": "heartbeat", "step", "time"}`` at most every ``heartbeat_seconds``.

Returning ``False`` (not None) from any call cancels: training stops at the end of the
current step and `train` returns ``{"status": "cancelled", ...}`` without a final model.
Only the main process calls ``on_metrics``; its answer is broadcast to the others.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.engine import prompt_format

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
CHECKPOINTS = "checkpoints"
MODEL = "model"
RESULTS = "results.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")

MetricsSink = Callable[[dict[str, Any]], "bool | None"]


# --------------------------------------------------------------------------- config


@dataclass
class TrainingConfig:
    """Fields every kind has. Stored as JSON on the run row and in every manifest."""

    model: str = field(
        default="",
        metadata={"help": "Model to start from: a local folder written by save_pretrained (a full model, or a "
                          "LoRA adapter folder written by an earlier Ordinal run) or a hub id (in the offline "
                          "default, only local folders work)."},
    )
    use_lora: bool = field(default=True, metadata={"help": "Train LoRA adapters instead of every weight."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names LoRA wraps; None uses peft's default for the architecture "
                          "(q_proj/v_proj for Llama, query/value for BERT); 'all-linear' wraps every linear "
                          "layer but the output head."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "QLoRA: load the frozen base in 4-bit NF4 with bitsandbytes (CUDA GPU and LoRA only)."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training set (if max_steps <= 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Rows per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Rows per device per eval batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of the steps spent warming up the rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    max_length: int = field(default=512, metadata={"help": "Longest tokenized sequence (prompt + answer)."})
    logging_steps: int = field(default=10, metadata={"help": "Optimizer steps between metric events."})
    save_steps: int = field(default=100, metadata={"help": "Optimizer steps between checkpoints."})
    save_total_limit: int = field(
        default=2, metadata={"help": "Checkpoints kept; at least 2, so a corrupt newest one has a fallback."}
    )
    seed: int = field(default=0, metadata={"help": "Seeds model heads, LoRA init, data order and sampling."})
    bf16: bool = field(default=True, metadata={"help": "bf16 mixed precision; applied only on a GPU that has it."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in backward to save memory; applied only on GPU."}
    )
    heartbeat_seconds: float = field(default=30.0, metadata={"help": "Least time between heartbeat events."})

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("config.model is required: a model folder or hub id")
        if self.save_total_limit < 2:
            raise ValueError("save_total_limit must be at least 2 (the fallback when the newest is corrupt)")
        if self.load_in_4bit and self.use_lora is False:  # None: a kind's "auto", which picks LoRA
            raise ValueError("load_in_4bit (QLoRA) trains LoRA adapters: set use_lora=True")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """The config from its JSON form; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
        for name, value in data.items():
            if not _json_value_fits(value, str(known[name].type)):
                raise ValueError(f"{name} must be {known[name].type}, got {value!r}")
        return cls(**data)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
    "list[str]": (list,),
}


def _json_value_fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a config field's annotation ("int", "float | None",
    "list[str] | str | None"); annotations it doesn't know are not checked."""
    allowed: list[type] = []
    for part in (p.strip() for p in annotation.split("|")):
        if part not in _JSON_TYPES:
            return True
        allowed.extend(_JSON_TYPES[part])
    if isinstance(value, bool) and bool not in allowed:
        return False  # JSON true is not a number here, though Python's bool is an int
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        return False
    return isinstance(value, tuple(allowed))


def trainer_arguments(config: TrainingConfig, checkpoint_dir: Path) -> dict[str, Any]:
    """Keyword arguments shared by every TRL config, with the device-dependent ones set
    explicitly: TRL defaults to bf16=True and gradient checkpointing on, which on a CPU
    means slow emulated bf16 and recomputation for no memory win.

    transformers 5 always saves safetensors (its ``save_safetensors`` argument is gone)."""
    gpu = on_gpu()
    import torch

    return {
        "output_dir": str(checkpoint_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_ratio,  # a float below 1 is a ratio in transformers 5
        "weight_decay": config.weight_decay,
        "lr_scheduler_type": config.lr_scheduler_type,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "eval_strategy": "no",
        "seed": config.seed,
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": not gpu,
        "bf16": gpu and config.bf16 and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": gpu and config.gradient_checkpointing,
        "dataloader_num_workers": 0,
    }


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------- models


def quantization_config(config: TrainingConfig) -> Any:
    """BitsAndBytes 4-bit NF4 (QLoRA) when asked for, else None; a clear error where it can't run."""
    if not config.load_in_4bit:
        return None
    if not on_gpu():
        raise ValueError("load_in_4bit (QLoRA) needs a CUDA GPU; this machine has none. Set load_in_4bit=False.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError("load_in_4bit (QLoRA) needs the bitsandbytes package on the GPU worker") from error
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def model_load_kwargs(config: TrainingConfig) -> dict[str, Any]:
    """from_pretrained arguments: float32 on CPU and for full fine-tuning (master weights),
    bf16 for a frozen LoRA base on a bf16 GPU, 4-bit for QLoRA."""
    import torch

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if on_gpu() and config.use_lora and config.bf16 and torch.cuda.is_bf16_supported():
        kwargs["dtype"] = torch.bfloat16
    quantization = quantization_config(config)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # one whole copy per GPU
    return kwargs


def lora_config(config: TrainingConfig, task_type: str, modules_to_save: list[str] | None = None) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, modules_to_save=modules_to_save,
    )


def adapter_base(path: str) -> str | None:
    """The base model of a LoRA adapter folder, or None if ``path`` is not one."""
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.is_file():
        return None
    return json.loads(adapter_config.read_text())["base_model_name_or_path"]


def load_causal_lm(config: TrainingConfig, *, merge_adapter: bool = False) -> tuple[Any, Any, Any]:
    """(model, tokenizer, peft_config) for SFT, DPO and RL.

    A full model gets a new LoRA adapter through ``peft_config`` (TRL wraps it). An adapter
    folder from an earlier run is loaded as a trainable PeftModel and peft_config is None,
    so training continues that adapter (DPO then clones it as its frozen "ref" adapter);
    with ``merge_adapter`` it is merged into the base instead and a new adapter is made, so
    "adapter disabled" (GRPO/RLOO's reference) means the starting policy, not the bare base."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(config.seed)  # LoRA's random init
    kwargs = model_load_kwargs(config)
    base = adapter_base(config.model)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    # A base model gets the plain format as its chat template: TRL renders the training rows
    # (messages) with it, the sampler renders prompts with it, and it is saved with the model.
    prompt_format.ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs mask padding by attention_mask; pad may equal EOS
    if base is None:
        model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
        peft_config = lora_config(config, "CAUSAL_LM") if config.use_lora else None
    else:
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        model = PeftModel.from_pretrained(model, config.model, is_trainable=not merge_adapter)
        peft_config = None
        if merge_adapter:
            if not config.use_lora:  # the reference would be reloaded from the bare base's folder
                raise ValueError("full fine-tuning cannot start from an adapter folder here: merge it into a "
                                 "full model first, or set use_lora=True")
            model = model.merge_and_unload()
            peft_config = lora_config(config, "CAUSAL_LM")
    if kwargs.get("quantization_config") is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model, tokenizer, peft_config


# --------------------------------------------------------------------------- data


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- manifests


def write_manifest(folder: Path, metadata: Mapping[str, Any]) -> Path:
    """Hash every file under ``folder`` and write manifest.json LAST (atomically)."""
    listing = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == MANIFEST or path.name.startswith(f".{MANIFEST}"):
            continue
        listing[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"manifest_version": MANIFEST_VERSION, **metadata, "files": listing}
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def read_complete_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete folder (every listed file present with its size and
    sha256), or None for an unfinished or damaged one."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    for name, stats in manifest.get("files", {}).items():
        path = folder / name
        try:
            if path.stat().st_size != stats["bytes"] or file_sha256(path) != stats["sha256"]:
                return None
        except OSError:
            return None
    return manifest


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
        manifest = read_complete_manifest(folder)
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


# --------------------------------------------------------------------------- callbacks


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def metrics_callback(on_metrics: MetricsSink | None, *, heartbeat_seconds: float, samples_per_step: int,
                     keys: Mapping[str, str]) -> Any:
    """A TrainerCallback that streams events to ``on_metrics`` (see the module docstring).

    ``keys`` maps the standard names (accuracy, reward, margin, kl) to the kind's TRL log
    keys, e.g. ``{"accuracy": "rewards/accuracies"}`` for DPO."""

    class StreamMetrics(_callback_base()):
        def __init__(self) -> None:
            self.cancelled = False
            self.history: list[dict[str, Any]] = []
            self.last_logs: dict[str, Any] = {}
            self._last_beat = 0.0
            self._last_log = (time.monotonic(), 0)

        def emit(self, state: Any, event: dict[str, Any]) -> None:
            if on_metrics is not None and state.is_world_process_zero and on_metrics(event) is False:
                self.cancelled = True

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._last_log = (time.monotonic(), state.global_step)
            self.emit(state, {"event": "start", "step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logs = dict(logs or {})
            if "train_runtime" in logs:  # the end-of-training summary
                return
            evaluation = any(k.startswith("eval_") for k in logs)
            prefix = "eval_" if evaluation else ""
            now = time.monotonic()
            started, step0 = self._last_log
            rate = None
            if not evaluation and state.global_step > step0 and now > started:
                rate = (state.global_step - step0) * samples_per_step / (now - started)
                self._last_log = (now, state.global_step)
            event = {
                "event": "eval" if evaluation else "log",
                "step": state.global_step,
                "epoch": state.epoch,
                "loss": logs.get(f"{prefix}loss"),
                "learning_rate": logs.get("learning_rate"),
                "samples_per_second": rate,
                **{name: logs.get(prefix + key) for name, key in keys.items()},
                "logs": logs,
            }
            if not evaluation:
                self.last_logs = logs
            self.history.append({k: v for k, v in event.items() if k != "logs"})
            self.emit(state, event)
            self.stop_if_cancelled(args, control)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            if now - self._last_beat >= heartbeat_seconds:
                self._last_beat = now
                self.emit(state, {"event": "heartbeat", "step": state.global_step, "time": time.time()})
            self.stop_if_cancelled(args, control)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.emit(state, {"event": "checkpoint", "step": state.global_step, "path": str(path)})
            self.stop_if_cancelled(args, control)

        def stop_if_cancelled(self, args: Any, control: Any) -> None:
            """Every process reaches the hooks that call this at the same steps, so they
            agree on the main process's answer and stop together, at the end of this step."""
            self.cancelled = _broadcast_flag(self.cancelled, args)
            if self.cancelled:
                control.should_training_stop = True
                control.should_save = False

    return StreamMetrics()


def checkpoint_manifest_callback(*, kind: str, config: TrainingConfig, dataset_hash: str,
                                 metrics: Any) -> Any:
    """A TrainerCallback writing manifest.json into each checkpoint once the Trainer has
    saved it (``on_save`` runs after the files, the trainer state and the rotation).
    Must come before the metrics callback, so the checkpoint event names a complete folder."""

    class CheckpointManifest(_callback_base()):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_manifest(folder, {
                "kind": kind, "step": state.global_step, "config": config.to_dict(),
                "dataset_sha256": dataset_hash, "metrics": metrics.last_logs,
            })

    return CheckpointManifest()


def _broadcast_flag(flag: bool, args: Any) -> bool:
    """The main process's cancel decision, on every process (all must stop together)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([1 if flag else 0], device=args.device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


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


def callbacks_for(kind: str, config: TrainingConfig, run: RunContext, on_metrics: MetricsSink | None,
                  samples_per_step: int, keys: Mapping[str, str]) -> tuple[Any, list[Any]]:
    """(the metrics callback, [manifest callback, metrics callback]) in that order."""
    metrics = metrics_callback(on_metrics, heartbeat_seconds=config.heartbeat_seconds,
                               samples_per_step=samples_per_step, keys=keys)
    manifest = checkpoint_manifest_callback(kind=kind, config=config, dataset_hash=run.dataset_hash,
                                            metrics=metrics)
    return metrics, [manifest, metrics]


def world_size() -> int:
    """Processes in this run, from the launcher's environment: creating accelerate's
    PartialState here, before the Trainer's arguments do, would fix its settings too early."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def finish(run: RunContext, results: dict[str, Any]) -> dict[str, Any]:
    """Write results.json and drop the datasets cache (derived data, rebuilt on a resume)."""
    results = {**results, "resumed_from": str(run.resume_from) if run.resume_from else None,
               "discarded_checkpoints": run.discarded_checkpoints}
    if int(os.environ.get("RANK", "0")) == 0:
        write_results(run.output_dir, results)
        shutil.rmtree(run.cache_dir, ignore_errors=True)
    return results
