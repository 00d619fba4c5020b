"""Training throughput and memory on a GPU: reward model and DPO steps through Ordinal's
engine (training.engine.reward / training.engine.dpo) with bf16, LoRA and gradient
checkpointing, on a randomly initialised ~0.5B Llama-style model (no download).

    .venv/bin/python bench/training_gpu.py                 # on a GPU worker (a few minutes)
    .venv/bin/python bench/training_gpu.py --size tiny     # CPU smoke test of the script itself

What it does:

1. Builds the model from a config (hidden 1024, 24 layers, MLP 4096, vocab 32,000: about
   0.47B parameters), saves it in bf16 with a byte-level BPE tokenizer trained on the
   benchmark's own words (training.engine.tiny.train_tokenizer), so the engine loads it
   like any local model. Random weights: the numbers are speed and memory, not quality.
2. Writes seeded synthetic pairs (prompt + two answers of word-like text, about
   ``--tokens`` tokens per sequence) with Ordinal's builders and writers.
3. Runs ``reward.train`` then ``dpo.train`` for ``--steps`` optimizer steps each (LoRA r=16,
   batch ``--batch`` pairs), resetting the CUDA peak-memory counter in between.
   samples/s is the median of the engine's streamed ``samples_per_second`` after the
   first logging window (which holds compilation/warm-up); pairs for both kinds.

Last line, one JSON object:

    {"bench": "training_gpu", "device": ..., "parameters": ..., "tokens_per_sequence": ...,
     "reward": {"samples_per_second": ..., "peak_memory_gb": ..., "steps": ...},
     "dpo": {...}, "bf16": true, "gradient_checkpointing": true, "seconds": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_dpo, build_pairs  # noqa: E402
from training.engine.writers import parquet_schema, write_parquet  # noqa: E402

SIZES = {  # Llama-style shapes
    "0.5b": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 16, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 2000},
}
WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "ta", "vo", "ri", "pe", "du")
         for b in ("n", "r", "s", "th", "l", "m", "x", "ck", "nd", "st")]


def build_model(folder: Path, size: str, seed: int) -> int:
    """A random-init LlamaForCausalLM saved with a tokenizer; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.engine.tiny import train_tokenizer

    rng = random.Random(seed)
    documents = [" ".join(rng.choice(WORDS) for _ in range(200)) for _ in range(200)]
    tokenizer = train_tokenizer(documents, vocab_size=min(1000, SIZES[size]["vocab_size"]))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        **SIZES[size], max_position_embeddings=4096, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    ))
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def write_pairs(path: Path, *, kind: str, count: int, tokens: int, seed: int) -> Path:
    """Pairs of about ``tokens`` tokens per prompt+answer (a third prompt, the rest answer),
    in the snapshot's default shape for ``kind``: text for the reward model, messages for DPO."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words))

    items = [
        SnapshotItem(item_id=n, prompt=[{"role": "user", "content": text(tokens // 3)}],
                     candidates={1: CandidateInfo(text(2 * tokens // 3)), 2: CandidateInfo(text(2 * tokens // 3))},
                     tiers=[[1], [2]])
        for n in range(count)
    ]
    options, build = ExportOptions(), build_pairs if kind == "pairs" else build_dpo
    write_parquet(build(items, options), path, parquet_schema(kind, conversational=options.conversational_for(kind)))
    return path


def measure(kind: str, model_dir: Path, data: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from training.engine import dpo, reward

    common = dict(model=str(model_dir), use_lora=True, lora_r=16, lora_alpha=32, lora_target_modules="all-linear",
                  max_steps=args.steps, per_device_train_batch_size=args.batch, max_length=args.max_length,
                  logging_steps=args.log_every, save_steps=10 * args.steps, bf16=True, gradient_checkpointing=True,
                  learning_rate=1e-4)
    rates: list[float] = []

    def collect(event: dict) -> None:
        if event["event"] == "log" and event["samples_per_second"]:
            rates.append(event["samples_per_second"])

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if kind == "reward":
        results = reward.train(reward.RewardTrainingConfig(**common), data, None, out, on_metrics=collect,
                               resume=False)
    else:
        results = dpo.train(dpo.DPOTrainingConfig(**common), data, None, out, on_metrics=collect, resume=False)
    steady = rates[1:] or rates
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "samples_per_second": round(statistics.median(steady), 3) if steady else None,
        "peak_memory_gb": round(peak / 2**30, 2),
        "peak_memory_kind": "cuda max_memory_allocated" if torch.cuda.is_available() else "process max RSS",
        "steps": results["global_step"],
        "train_runtime": results["train_runtime"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--tokens", type=int, default=512, help="approximate tokens per sequence")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "training_gpu")
    args = parser.parse_args()
    args.max_length = args.tokens + 64
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    started = time.monotonic()
    model_dir = args.workdir / f"model-{args.size}"
    parameters = build_model(model_dir, args.size, seed=0)
    data = {kind: write_pairs(args.workdir / f"{data_kind}.parquet", kind=data_kind,
                              count=args.steps * args.batch + args.batch, tokens=args.tokens, seed=1)
            for kind, data_kind in (("reward", "pairs"), ("dpo", "dpo"))}
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"{args.size} Llama, {parameters / 1e9:.3f}B parameters, on {device}")
    runs = {}
    for kind in ("reward", "dpo"):
        runs[kind] = measure(kind, model_dir, data[kind], args.workdir / kind, args)
        print(f"{kind}: {runs[kind]['samples_per_second']} pairs/s, peak {runs[kind]['peak_memory_gb']} GiB "
              f"({runs[kind]['peak_memory_kind']})")
    gpu = torch.cuda.is_available()
    print(json.dumps({
        "bench": "training_gpu", "device": device, "size": args.size, "parameters": parameters,
        "tokens_per_sequence": args.tokens, "batch_pairs": args.batch, **runs,
        "bf16": gpu and torch.cuda.is_bf16_supported(), "gradient_checkpointing": gpu, "lora_r": 16,
        "torch": torch.__version__, "seconds": round(time.monotonic() - started, 1),
    }))


if __name__ == "__main__":
    main()
