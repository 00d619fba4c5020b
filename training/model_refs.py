"""Which models a run may name: the one check for generation `model` and training
`base_model`, run when the web creates a run and again when the worker executes it.

Accepted: a Hugging Face hub id ("owner/name"), a folder under one of the operator's
MODEL_DIRS, and the built-in models ("builtin-tiny", "minilm", or the folders the server
keeps them in). A registered model of the project is chosen by its id (generation
`policy`, training `base_version`), never by its path, so one project cannot load
another's weights. Anything else is refused with one message, the same whether the
path exists or not, so the check cannot be used to probe the server's disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings

from core.errors import DomainError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$")
MAX_FOLDERS_LISTED = 200
REFUSED = ("a model is a Hugging Face hub id (owner/name), a folder under the operator's "
           "MODEL_DIRS (GET /api/projects/{id}/generation-options lists them), or builtin-tiny "
           "or minilm; a model of this project is chosen by its id (policy, base_version)")


def builtin_models() -> dict[str, str]:
    """The built-in models by name -> the folder this server keeps them in."""
    from training.engine.reward import minilm_path  # imports no torch

    return {"builtin-tiny": str(settings.BUILTIN_TINY_DIR), "minilm": str(minilm_path())}


def model_reference(value: str) -> str:
    """`value` as a run stores it, or DomainError when it is not an accepted model."""
    builtins = builtin_models()
    if value in builtins:
        return builtins[value]
    if value in builtins.values():
        return value
    if _is_hub_id(value):
        return value
    if os.path.isabs(value) and ".." not in Path(value).parts and _under_model_dirs(value):
        return os.path.normpath(value)
    raise DomainError(REFUSED)


def _is_hub_id(value: str) -> bool:
    # transformers loads a local folder first when one has the id's name (relative to the
    # worker's working directory): such a name is refused, not loaded from disk.
    return bool(HUB_ID.match(value)) and ".." not in value and not os.path.lexists(value)


def _under_model_dirs(value: str) -> bool:
    """Strictly inside a MODEL_DIRS folder once symlinks are resolved (realpath), so a
    link in there cannot lead out of it."""
    real = os.path.realpath(value)
    for folder in settings.MODEL_DIRS:
        root = os.path.realpath(folder)
        if real != root and os.path.commonpath([real, root]) == root:
            return True
    return False


def model_folders() -> list[dict[str, Any]]:
    """The sub-folders of MODEL_DIRS this process sees, as a run would name them."""
    found = []
    for folder in settings.MODEL_DIRS:
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError:
            continue  # not mounted here (the web may not see the GPU workers' disks)
        for entry in entries[:MAX_FOLDERS_LISTED]:
            if entry.is_dir() and not entry.name.startswith(".") and _under_model_dirs(entry.path):
                found.append({"name": entry.name, "model": os.path.join(folder, entry.name)})
    return found
