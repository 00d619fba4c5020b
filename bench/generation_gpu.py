"""GPU throughput of the sampling backends on a ~0.5B-parameter Llama-style model.

The model is randomly initialised (no download; a random model rarely emits EOS, so
nearly every candidate runs to max_new_tokens, which is what a throughput figure
wants), saved in bf16 with a byte-level BPE tokenizer trained on the tiny corpus, and
sampled through the transformers backend, then through vLLM when it is installed. A
naive one-prompt-one-sample loop over a few prompts gives the per-call baseline.

    python bench/generation_gpu.py                        # H100/H200: 256 prompts x 4 x 256 tokens
    python bench/generation_gpu.py --size smoke --device cpu --prompts 4 --new-tokens 8   # checks the script

Human-readable lines first; the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.engine.backends import load_backend  # noqa: E402
from training.engine.sampling import BackendError, SamplingParams, prompt_seed, sample  # noqa: E402
from training.engine.tiny import CORPUS, corpus_documents, train_tokenizer  # noqa: E402

SIZES = {
    # hidden, layers, heads, kv heads, intermediate: ~0.5B with the corpus tokenizer's vocabulary
    "0.5b": (1024, 24, 16, 4, 5632),
    "smoke": (64, 2, 4, 2, 128),
}
RUN_SEED = 7


def build_model(folder: Path, size: str) -> int:
    """Save a random Llama and its tokenizer in `folder`; returns the parameter count."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(corpus_documents(CORPUS.read_text()), vocab_size=32000)
    hidden, layers, heads, kv_heads, intermediate = SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def conversations(n: int) -> list[list[dict[str, str]]]:
    questions = [line[2:].strip() for line in CORPUS.read_text().splitlines() if line.startswith("Q:")]
    return [[{"role": "user", "content": f"{questions[i % len(questions)]} ({i})"}] for i in range(n)]


def timed(backend: Any, prompts: list, params: SamplingParams) -> dict[str, float]:
    seeds = [prompt_seed(RUN_SEED, i) for i in range(len(prompts))]
    sample(prompts[:2], SamplingParams(k=2, max_new_tokens=4), backend)  # warm-up (kernels, allocator)
    _sync()
    started = time.perf_counter()
    results = sample(prompts, params, backend, seeds=seeds)
    _sync()
    seconds = time.perf_counter() - started
    tokens = sum(s.completion_tokens or 0 for r in results for s in r.samples)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def naive(backend: Any, prompts: list, params: SamplingParams) -> dict[str, float]:
    """One `generate` per prompt and sample, on the transformers backend's model."""
    import torch

    tokens = 0
    _sync()
    started = time.perf_counter()
    for conversation in prompts:
        ids = torch.tensor([backend.encode(conversation)], device=backend.device)
        for _ in range(params.k):
            with torch.inference_mode():
                out = backend.model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=params.max_new_tokens,
                    pad_token_id=backend.pad_id,
                    eos_token_id=backend.eos_ids,
                )
            tokens += out.shape[1] - ids.shape[1]
    _sync()
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--naive-prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--max-batch-tokens", type=int, default=262144)
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()

    import torch

    folder = Path(tempfile.mkdtemp(prefix="generation-gpu-"))
    parameters = build_model(folder, args.size)
    print(f"model:        random Llama, {parameters / 1e6:.1f}M parameters, bf16, in {folder}")
    prompts = conversations(args.prompts)
    params = SamplingParams(k=args.k, max_new_tokens=args.new_tokens, temperature=1.0, seed=RUN_SEED)
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"

    hf = load_backend(
        "transformers", str(folder), device=args.device, dtype=dtype, max_batch_tokens=args.max_batch_tokens
    )
    figures: dict[str, Any] = {"transformers": timed(hf, prompts, params)}
    print(f"transformers: {figures['transformers']}")
    figures["naive"] = naive(hf, prompts[: args.naive_prompts], params)
    print(f"naive loop:   {figures['naive']} ({args.naive_prompts} prompts)")
    del hf
    _free()

    figures["vllm"] = None
    if not args.skip_vllm:
        try:
            vllm_backend = load_backend("vllm", str(folder), dtype="bfloat16", gpu_memory_utilization=0.6, seed=0)
        except BackendError as exc:
            print(f"vllm:         skipped ({exc})")
        else:
            figures["vllm"] = timed(vllm_backend, prompts, params)
            print(f"vllm:         {figures['vllm']}")
    shutil.rmtree(folder, ignore_errors=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        json.dumps(
            {
                "bench": "generation_gpu",
                "device": device,
                "parameters": parameters,
                "prompts": args.prompts,
                "k": args.k,
                "max_new_tokens": args.new_tokens,
                "max_batch_tokens": args.max_batch_tokens,
                "transformers_tokens_per_s": figures["transformers"]["tokens_per_s"],
                "naive_tokens_per_s": figures["naive"]["tokens_per_s"],
                "vllm_tokens_per_s": figures["vllm"]["tokens_per_s"] if figures["vllm"] else None,
                "details": figures,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
