"""What a worker process sets up before it loads a model (generation and training alike)."""

from __future__ import annotations

from django.conf import settings


def torch_threads() -> None:
    """Apply TORCH_NUM_THREADS before any model is built or loaded in this process."""
    if settings.TORCH_NUM_THREADS:
        import torch  # here, not at import: the web process never loads torch

        torch.set_num_threads(settings.TORCH_NUM_THREADS)
