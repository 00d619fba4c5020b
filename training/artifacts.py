"""Artifact storage: the local ARTIFACT_ROOT, optionally mirrored to object storage.

Every artifact (a dataset snapshot folder, a trained adapter, merged weights) is written
to ARTIFACT_ROOT first, where the engine and the generation backends read it. With
ARTIFACT_STORAGE_URL set (``s3://bucket/prefix`` for S3, MinIO, R2 or any other
S3-compatible store through s3fs; any other fsspec URL works too), a finished folder is
uploaded under the same relative key, with a ``.complete`` marker written last, so a
reader never takes a half-uploaded folder. A worker or web process on another machine
that lacks the folder fetches it on first use into its own ARTIFACT_ROOT (into a
temporary folder, renamed when complete, so two fetches never mix).

Paths stored in the database stay absolute local paths under ARTIFACT_ROOT, which every
process mounts at the same path (the Docker images use /data/artifacts); their key is
the part below ARTIFACT_ROOT. Without ARTIFACT_STORAGE_URL this module does nothing and
the shared volume is the storage. Resume checkpoints stay local: a run resumed on
another machine starts from its last mirrored result, not its last checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)
COMPLETE = ".complete"


class ArtifactMissing(FileNotFoundError):
    """The artifact is neither in ARTIFACT_ROOT nor in the configured storage."""


def storage_enabled() -> bool:
    return bool(settings.ARTIFACT_STORAGE_URL)


def _filesystem() -> tuple[Any, str]:
    """The fsspec filesystem and root path of ARTIFACT_STORAGE_URL."""
    import fsspec

    url = settings.ARTIFACT_STORAGE_URL
    try:  # credentials and endpoint come from the standard AWS variables (boto reads them)
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"ARTIFACT_STORAGE_URL={url!r} needs a driver that is not installed ({exc}); "
            "for s3:// install the s3 extra: pip install 'ordinal[s3]'") from None
    except ValueError as exc:
        raise ImproperlyConfigured(f"ARTIFACT_STORAGE_URL={url!r}: {exc}") from None
    return fs, root.rstrip("/")


def artifact_key(path: str | Path) -> str:
    """The storage key of a path under ARTIFACT_ROOT ("runs/12/model")."""
    root = Path(settings.ARTIFACT_ROOT).resolve()
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(f"{path} is not under ARTIFACT_ROOT ({root})") from None


def artifact_publish(path: str | Path) -> int:
    """Upload a finished local folder (or file) to storage; returns the files sent.

    Idempotent: publishing again overwrites the same keys, and the marker goes last."""
    if not storage_enabled():
        return 0
    local = Path(path)
    key = artifact_key(local)
    fs, root = _filesystem()
    target = f"{root}/{key}"
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for file in files:
        relative = file.name if local.is_file() else file.relative_to(local).as_posix()
        destination = target if local.is_file() else f"{target}/{relative}"
        fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(file), destination)
    if local.is_dir():
        with fs.open(f"{target}/{COMPLETE}", "w") as marker:
            marker.write(f"{len(files)}\n")
    logger.info("published %s files of %s to %s", len(files), key, settings.ARTIFACT_STORAGE_URL)
    return len(files)


def artifact_open(path: str | Path) -> BinaryIO:
    """Open one artifact file for reading: the local copy, else straight from storage
    (the web streams a snapshot file without copying the whole folder to its disk)."""
    local = Path(path)
    if local.exists() or not storage_enabled():
        return open(local, "rb")  # noqa: SIM115 (the caller closes it)
    fs, root = _filesystem()
    source = f"{root}/{artifact_key(local)}"
    if not fs.isfile(source):
        raise ArtifactMissing(f"{artifact_key(local)} is neither local nor in storage")
    return fs.open(source, "rb")


def artifact_local(path: str | Path) -> Path:
    """The local path of an artifact folder, fetched from storage when this machine
    lacks it. Paths outside ARTIFACT_ROOT (a hub id, a user's own folder) come back
    unchanged, and so does everything when no storage is configured."""
    local = Path(path)
    if local.exists() or not storage_enabled():
        return local
    try:
        key = artifact_key(local)
    except ValueError:
        return local
    fs, root = _filesystem()
    source = f"{root}/{key}"
    if not fs.exists(f"{source}/{COMPLETE}"):
        raise ArtifactMissing(f"{key} is not in ARTIFACT_ROOT nor (complete) in "
                              f"{settings.ARTIFACT_STORAGE_URL}")
    local.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{local.name}.", dir=local.parent))
    try:
        count = 0
        for remote in fs.find(source):
            relative = remote[len(source):].lstrip("/")
            if relative == COMPLETE:
                continue
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(staging / relative))
            count += 1
        try:
            staging.rename(local)
        except OSError:  # another process fetched it first: theirs is as good as ours
            if not local.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetched %s files of %s from %s", count, key, settings.ARTIFACT_STORAGE_URL)
    return local


def artifact_local_model(name: str) -> str:
    """A model reference (hub id or path) with artifact folders fetched when missing."""
    return str(artifact_local(name)) if name else name


def artifact_delete(path: str | Path) -> int:
    """Delete an artifact folder (or file) here and in storage; returns the storage
    objects removed. Idempotent: what is already gone is skipped. Erasure uses it
    (erasure/services.py); nothing else deletes a finished artifact."""
    local = Path(path)
    if local.is_dir():
        shutil.rmtree(local)
    elif local.exists():
        local.unlink()
    if not storage_enabled():
        return 0
    fs, root = _filesystem()
    target = f"{root}/{artifact_key(local)}"
    if not fs.exists(target):
        return 0
    removed = len(fs.find(target)) if fs.isdir(target) else 1
    fs.rm(target, recursive=True)
    fs.invalidate_cache()
    logger.info("deleted %s objects of %s from %s", removed, artifact_key(local),
                settings.ARTIFACT_STORAGE_URL)
    return removed
