"""A policy is trained on exactly the token ids it is sampled from.

Rows go the product's way: snapshot builders with the default export options (what the
API and the scheduled DPO run use), a JSONL file, the engine's row preparation and model
loading, then TRL's own SFTTrainer / DPOTrainer preprocessing. The ids TRL built are
compared with what `TransformersBackend.encode` feeds the model, for the built-in tiny
model, a tokenizer with another chat template (and a BOS token), and base tokenizers
without a template (with and without a BOS token). Everything is local: the variants
are the tiny model with its tokenizer changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.engine import checkpoints, dpo, rl, sft, trainer_config
from training.engine.datasets import CandidateInfo, ExportOptions, SnapshotItem, build_dpo, build_sft
from training.engine.transformers_backend import TransformersBackend
from training.engine.writers import write_jsonl

CONVERSATIONS = [
    [{"role": "user", "content": "Tell me about tea."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one?"}],
]
CHOSEN = ["Tea is a dried leaf, steeped in hot water.", "Air scatters blue light the most.", "Green, like grass."]
REJECTED = ["No.", "I do not know.", "Blue again."]
CHATML = (
    "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VARIANTS = ["builtin-tiny", "chat-template-with-bos", "base-with-bos", "base"]


def items() -> list[SnapshotItem]:
    return [
        SnapshotItem(item_id=n, prompt=conversation, tiers=[[1], [2]],
                     candidates={1: CandidateInfo(CHOSEN[n]), 2: CandidateInfo(REJECTED[n])})
        for n, conversation in enumerate(CONVERSATIONS)
    ]


def make_variant(tiny_model_dir: Path, folder: Path, variant: str) -> Path:
    """The tiny model with another tokenizer: a ChatML-style template that writes its BOS,
    or no template at all (a base model), with or without a BOS token added to text."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if variant == "builtin-tiny":
        return tiny_model_dir
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    if variant.endswith("with-bos"):
        tokenizer.add_special_tokens({"bos_token": "<s>"})
        bos = tokenizer.bos_token_id
        tokenizer._tokenizer.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    if variant == "chat-template-with-bos":
        tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]})
        tokenizer.chat_template = CHATML
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    if variant != "chat-template-with-bos":
        assert not AutoTokenizer.from_pretrained(folder).chat_template
    return folder


@pytest.fixture(scope="module", params=VARIANTS)
def model_dir(request: pytest.FixtureRequest, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_variant(tiny_model_dir, tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> TransformersBackend:
    return TransformersBackend(str(model_dir), device="cpu")


def exported(folder: Path, build: Any) -> Any:
    """The default export (as the API and the scheduled run make it), loaded as training does."""
    write_jsonl(build(items(), ExportOptions()), folder / "rows.jsonl")
    return checkpoints.load_rows(folder / "rows.jsonl", folder / "cache")


def answer_text(backend: TransformersBackend, answer: list[int]) -> str:
    """What sampling would return for these answer ids: the text before the first end token."""
    end = next(n for n, token in enumerate(answer) if token in backend.eos_ids)
    return backend.tokenizer.decode(answer[:end], skip_special_tokens=True)


def check_prompt(backend: TransformersBackend, conversation: list[dict], trained: list[int]) -> None:
    encoded = backend.encode(conversation)
    assert trained == encoded
    bos = backend.tokenizer.bos_token_id
    if bos is not None:
        assert encoded.count(bos) == 1 and encoded[0] == bos  # written by the template, not added twice


def test_sft_trains_on_the_ids_the_sampler_feeds(model_dir: Path, backend: TransformersBackend,
                                                 tmp_path: Path) -> None:
    from trl import SFTConfig, SFTTrainer

    config = sft.SFTTrainingConfig(model=str(model_dir), max_length=128)
    model, tokenizer, peft_config = trainer_config.load_causal_lm(config)
    rows = sft.prompt_completion(exported(tmp_path, build_sft))
    args = SFTConfig(**trainer_config.trainer_arguments(config, tmp_path / "out"), max_length=config.max_length,
                     completion_only_loss=True, packing=False)

    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                         peft_config=peft_config)

    for n, conversation in enumerate(CONVERSATIONS):
        ids, labels = trainer.train_dataset[n]["input_ids"], trainer.train_dataset[n]["labels"]
        start = len(backend.encode(conversation))
        check_prompt(backend, conversation, ids[:start])
        assert set(labels[:start]) == {-100} and labels[start:] == ids[start:]  # the answer follows directly
        assert answer_text(backend, ids[start:]) == CHOSEN[n]


def test_dpo_trains_on_the_ids_the_sampler_feeds(model_dir: Path, backend: TransformersBackend,
                                                 tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    config = dpo.DPOTrainingConfig(model=str(model_dir), max_length=128)
    model, tokenizer, peft_config = trainer_config.load_causal_lm(config)
    rows = dpo.preference_rows(exported(tmp_path, build_dpo))
    args = DPOConfig(**trainer_config.trainer_arguments(config, tmp_path / "out"), max_length=config.max_length,
                     beta=config.beta)

    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=rows, processing_class=tokenizer,
                         peft_config=peft_config)

    for n, conversation in enumerate(CONVERSATIONS):
        row = trainer.train_dataset[n]
        check_prompt(backend, conversation, row["prompt_ids"])
        assert answer_text(backend, row["chosen_ids"]) == CHOSEN[n]
        assert answer_text(backend, row["rejected_ids"]) == REJECTED[n]


def test_answer_ids_are_what_training_appends(model_dir: Path, backend: TransformersBackend) -> None:
    from training.engine import prompt_format

    for conversation, chosen in zip(CONVERSATIONS, CHOSEN, strict=True):
        answer = prompt_format.answer_ids(backend.tokenizer, conversation, chosen)
        assert answer_text(backend, answer) == chosen


def test_a_trained_base_model_keeps_the_plain_format(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The template given at load time is saved with the trained model, so the promoted
    policy is sampled with the format it was trained on even where it is loaded alone."""
    base = make_variant(tiny_model_dir, tmp_path / "base", "base-with-bos")
    rows = build_sft(items(), ExportOptions())
    write_jsonl(rows, tmp_path / "sft.jsonl")
    config = sft.SFTTrainingConfig(model=str(base), max_length=128, max_steps=1, per_device_train_batch_size=3)

    results = sft.train(config, tmp_path / "sft.jsonl", None, tmp_path / "out")

    trained = TransformersBackend(results["model_dir"], device="cpu")
    untrained = TransformersBackend(str(base), device="cpu")
    assert trained.describe()["chat_template"] is True and untrained.describe()["chat_template"] is False
    assert [trained.encode(c) for c in CONVERSATIONS] == [untrained.encode(c) for c in CONVERSATIONS]


def test_the_plain_template_renders_plain_prompt(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from training.engine import prompt_format

    base = make_variant(tiny_model_dir, tmp_path / "base", "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert prompt_format.ensure_chat_template(tokenizer) is False

    for conversation in CONVERSATIONS:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        assert text == prompt_format.plain_prompt(conversation)
    assert prompt_format.plain_prompt(CONVERSATIONS[2]) == (
        "User:\nName a colour.\n\nAssistant:\nBlue.\n\nUser:\nAnother one?\n\nAssistant:\n")


@pytest.mark.parametrize(("kind", "prepare"), [("sft", sft.prompt_completion), ("dpo", dpo.preference_rows),
                                               ("rl", rl.unique_prompts)])
def test_text_rows_are_refused_for_policy_training(kind: str, prepare: Any, tmp_path: Path) -> None:
    """A text prompt cannot go through a chat template: training on it would teach a
    format the policy is never sampled with."""
    build = build_sft if kind == "sft" else build_dpo
    write_jsonl(build(items(), ExportOptions(conversational=False)), tmp_path / "text.jsonl")
    rows = checkpoints.load_rows(tmp_path / "text.jsonl", tmp_path / "cache")

    with pytest.raises(ValueError, match=f"{kind} training needs conversational rows"):
        prepare(rows)

