"""Engine fixtures: the built-in tiny model, built once per test session (and cached).

No database and no network: the engine never touches Django, and the Hugging Face hub is
switched off so a missing model fails instead of downloading.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.engine.backends import load_backend  # noqa: E402
from training.engine.tiny import TinyConfig  # noqa: E402
from training.engine.transformers_backend import TransformersBackend  # noqa: E402

# A model small enough to build in a couple of seconds, for tests of the build itself.
MICRO = TinyConfig(
    vocab_size=320,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    context_window=64,
    train_steps=2,
    batch_size=2,
    seq_len=16,
)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One CPU thread: on a small shared machine, torch's threads stall waiting for each
    other whenever another process takes a core (measured 9x slower with 2 threads under
    load, 2x faster when idle). One thread keeps the suite's time predictable."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_dir: Path) -> Path:
    """The real default build (the one the product ships), built once per test session
    and cached between runs (tests/conftest.py's tiny_model_dir): 1.5 to 4 minutes on one
    core the first time."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> TransformersBackend:
    backend = load_backend("builtin-tiny", str(tiny_dir))
    assert isinstance(backend, TransformersBackend)
    return backend
