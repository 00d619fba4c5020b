"""The built-in tiny model: built locally once, saved like any Hugging Face model, guarded
by a lock, complete only when its manifest is written."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

from filelock import FileLock

from tests.engine.conftest import MICRO
from training.engine.backends import load_backend
from training.engine.manifest import read_manifest
from training.engine.sampling import SamplingParams, sample
from training.engine.tiny import CORPUS, TinyConfig, ensure_tiny_model
from training.engine.transformers_backend import TransformersBackend


def test_default_build_saves_model_tokenizer_and_manifest(tiny_dir: Path) -> None:
    manifest = read_manifest(tiny_dir)

    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (tiny_dir / name).is_file(), name
    assert manifest["config"] == asdict(TinyConfig())
    assert 1_000_000 < manifest["parameters"] < 10_000_000
    assert manifest["final_loss"] < manifest["first_loss"] - 3  # it learned something
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["pad_token_id"] != config["eos_token_id"]


def test_builtin_tiny_loads_through_the_transformers_backend(tiny: TransformersBackend, tiny_dir: Path) -> None:
    assert type(tiny) is TransformersBackend
    assert tiny.describe()["backend"] == "builtin-tiny"
    assert tiny.describe()["model"] == str(tiny_dir)
    assert tiny.tokenizer.pad_token_id != tiny.tokenizer.eos_token_id
    assert tiny.context_window == TinyConfig().context_window


def test_second_call_reuses_the_build(tiny_dir: Path) -> None:
    before = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()

    ensure_tiny_model(tiny_dir)

    assert time.monotonic() - started < 1
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == before


def test_samples_are_word_like(tiny: TransformersBackend) -> None:
    """Pre-training worked: most sampled words are words of the corpus, not token soup."""
    questions = [
        "How do I water a plant?",
        "Why do we sleep?",
        "What is a good habit?",
        "How do I cook rice?",
    ]
    vocabulary = set(re.findall(r"[a-z]+", CORPUS.read_text().lower()))

    results = sample(
        [[{"role": "user", "content": q}] for q in questions], SamplingParams(k=4, max_new_tokens=40), tiny
    )

    words = [w for r in results for s in r.samples for w in re.findall(r"[a-z]+", s.text.lower())]
    assert len(words) > 50
    assert sum(w in vocabulary for w in words) / len(words) > 0.85  # untrained: about 0.55


def test_incomplete_build_is_rebuilt(tmp_path: Path) -> None:
    root = ensure_tiny_model(tmp_path / "tiny", MICRO)
    (root / "manifest.json").unlink()  # as if the builder died before finishing

    ensure_tiny_model(root, MICRO)

    assert read_manifest(root)["config"] == asdict(MICRO)


def test_changed_config_rebuilds(tmp_path: Path) -> None:
    root = ensure_tiny_model(tmp_path / "tiny", MICRO)
    bigger = replace(MICRO, train_steps=3)

    ensure_tiny_model(root, bigger)

    assert read_manifest(root)["config"]["train_steps"] == 3


def test_a_second_builder_waits_for_the_lock(tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    root.mkdir()
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (ensure_tiny_model(root, MICRO), done.set()))

    with FileLock(str(root / ".build.lock")):
        waiter.start()
        time.sleep(0.5)
        assert not done.is_set()
        assert read_manifest(root) is None
    waiter.join(timeout=120)

    assert done.is_set()
    assert read_manifest(root)["config"] == asdict(MICRO)


def test_micro_model_samples_end_to_end(tmp_path: Path) -> None:
    root = ensure_tiny_model(tmp_path / "tiny", MICRO)
    backend = load_backend("transformers", str(root))

    [result] = sample([[{"role": "user", "content": "Hi"}]], SamplingParams(k=2, max_new_tokens=8), backend)

    assert len(result.samples) == 2
