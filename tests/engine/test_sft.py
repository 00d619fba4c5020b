"""Supervised fine-tuning (training.engine.sft) of the built-in tiny model with LoRA, on
both SFT row shapes the snapshot writes, with the loss on the answer only."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from training.engine import sft
from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_sft
from training.engine.manifest import read_manifest
from training.engine.writers import parquet_schema, write_jsonl, write_parquet

TOPICS = ["bread", "the sky", "plants", "cats", "tea", "rivers"]


def sft_items(count: int, offset: int = 0) -> list[SnapshotItem]:
    return [
        SnapshotItem(
            item_id=n, prompt=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": f"Tell me about {TOPICS[n % len(TOPICS)]}."}],
            candidates={1: CandidateInfo(f"Gladly: {TOPICS[n % len(TOPICS)]} is a fine topic.")}, tiers=[[1]],
        )
        for n in range(offset, offset + count)
    ]


def test_sft_lora_learns_the_answers(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    options = ExportOptions()
    train_path, eval_path = tmp_path / "sft-train.parquet", tmp_path / "sft-validation.jsonl"
    write_parquet(build_sft(sft_items(12), options), train_path,
                  parquet_schema("sft", conversational=options.conversational_for("sft")))
    write_jsonl(build_sft(sft_items(3, offset=50), options), eval_path)
    config = sft.SFTTrainingConfig(model=str(tiny_model_dir), max_length=96, per_device_train_batch_size=4,
                                   learning_rate=3e-3, max_steps=6, logging_steps=1, save_steps=3)

    results = sft.train(config, train_path, eval_path, tmp_path / "out")

    losses = [h["loss"] for h in results["history"] if h["event"] == "log"]
    assert results["status"] == "completed" and results["global_step"] == 6
    assert losses[-1] < losses[0]
    assert results["eval"]["eval_loss"] < losses[0]
    model_dir = Path(results["model_dir"])
    weights = load_file(model_dir / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)  # B starts at zero
    assert read_manifest(model_dir, verify=True)["kind"] == "sft"


def test_conversations_become_prompt_completion_so_only_the_answer_is_learned(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """TRL masks the prompt of prompt-completion rows: the labels are the answer's tokens."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = datasets.Dataset.from_list([
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there."}],
         "group_id": "g"},
    ])
    shaped = sft.prompt_completion(rows)
    assert shaped[0] == {"prompt": [{"role": "user", "content": "Hi?"}],
                         "completion": [{"role": "assistant", "content": "Hello there."}]}

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), train_dataset=shaped, processing_class=tokenizer,
        args=SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, report_to=[], use_cpu=True, bf16=False,
                       activation_checkpointing=False),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    pairs = zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist(), strict=True)
    learned = [token for token, label in pairs if label != -100]
    assert tokenizer.decode(learned) == "Hello there.<|end|>\n"


def test_a_conversation_must_end_with_the_answer() -> None:
    import datasets

    rows = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "Hi?"}]}])
    with pytest.raises(ValueError, match="must end with the assistant's answer"):
        sft.prompt_completion(rows)


def test_sft_config_fields_have_help_and_round_trip() -> None:
    config = sft.SFTTrainingConfig(model="m", packing=True)

    assert all(f.metadata.get("help") for f in fields(sft.SFTTrainingConfig))
    assert sft.SFTTrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
