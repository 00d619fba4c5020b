"""The sampling backends by name: `load_backend("builtin-tiny" | "transformers" | "vllm" |
"openai", model, **options)`. Each backend module imports its heavy packages only when
loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.engine.sampling import BACKENDS, Backend, BackendError


def load_backend(name: str, model: str, **options: Any) -> Backend:
    """Load a backend by name. `model`: hub id or local path; for "builtin-tiny" the folder
    it is built in (e.g. ARTIFACT_ROOT/models/builtin-tiny); for "openai" the model name the
    endpoint serves. Options go to the backend's constructor (see each class)."""
    if name == "transformers":
        from training.engine.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    if name == "builtin-tiny":
        from training.engine.tiny import ensure_tiny_model

        if not model:
            raise BackendError("builtin-tiny needs the folder to build it in as `model`")
        from training.engine.transformers_backend import TransformersBackend

        path = ensure_tiny_model(Path(model), num_threads=options.get("num_threads"))
        return TransformersBackend(str(path), name="builtin-tiny", **options)
    if name == "vllm":
        from training.engine.vllm_backend import VLLMBackend

        return VLLMBackend(model, **options)
    if name == "openai":
        from training.engine.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **options)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
