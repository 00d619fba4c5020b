"""The prompt format: how a conversation becomes the text and token ids a model reads,
the same in training (SFT, DPO, RL through TRL), in sampling (the transformers and vLLM
backends) and in reward scoring.

One rule makes training and sampling agree: **a policy's tokenizer always has a chat
template, and a prompt is always a list of messages rendered by it.**

- A tokenizer with its own template (the built-in tiny model, any chat model) keeps it.
  One without (a base model) gets `plain_chat_template` when it is loaded
  (`ensure_chat_template`, called by ``common.load_causal_lm`` and by the sampling
  backends); the trained model folder saves it with the tokenizer.
- TRL tokenizes a conversational row with ``apply_chat_template(prompt,
  add_generation_prompt=True, tokenize=True)`` (SFTTrainer and DPOTrainer for the prompt,
  GRPOTrainer and RLOOTrainer for generation), which adds no special tokens of its own:
  a template writes its BOS, if any. `prompt_ids` is that exact call, and it is what the
  sampler feeds the model. The answer is the rest of ``apply_chat_template(prompt +
  [answer])``: the template appends the end of turn (EOS in the plain format), which is
  where sampling stops (`answer_end_ids`).
- Text rows (``{"prompt": "User:\\n..."}``) cannot be trained identically: no template can
  render a string, and TRL would tokenize it with the tokenizer's own special tokens
  instead. The policy trainers refuse them (`require_messages`); snapshots write messages
  for the policy kinds (sft, dpo, kto) by default.

The plain format, for models without a template and for reward-model text rows: each
message is ``"<Role>:\\n<content>"``, messages are separated by a blank line, and the
prompt ends with ``"\\n\\nAssistant:\\n"`` so the answer starts on its own line; the answer
ends with EOS. `plain_prompt` writes the same text in Python, for the snapshot exporter
(which has no tokenizer) and the reward scorer.

Nothing heavier than the stdlib at import: the web process imports this through the
snapshot builders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

Message = dict[str, str]

GENERATION_PROMPT = "\n\nAssistant:\n"
# The plain format as a chat template. Only the answer (the last message, when it is the
# assistant's) ends with EOS: an earlier assistant turn is part of the prompt, written
# as `plain_prompt` writes it.
_PLAIN_BODY = (
    "{%- for message in messages -%}"
    "{%- if not loop.first -%}{{ '\n\n' }}{%- endif -%}"
    "{{ (message['role'] | capitalize) + ':\n' + message['content'] }}"
    "{%- if loop.last and message['role'] == 'assistant' and eos_token -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\n\nAssistant:\n' }}{%- endif -%}"
)


def plain_prompt(messages: Sequence[Message]) -> str:
    """A prompt in the plain format: ``[{"role": "user", "content": "Hi"}]`` gives
    ``"User:\\nHi\\n\\nAssistant:\\n"``. The text `plain_chat_template` renders for the same
    messages with the generation prompt (less a BOS the template may start with)."""
    turns = [f"{m['role'].capitalize()}:\n{m['content']}" for m in messages]
    return "\n\n".join(turns) + GENERATION_PROMPT


def plain_chat_template(tokenizer: Any) -> str:
    """The plain format as a Jinja chat template for this tokenizer: it starts with the
    BOS token when the tokenizer puts one before text, since ``apply_chat_template`` adds
    no special tokens and a base model expects its BOS."""
    return ("{{ bos_token }}" if adds_bos(tokenizer) else "") + _PLAIN_BODY


def adds_bos(tokenizer: Any) -> bool:
    """Whether tokenizing text puts the BOS token first (Llama-style base tokenizers do)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[:1] == [bos] and without[:1] != [bos]


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a tokenizer without a chat template the plain one; True if it had its own.
    Call when a policy's tokenizer is loaded, before TRL or the sampler uses it."""
    if getattr(tokenizer, "chat_template", None):
        return True
    tokenizer.chat_template = plain_chat_template(tokenizer)
    return False


def prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of a prompt, ready for the answer: TRL's tokenization of a conversational
    prompt, and what the sampling backends feed the model."""
    ensure_chat_template(tokenizer)
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
    return list(encoded["input_ids"])


def answer_ids(tokenizer: Any, messages: Sequence[Message], answer: str) -> list[int]:
    """Token ids a policy is trained to produce after `prompt_ids` for this answer: the
    rendering of prompt + answer past the prompt, the template's end of turn included.
    Raises ValueError if the template renders the prompt differently when an answer
    follows (the ids would not continue the sampled prompt)."""
    prompt = prompt_ids(tokenizer, messages)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=True,
                                         return_dict=True)["input_ids"]
    if list(full[: len(prompt)]) != prompt:
        raise ValueError("the chat template renders the prompt differently when an answer follows it")
    return list(full[len(prompt):])


def answer_end_ids(generation_config: Any, tokenizer: Any) -> list[int]:
    """The tokens that end an answer in sampling: the model's generation config's EOS ids
    (chat models list several) and the tokenizer's EOS, which the plain format writes."""
    configured = getattr(generation_config, "eos_token_id", None)
    ids = list(configured) if isinstance(configured, list | tuple) else [configured]
    ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(i for i in ids if i is not None))


def require_messages(rows: Any, kind: str, columns: Sequence[str]) -> None:
    """Refuse a dataset whose prompts are text for policy training (see the module
    docstring: the policy would be trained on another format than it is sampled with)."""
    if not len(rows):
        return
    first = rows[0]
    text = [c for c in columns if c in first and isinstance(first[c], str)]
    if text:
        raise ValueError(
            f"{kind} training needs conversational rows (messages), but {', '.join(text)} hold text: a policy "
            "must see its prompts through its chat template in training as in sampling, and a text prompt cannot "
            "be rendered by one. Export the snapshot again with conversational left unset (messages for sft, "
            "dpo and kto) or true."
        )


def prompt_hash(messages: Sequence[Message]) -> str:
    """A prompt's identity: sha256 of the canonical JSON of its messages (sorted keys, no
    spaces, UTF-8). The importer stores it as ``Prompt.content_hash`` (prompts are unique
    by it), and exports use it as the default ``group_id``: one function for both."""
    canonical = json.dumps(list(messages), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
