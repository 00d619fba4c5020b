"""Benchmark of batched sampling (training.engine.sampling) against a naive loop, on CPU.

The built-in tiny model samples 64 prompts x K=4 candidates of up to 64 new tokens twice
in one run: once through the transformers backend (prompts batched under a token budget,
K sequences per prompt in one `generate`), once as a naive loop that calls `generate`
for one prompt and one sample at a time on the same model object. Both stop at EOS, so
each counts only the tokens it really generated.

    .venv/bin/python bench/generation_bench.py                     # the defaults above
    .venv/bin/python bench/generation_bench.py --threads 0 --prompts 16   # torch's thread count

The tiny model is built first if its folder has none (1.5 minutes or more; timed separately).
Human-readable lines first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.engine.backends import load_backend  # noqa: E402
from training.engine.manifest import read_manifest  # noqa: E402
from training.engine.sampling import (  # noqa: E402
    SamplingParams,
    candidate_seed,
    diversity_stats,
    prompt_seed,
    sample,
)
from training.engine.tiny import CORPUS, ensure_tiny_model  # noqa: E402
from training.engine.transformers_backend import TransformersBackend  # noqa: E402

RUN_SEED = 20261127
TOPICS = ["a garden", "the sea", "a new job", "winter", "a small town", "cooking", "a library", "money"]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """The corpus's questions first (in distribution), then simple made-up ones."""
    questions = [line[2:].strip() for line in CORPUS.read_text().splitlines() if line.startswith("Q:")]
    extra = [f"Tell me something about {TOPICS[i % len(TOPICS)]}, please ({i})." for i in range(n)]
    return [[{"role": "user", "content": q}] for q in (questions + extra)[:n]]


def batched(backend: TransformersBackend, conversations: list, params: SamplingParams) -> tuple[int, float, list]:
    seeds = [prompt_seed(RUN_SEED, i) for i in range(len(conversations))]
    started = time.perf_counter()
    results = sample(conversations, params, backend, seeds=seeds)
    seconds = time.perf_counter() - started
    return sum(s.completion_tokens for r in results for s in r.samples), seconds, results


def naive(backend: TransformersBackend, conversations: list, params: SamplingParams) -> tuple[int, float]:
    """One prompt, one sample per `generate` call: what a first implementation would do."""
    import torch

    model, tokens = backend.model, 0
    started = time.perf_counter()
    for i, conversation in enumerate(conversations):
        ids = torch.tensor([backend.encode(conversation)])
        for j in range(params.k):
            torch.manual_seed(candidate_seed(prompt_seed(RUN_SEED, i), j))
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    max_new_tokens=params.max_new_tokens,
                    temperature=params.temperature,
                    top_k=0,
                    top_p=1.0,
                    pad_token_id=backend.pad_id,
                    eos_token_id=backend.eos_ids,
                )
            new = out[0, ids.shape[1] :].tolist()
            tokens += next((n for n, t in enumerate(new) if t in backend.eos_ids), len(new))
    return tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "var/artifacts/models/builtin-tiny")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (0: torch's choice). 1 by default: on a shared 2-core machine two "
        "threads stall each other whenever another process takes a core, and the figures swing 5x",
    )
    parser.add_argument("--max-batch-tokens", type=int, default=65536)
    args = parser.parse_args()

    import torch

    started = time.perf_counter()
    built = read_manifest(args.model_dir) is None
    ensure_tiny_model(args.model_dir)
    build_seconds = time.perf_counter() - started
    manifest = read_manifest(args.model_dir)
    print(
        f"model:     {args.model_dir} ({manifest['parameters']:,} parameters, "
        f"{'built now in' if built else 'reused; built in'} "
        f"{build_seconds if built else manifest['build_seconds']:.1f} s)"
    )

    backend = load_backend(
        "builtin-tiny",
        str(args.model_dir),
        num_threads=args.threads or None,
        max_batch_tokens=args.max_batch_tokens,
    )
    conversations = prompts(args.prompts)
    params = SamplingParams(k=args.k, max_new_tokens=args.new_tokens, temperature=1.0, seed=RUN_SEED)
    sample(conversations[:2], SamplingParams(k=2, max_new_tokens=4), backend)  # warm-up

    b_tokens, b_seconds, results = batched(backend, conversations, params)
    print(f"batched:   {b_tokens} tokens in {b_seconds:.2f} s = {b_tokens / b_seconds:,.0f} tokens/s")
    n_tokens, n_seconds = naive(backend, conversations, params)
    print(f"naive:     {n_tokens} tokens in {n_seconds:.2f} s = {n_tokens / n_seconds:,.0f} tokens/s")
    speedup = (b_tokens / b_seconds) / (n_tokens / n_seconds)
    stats = diversity_stats(results)
    print(f"speedup:   {speedup:.1f}x (tokens/s, batched / naive)")
    print(f"diversity: duplicate rate {stats.duplicate_rate:.3f}, distinct-2 {stats.distinct_2:.3f}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        json.dumps(
            {
                "bench": "generation",
                "model": "builtin-tiny",
                "parameters": manifest["parameters"],
                "prompts": args.prompts,
                "k": args.k,
                "max_new_tokens": args.new_tokens,
                "batched_tokens": b_tokens,
                "batched_seconds": round(b_seconds, 3),
                "batched_tokens_per_s": round(b_tokens / b_seconds, 1),
                "naive_tokens": n_tokens,
                "naive_seconds": round(n_seconds, 3),
                "naive_tokens_per_s": round(n_tokens / n_seconds, 1),
                "speedup": round(speedup, 2),
                "duplicate_rate": round(stats.duplicate_rate, 4),
                "distinct_2": round(stats.distinct_2, 4),
                "tiny_build_seconds": round(build_seconds if built else manifest["build_seconds"], 1),
                "threads": torch.get_num_threads(),
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
                "machine": f"{cores} cores, Python {platform.python_version()}, torch {torch.__version__}",
            }
        )
    )


if __name__ == "__main__":
    main()
