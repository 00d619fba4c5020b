"""DPO (training.engine.dpo) of the built-in tiny model with LoRA: the frozen base (adapter
disabled) as the reference, or a copy of the starting adapter when training continues
an earlier run's adapter."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from training.engine import dpo
from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_dpo
from training.engine.manifest import read_manifest
from training.engine.writers import parquet_schema, write_jsonl, write_parquet

TOPICS = ["bread", "the sky", "plants", "cats", "tea", "rivers", "maps", "stars"]


def pair_items(count: int, offset: int = 0) -> list[SnapshotItem]:
    items = []
    for n in range(offset, offset + count):
        topic = TOPICS[n % len(TOPICS)]
        candidates = {1: CandidateInfo(f"Gladly: {topic} is a fine topic."), 2: CandidateInfo(f"No. Not {topic}.")}
        items.append(SnapshotItem(item_id=n, prompt=[{"role": "user", "content": f"Tell me about {topic}."}],
                                  candidates=candidates, tiers=[[1], [2]]))
    return items


def export(folder: Path, *, conversational: bool) -> tuple[Path, Path]:
    options = ExportOptions(conversational=conversational)
    train_path, eval_path = folder / "dpo-train.parquet", folder / "dpo-validation.jsonl"
    write_parquet(build_dpo(pair_items(16), options), train_path, parquet_schema("dpo", conversational=conversational))
    write_jsonl(build_dpo(pair_items(4, offset=100), options), eval_path)
    return train_path, eval_path


def test_dpo_reward_accuracy_rises_from_zero(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    train_path, eval_path = export(tmp_path, conversational=True)
    config = dpo.DPOTrainingConfig(model=str(tiny_model_dir), max_length=64, per_device_train_batch_size=4,
                                   learning_rate=5e-3, max_steps=4, logging_steps=1, save_steps=100, beta=0.1)

    results = dpo.train(config, train_path, eval_path, tmp_path / "out")

    assert results["first_reward_accuracy"] == 0.0  # step 1: policy == reference, every implicit reward is 0
    assert results["last_reward_accuracy"] >= 0.75 and results["last_reward_margin"] > 0
    assert results["eval"]["reward_accuracy"] > 0.5 and results["eval"]["reward_margin"] > 0
    weights = load_file(Path(results["model_dir"]) / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)


def test_dpo_from_an_adapter_uses_that_adapter_as_its_reference(tmp_path: Path, tiny_model_dir: Path) -> None:
    """With the bare base as reference, step 1 would show non-zero rewards: the starting
    adapter already moved the policy. TRL's cloned "ref" adapter makes them exactly 0."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = tmp_path / "sft-adapter"
    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)  # an adapter that changes the model, as a trained one does
    policy.save_pretrained(start)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(start)
    train_path, eval_path = export(tmp_path, conversational=True)
    config = dpo.DPOTrainingConfig(model=str(start), max_length=64, per_device_train_batch_size=4,
                                   learning_rate=5e-3, max_steps=2, logging_steps=1, save_steps=100)

    results = dpo.train(config, train_path, None, tmp_path / "out")

    first = results["history"][1] if results["history"][0]["event"] != "log" else results["history"][0]
    assert first["event"] == "log" and first["margin"] == 0.0 and first["reward"] == 0.0
    model_dir = Path(results["model_dir"])
    assert not (model_dir / "ref").exists()  # the frozen copy is not part of the result
    trained = load_file(model_dir / "adapter_model.safetensors")
    started = load_file(start / "adapter_model.safetensors")
    assert trained.keys() == started.keys()
    assert any(not torch.equal(trained[k], started[k]) for k in trained)
    manifest = read_manifest(model_dir, verify=True)
    assert manifest["format"] == {"base_model": str(tiny_model_dir), "lora": True}


def test_dpo_config_fields_have_help_and_round_trip() -> None:
    config = dpo.DPOTrainingConfig(model="m", beta=0.2, loss_type="ipo")

    assert all(f.metadata.get("help") for f in fields(dpo.DPOTrainingConfig))
    assert dpo.DPOTrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="required"):
        dpo.DPOTrainingConfig()
