"""Snapshot files: streamed to disk with their sha256 computed on the way and compared
with the manifest's, then loaded with `datasets` (imported only here, only when asked)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ordinal_client.errors import ChecksumMismatch

if TYPE_CHECKING:
    from ordinal_client.client import Ordinal
    from ordinal_client.resources import Snapshot

CHUNK = 1 << 20


def download_file(client: Ordinal, path: str, target: Path, *, sha256: str) -> Path:
    """GET `path` into `target` (via a temporary file, renamed once its digest matches)."""
    digest = hashlib.sha256()
    partial = target.with_name(f".{target.name}.part")
    try:
        with client.stream(path) as response, open(partial, "wb") as out:
            for chunk in response.iter_bytes(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(f"{target.name}: sha256 {digest.hexdigest()} but the manifest says {sha256}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load_snapshot_kind(snapshot: Snapshot, kind: str, *, split: str | None,
                       folder: str | os.PathLike[str] | None) -> Any:
    try:
        import datasets  # type: ignore[import-not-found, unused-ignore]  # optional dependency
    except ImportError:  # the one optional dependency
        raise ImportError('Snapshot.load needs the datasets package: pip install "ordinal-client[datasets]"') from None
    listed = (snapshot.manifest or {}).get("files") or snapshot.files
    fmt = next((f for f in ("parquet", "jsonl") if f"{kind}-train.{f}" in listed), None)
    if fmt is None:
        raise ValueError(f"snapshot {snapshot.id} has no {kind} files; its kinds are {', '.join(snapshot.kinds)}")
    splits = [s for s in ("train", "validation") if f"{kind}-{s}.{fmt}" in listed]
    if split is not None and split not in splits:
        raise ValueError(f"snapshot {snapshot.id} has no {split} split of {kind}; it has {', '.join(splits)}")
    wanted = [split] if split is not None else splits
    target = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix=f"ordinal-snapshot-{snapshot.id}-"))
    paths = snapshot.download(target, names=[f"{kind}-{s}.{fmt}" for s in wanted])
    builder = "parquet" if fmt == "parquet" else "json"
    loaded = datasets.load_dataset(builder, data_files={s: str(p) for s, p in zip(wanted, paths, strict=True)},
                                   cache_dir=str(target / ".cache"))
    return loaded[split] if split is not None else loaded
