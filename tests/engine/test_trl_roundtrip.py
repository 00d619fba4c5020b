"""Exported pairs are what TRL's trainers read, unmodified: the files written by the
snapshot writers load with `datasets.load_dataset("parquet" | "json")` and train for a
few steps in `trl.RewardTrainer` (sequence-classification model) and `trl.DPOTrainer`.

Everything is local: a byte-level BPE tokenizer trained on the test's own sentences
(``training.engine.tiny.train_tokenizer``: pad distinct from EOS, a chat template) and
tiny Llama models built from a config. HF_HUB_OFFLINE is set, so a hidden download
fails instead of hanging.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from training.engine.datasets import (  # noqa: E402 - after the offline switches above
    CandidateInfo,
    ExportOptions,
    ExternalPair,
    SnapshotItem,
    build_pairs,
)
from training.engine.prompt_format import plain_prompt  # noqa: E402
from training.engine.writers import parquet_schema, save_to_disk, write_jsonl, write_parquet  # noqa: E402

QUESTIONS = [
    "How do I keep bread fresh?", "Why is the sky blue?", "What is a prime number?",
    "How do plants drink water?", "What makes a good password?", "Why do cats purr?",
    "How does a bicycle stay upright?", "What is the boiling point of water?",
]
ANSWERS = [
    "Wrap it in a cloth and keep it in a cool, dry box.",
    "Air scatters blue light more than red light, so the sky looks blue.",
    "I am not sure, maybe ask someone else.",
]


def snapshot_items() -> list[SnapshotItem]:
    items = []
    for n, question in enumerate(QUESTIONS):
        prompt = [{"role": "user", "content": question}]
        if n % 3 == 0:
            prompt.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        ids = [10 * n + j for j in range(3)]
        candidates = {cid: CandidateInfo(f"{ANSWERS[j]} ({question.lower()})", model=f"m{j}", temperature=1.0,
                                         seed=cid) for j, cid in enumerate(ids)}
        tiers = [[ids[0]], [ids[1]], [ids[2]]]
        items.append(SnapshotItem(item_id=n + 1, prompt=prompt, candidates=candidates, tiers=tiers,
                                  agreement=0.9, guideline_versions=(1,)))
    return items


EXTERNAL = [ExternalPair(1, [{"role": "user", "content": "Say hi."}], "Hi!", "Go away.", source="hh-rlhf")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], Path]:
    """Pairs files: (format, conversational) -> path."""
    folder = tmp_path_factory.mktemp("export")
    files = {}
    for conversational in (False, True):
        options = ExportOptions(conversational=conversational)
        name = "conversational" if conversational else "standard"
        files["parquet", conversational] = folder / f"pairs-{name}.parquet"
        files["json", conversational] = folder / f"pairs-{name}.jsonl"
        rows = list(build_pairs(snapshot_items(), options, external=EXTERNAL))
        schema = parquet_schema("pairs", conversational=conversational)
        write_parquet(rows, files["parquet", conversational], schema)
        write_jsonl(rows, files["json", conversational])
    return files


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from training.engine.tiny import train_tokenizer

    texts = QUESTIONS + ANSWERS + [plain_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
    return train_tokenizer(texts * 4, vocab_size=400)


def load(exported: dict[tuple[str, bool], Path], fmt: str, conversational: bool, cache: Path) -> Any:
    import datasets

    return datasets.load_dataset(fmt, data_files=str(exported[fmt, conversational]), split="train",
                                 cache_dir=str(cache))


def tiny_llama_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **extra,
    )


def common_args(output_dir: Path) -> dict[str, Any]:
    return dict(
        output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
        max_length=256, report_to=[], use_cpu=True, bf16=False, activation_checkpointing=False,
        logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )


def snapshot(model: Any) -> list[Any]:
    return [p.detach().clone() for p in model.parameters()]


def changed(before: list[Any], model: Any) -> bool:
    import torch

    return any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize(("fmt", "conversational"), [("parquet", True), ("json", False)])
def test_reward_trainer_trains_on_exported_pairs(
    exported: dict, tokenizer: Any, tmp_path: Path, fmt: str, conversational: bool
) -> None:
    import torch
    from transformers import LlamaForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    dataset = load(exported, fmt, conversational, tmp_path / "cache")
    assert len(dataset) == 3 * len(QUESTIONS) + len(EXTERNAL)
    assert "ordinal_margin" in dataset.column_names and "margin" not in dataset.column_names
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1))
    before = snapshot(model)

    trainer = RewardTrainer(model=model, args=RewardConfig(**common_args(tmp_path / "out")),
                            train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()

    assert result.global_step == 3 and math.isfinite(result.training_loss)
    assert changed(before, model)


@pytest.mark.parametrize(("fmt", "conversational"), [("parquet", False), ("json", True)])
def test_dpo_trainer_trains_on_exported_pairs(
    exported: dict, tokenizer: Any, tmp_path: Path, fmt: str, conversational: bool
) -> None:
    import torch
    from transformers import LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    dataset = load(exported, fmt, conversational, tmp_path / "cache")
    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_llama_config(tokenizer))
    reference = copy.deepcopy(policy)  # a model built from a config has no hub id to reload from
    before = snapshot(policy)

    trainer = DPOTrainer(model=policy, ref_model=reference, args=DPOConfig(**common_args(tmp_path / "out")),
                         train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()

    assert result.global_step == 3 and math.isfinite(result.training_loss)
    assert changed(before, policy)


def test_save_to_disk_round_trips_through_load_from_disk(exported: dict, tmp_path: Path) -> None:
    import datasets
    import pyarrow.parquet as pq

    target = save_to_disk({"train": exported["parquet", True]}, tmp_path / "hf")

    loaded = datasets.load_from_disk(str(target))
    assert loaded["train"].to_list() == pq.read_table(exported["parquet", True]).to_pylist()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf-cache-")]
