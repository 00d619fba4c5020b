"""Online RL (training.engine.rl): GRPO and RLOO on the built-in tiny policy, rewarded by
an Ordinal reward model through RewardScorer, with the KL to the reference reported."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from training.engine import reward, rl
from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_pairs
from training.engine.manifest import read_manifest
from training.engine.writers import parquet_schema, write_parquet

TOPICS = ["bread", "the sky", "plants", "cats", "tea", "rivers"]


def pairs_file(path: Path, *, conversational: bool) -> Path:
    items = [
        SnapshotItem(item_id=n, prompt=[{"role": "user", "content": f"Tell me about {topic}."}],
                     candidates={1: CandidateInfo(f"Gladly: {topic} is fine."), 2: CandidateInfo("No.")},
                     tiers=[[1], [2]])
        for n, topic in enumerate(TOPICS)
    ]
    write_parquet(build_pairs(items, ExportOptions(conversational=conversational)), path,
                  parquet_schema("pairs", conversational=conversational))
    return path


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A (barely trained) tiny reward model on text rows: RL needs a model folder, not a good one."""
    folder = tmp_path_factory.mktemp("rm")
    config = reward.RewardTrainingConfig(model=str(tiny_model_dir), max_length=64, per_device_train_batch_size=3,
                                         max_steps=2, save_steps=100)
    results = reward.train(config, pairs_file(folder / "pairs.parquet", conversational=False), None, folder / "out")
    return Path(results["model_dir"])


def rl_config(policy: Path, reward_model: Path, **overrides: Any) -> rl.RLTrainingConfig:
    settings = dict(model=str(policy), reward_model=str(reward_model), num_generations=4,
                    per_device_train_batch_size=4, max_completion_length=8, learning_rate=5e-3, max_steps=2,
                    logging_steps=1, save_steps=100, beta=0.04, temperature=1.0)
    return rl.RLTrainingConfig(**(settings | overrides))


def test_grpo_trains_the_adapter_against_the_reward_model_and_reports_kl(
    tmp_path: Path, tiny_model_dir: Path, reward_model: Path
) -> None:
    from safetensors.torch import load_file

    prompts = pairs_file(tmp_path / "pairs.parquet", conversational=True)  # a chat policy, a text reward model

    results = rl.train(rl_config(tiny_model_dir, reward_model, algorithm="grpo"), prompts, None, tmp_path / "out")

    logs = [h for h in results["history"] if h["event"] == "log"]
    assert results["status"] == "completed" and results["global_step"] == 2 and results["prompts"] == 6
    assert all(h["reward"] is not None and h["kl"] is not None for h in logs)
    assert logs[0]["kl"] == 0.0  # the first update starts from the reference
    weights = load_file(Path(results["model_dir"]) / "adapter_model.safetensors")
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)


def test_rloo_from_an_adapter_saves_the_merged_policy(tmp_path: Path, tiny_model_dir: Path,
                                                      reward_model: Path) -> None:
    """Starting from an earlier run's adapter, the reference is that policy (merged in),
    and the result is a full model any sampler loads."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = tmp_path / "sft-adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8)).save_pretrained(start)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(start)
    prompts = pairs_file(tmp_path / "pairs.parquet", conversational=True)

    results = rl.train(rl_config(start, reward_model, algorithm="rloo"), prompts, None, tmp_path / "out")

    model_dir = Path(results["model_dir"])
    manifest = read_manifest(model_dir, verify=True)
    assert manifest["format"]["merged"] is True and manifest["format"]["lora"] is False
    trained, base = load_file(model_dir / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert any(not (trained[k] == base[k]).all() for k in base if "q_proj" in k)
    assert AutoModelForCausalLM.from_pretrained(model_dir).config.model_type == "llama"
    assert results["last_kl"] is not None


def test_completions_per_step_must_hold_whole_groups(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = rl_config(tiny_model_dir, tmp_path, per_device_train_batch_size=6)

    with pytest.raises(ValueError, match="multiple of num_generations"):
        rl.train(config, tmp_path / "none.parquet", None, tmp_path / "out")


def test_prompts_are_deduplicated_from_any_row_shape() -> None:
    import datasets

    a, b = [{"role": "user", "content": "A"}], [{"role": "user", "content": "B"}]
    pairs = datasets.Dataset.from_list([{"prompt": a, "chosen": "x"}, {"prompt": a, "chosen": "y"},
                                        {"prompt": b, "chosen": "z"}])
    chats = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "A"},
                                                      {"role": "assistant", "content": "x"}]}])

    assert rl.unique_prompts(pairs)["prompt"] == [a, b]
    assert rl.unique_prompts(chats)["prompt"] == [[{"role": "user", "content": "A"}]]


def test_rl_config_fields_have_help_and_validate() -> None:
    config = rl.RLTrainingConfig(model="m", reward_model="r", algorithm="rloo")

    assert all(f.metadata.get("help") for f in fields(rl.RLTrainingConfig))
    assert rl.RLTrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="algorithm"):
        rl.RLTrainingConfig(model="m", reward_model="r", algorithm="ppo")


def test_grpo_combines_per_axis_reward_models_with_the_unsafe_flags(
    tmp_path: Path, tiny_model_dir: Path, reward_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #21: two reward models (one folder twice here) under Llama 2's rule; TRL hands
    the prompts' `unsafe` column to the combined reward, and the combination is recorded."""
    import datasets

    seen: list[Any] = []
    real = rl.combine

    def recording(combination: Any, scores: Any, unsafe: Any = None) -> list[float]:
        seen.append((sorted(scores), list(unsafe) if unsafe is not None else None))
        return real(combination, scores, unsafe)

    monkeypatch.setattr(rl, "combine", recording)
    prompts = tmp_path / "prompts.parquet"
    datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": f"Tell me about {t}."}], "unsafe": n == 0}
                                for n, t in enumerate(TOPICS)]).to_parquet(str(prompts))
    combination = {"rule": "llama2", "safety_axis": "harmless", "helpful_axis": "helpful", "safety_threshold": 0.15}
    config = rl.RLTrainingConfig.from_dict({
        **rl_config(tiny_model_dir, reward_model).to_dict(), "reward_model": "", "combination": combination,
        "reward_models": {"helpful": str(reward_model), "harmless": str(reward_model)}})

    results = rl.train(config, prompts, None, tmp_path / "out")

    assert results["status"] == "completed" and results["combination"] == combination
    assert read_manifest(Path(results["model_dir"]))["config"]["combination"] == combination
    assert seen and all(axes == ["harmless", "helpful"] for axes, _ in seen)
    flags = [flag for _, unsafe in seen for flag in unsafe]
    assert len(flags) == 2 * 4 and set(flags) <= {True, False}  # 2 steps of 4 completions, flags passed
