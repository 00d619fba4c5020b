"""The one manifest format of every folder the engine writes (a snapshot, a checkpoint, a
trained model, the built-in tiny model): ``manifest.json``, written LAST and atomically,
holding the folder's metadata and, per file, its size and sha256 (and rows, for dataset
files). A folder without a manifest is unfinished; `read_manifest(verify=True)` also
refuses one whose files no longer match it. Nothing but the standard library."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path | str, metadata: Mapping[str, Any], *,
                   files: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write ``folder/manifest.json`` last: ``metadata`` plus ``files``, name (relative to
    the folder) -> stats. The caller that wrote the files passes their stats (a dataset
    writer knows rows, bytes and sha256 already); without them every file under the
    folder is hashed now. A listed file that is missing, or whose size differs from its
    stats, is an error. Atomic (temporary file, then rename): a reader sees the whole
    manifest or none."""
    folder = Path(folder)
    if files is None:
        files = {
            path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for path in sorted(p for p in folder.rglob("*") if p.is_file())
            if path.name != MANIFEST and not path.name.startswith(f".{MANIFEST}")
        }
    for name, stats in files.items():
        size = (folder / name).stat().st_size  # FileNotFoundError for a missing file
        if size != stats["bytes"]:
            raise ValueError(f"{name} is {size} bytes, its stats say {stats['bytes']}")
    manifest = {"manifest_version": MANIFEST_VERSION, **metadata,
                "files": {name: dict(stats) for name, stats in sorted(files.items())}}
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def read_manifest(folder: Path | str, *, verify: bool = False) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (unfinished) or one of another
    format. With ``verify``, also None unless every listed file has its recorded size
    and sha256 (a damaged or half-replaced folder)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    if verify:
        for name, stats in manifest.get("files", {}).items():
            path = folder / name
            try:
                if path.stat().st_size != stats["bytes"] or file_sha256(path) != stats["sha256"]:
                    return None
            except (OSError, KeyError, TypeError):
                return None
    return manifest
