"""What every trainer module (reward, sft, dpo, rl) shares before training starts: the
config fields they have in common (a dataclass stored as JSON on the run row and in every
manifest), the Trainer arguments and device settings that follow from it, and model
loading (LoRA adapters, QLoRA's 4-bit base, an adapter folder from an earlier run).

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.engine import prompt_format


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


def samples_per_step(config: TrainingConfig) -> int:
    """Rows per optimizer step across every process (for samples/s and step counts)."""
    return config.per_device_train_batch_size * config.gradient_accumulation_steps * world_size()


def world_size() -> int:
    """Processes in this run, from the launcher's environment: creating accelerate's
    PartialState here, before the Trainer's arguments do, would fix its settings too early."""
    return int(os.environ.get("WORLD_SIZE", "1"))
