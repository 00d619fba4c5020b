"""The built-in tiny model: a few-million-parameter Llama-style causal LM built locally.

It lets the demo and the tests sample real candidates with no download: a byte-level BPE
tokenizer is trained on training/engine/tiny_corpus.txt (prose and question/answer text
written for this repo), a small Llama is pre-trained on the same text for a few hundred
steps (1.4M parameters; 300 steps take about 1.5 minutes on one free CPU core, several
minutes on a busy machine) so its samples are word-like, and both are saved
with `save_pretrained`. The sampling engine then loads the folder with the same
transformers code as any other model.

    from training.engine.tiny import ensure_tiny_model
    path = ensure_tiny_model(artifact_root / "models" / "builtin-tiny")

The build holds a lock file, so two workers never build it twice at once, and writes
manifest.json last: a folder without a manifest matching the config and corpus is an
unfinished or outdated build and is rebuilt.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.engine.manifest import MANIFEST, read_manifest, write_manifest

CORPUS = Path(__file__).with_name("tiny_corpus.txt")
MANIFEST_FORMAT = 1

PAD, END, SYSTEM, USER, ASSISTANT = "<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT]
# "<|role|>\ncontent<|end|>\n" per message; <|end|> is also EOS, so the model learns to stop.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)
# A few system prompts mixed into pre-training so conversations that carry one look familiar.
SYSTEM_PROMPTS = (
    "You are a helpful assistant. Answer clearly and briefly.",
    "You are a patient teacher who explains things step by step.",
    "You are a friendly assistant for a small team.",
)


@dataclass(frozen=True)
class TinyConfig:
    """Size and training budget of the tiny model; part of the manifest, so a change rebuilds."""

    vocab_size: int = field(default=4096, metadata={"help": "BPE vocabulary, special tokens included."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    intermediate_size: int = field(default=384, metadata={"help": "Width of the MLP."})
    num_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    context_window: int = field(default=512, metadata={"help": "max_position_embeddings."})
    train_steps: int = field(default=300, metadata={"help": "Pre-training steps."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per step."})
    seq_len: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate (cosine decay)."})
    seed: int = field(default=20261127, metadata={"help": "Seeds initialisation and batch order."})


def ensure_tiny_model(
    root: Path, config: TinyConfig | None = None, corpus: Path = CORPUS, *, num_threads: int | None = None
) -> Path:
    """Return `root` holding a complete tiny model, building it first if needed (blocking).

    num_threads sets torch's CPU threads (process-wide) before a build. On a shared
    machine fewer threads than cores can be several times faster: torch's threads wait
    for each other, and for any that another process has pushed off its core.
    """
    from filelock import FileLock

    config = config or TinyConfig()
    root.mkdir(parents=True, exist_ok=True)
    if _is_complete(root, config, corpus):
        return root
    with FileLock(str(root / ".build.lock")):
        if not _is_complete(root, config, corpus):  # another process may have built it meanwhile
            if num_threads:
                import torch

                torch.set_num_threads(num_threads)
            build_tiny_model(root, config, corpus)
    return root


def build_tiny_model(root: Path, config: TinyConfig, corpus: Path = CORPUS) -> dict[str, Any]:
    """Train tokenizer and model, save both, then write the manifest; returns the manifest.
    Callers should go through `ensure_tiny_model`, which holds the lock."""
    import torch
    import transformers

    started = time.monotonic()
    (root / MANIFEST).unlink(missing_ok=True)  # whatever is there is about to be overwritten
    documents = corpus_documents(corpus.read_text(encoding="utf-8"))
    tokenizer = train_tokenizer(documents, config.vocab_size)
    tokenizer.model_max_length = config.context_window
    model = new_model(config, tokenizer)
    losses = pretrain(model, tokenizer, documents, config)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    manifest = {
        "format": MANIFEST_FORMAT,
        "config": asdict(config),
        "corpus_sha256": _sha256(corpus),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "build_seconds": round(time.monotonic() - started, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    write_manifest(root, manifest)
    return manifest


def corpus_documents(text: str) -> list[str]:
    """Training documents from the corpus: blank-line separated blocks.

    A block of "Q: ..." then "A: ..." lines becomes a chat in CHAT_TEMPLATE's format (every
    third one with a system prompt); any other block is prose, kept as is.
    """
    documents = []
    for n, block in enumerate(b.strip() for b in text.split("\n\n")):
        if not block:
            continue
        if block.startswith("Q:") and "\nA:" in block:
            question, answer = block[2:].split("\nA:", 1)
            messages = [("user", question.strip()), ("assistant", answer.strip())]
            if n % 3 == 0:
                messages.insert(0, ("system", SYSTEM_PROMPTS[n % len(SYSTEM_PROMPTS)]))
            documents.append("".join(f"<|{role}|>\n{content}{END}\n" for role, content in messages))
        else:
            documents.append(block + END)
    return documents


def train_tokenizer(documents: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2 style: any text encodes, nothing is unknown) wrapped as a
    transformers fast tokenizer with a pad token distinct from EOS and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(documents, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT],
        padding_side="left",
        model_max_length=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def new_model(config: TinyConfig, tokenizer: Any) -> Any:
    """A randomly initialised Llama (RMSNorm, rotary positions, SwiGLU), tied embeddings."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.context_window,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        )
    )
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return model


def pretrain(model: Any, tokenizer: Any, documents: list[str], config: TinyConfig) -> list[float]:
    """Next-token prediction on random windows of the concatenated corpus; returns the loss
    per step. Warmup then cosine decay: at this size a high peak rate learns fastest."""
    import torch

    stream = torch.tensor([t for d in documents for t in tokenizer(d, add_special_tokens=False)["input_ids"]])
    if len(stream) <= config.seq_len + 1:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one training window")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    warmup = max(1, config.train_steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, config.train_steps))
    model.train()
    losses = []
    for _ in range(config.train_steps):
        starts = torch.randint(0, len(stream) - config.seq_len, (config.batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + config.seq_len] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    model.eval()
    return losses


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def _is_complete(root: Path, config: TinyConfig, corpus: Path) -> bool:
    manifest = read_manifest(root)
    return bool(
        manifest
        and manifest.get("format") == MANIFEST_FORMAT
        and manifest.get("config") == asdict(config)
        and manifest.get("corpus_sha256") == _sha256(corpus)
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


