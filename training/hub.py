"""Pushing a dataset snapshot to the Hugging Face Hub, as `datasets`' push_to_hub lays a
repository out: one config per kind (pairs, dpo, sft, ...), its splits as Parquet files
under <kind>/<split>-00000-of-00001.parquet, and a README.md dataset card whose YAML
header lists the configs (so `load_dataset(repo, "pairs")` works) and the license, with
a body generated from the manifest: counts, agreement, guideline versions, filters,
the source files' sha256.

An explicit action (API, client) queues a HubPush run; the task builds the folder and
sends it in one commit through huggingface_hub, to the operator's Hub (HF_ENDPOINT) with
the operator's token (HF_HUB_PUSH_TOKEN). A request names the repository, nothing else:
never a URL, never a token.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit
from core.errors import DomainError
from core.runs import Run, run_enqueue, run_finish
from training.models import DatasetSnapshot, HubPush
from training.snapshots import snapshot_local_dir

logger = logging.getLogger(__name__)
NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^{NAME}/{NAME}$")
LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}$")
SPLITS = ("train", "validation")


def hub_push_create(*, snapshot: DatasetSnapshot, repo_id: str, actor: AbstractBaseUser, private: bool = True,
                    license: str = "other") -> HubPush:
    """Queue a push of a built snapshot (its Parquet files) to `repo_id` (owner/name)."""
    if not settings.HF_HUB_PUSH_TOKEN:
        raise DomainError("pushing to the Hugging Face Hub is off: the operator sets HF_HUB_PUSH_TOKEN")
    if not REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise DomainError("repo_id must be owner/name: letters, digits, '-', '_' or '.', at most 96 each")
    if not LICENSE.match(license):
        raise DomainError("license must be a Hub license id such as cc-by-4.0, apache-2.0, mit or other")
    if snapshot.status != Run.Status.DONE:
        raise DomainError(f"snapshot {snapshot.pk} is {snapshot.status}; push a built one")
    if not parquet_files(snapshot):
        raise DomainError(f"snapshot {snapshot.pk} has no Parquet files; export one with formats including parquet")
    with transaction.atomic():
        push = HubPush.objects.create(project=snapshot.project, snapshot=snapshot, repo_id=repo_id, private=private,
                                      license=license, created_by=actor if actor.is_authenticated else None)
        audit(actor=actor, project=snapshot.project, action="snapshot.hub_push", target=push,
              after={"snapshot": snapshot.pk, "repo_id": repo_id, "private": private, "license": license})
        run_enqueue(push)
    return push


def parquet_files(snapshot: DatasetSnapshot) -> dict[str, tuple[str, str]]:
    """Repository path -> (snapshot file, kind) for every non-empty Parquet split."""
    paths = {}
    for kind in snapshot.kinds:
        for split in SPLITS:
            name = f"{kind}-{split}.parquet"
            if snapshot.files.get(name, {}).get("rows", 0) > 0:
                paths[f"{kind}/{split}-00000-of-00001.parquet"] = (name, kind)
    return paths


def hub_folder_build(snapshot: DatasetSnapshot, folder: Path, *, license: str, agreement: dict[str, Any]) -> Path:
    """Lay the snapshot out in `folder` as a push_to_hub repository, card included."""
    from training.engine.manifest import read_manifest

    source = snapshot_local_dir(snapshot)
    manifest = read_manifest(source, verify=True)
    if manifest is None:
        raise DomainError(f"snapshot {snapshot.pk}'s files are missing or no longer match its manifest")
    files = parquet_files(snapshot)
    for path, (name, _) in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, folder / path)
    (folder / "README.md").write_text(dataset_card(snapshot, manifest, files, license=license, agreement=agreement))
    return folder


def dataset_card(snapshot: DatasetSnapshot, manifest: dict[str, Any], files: dict[str, tuple[str, str]], *,
                 license: str, agreement: dict[str, Any]) -> str:
    """The README.md: YAML header (license, configs, tags), then what the data is."""
    configs: dict[str, list[str]] = {}
    for path, (_, kind) in files.items():
        configs.setdefault(kind, []).append(path)
    header = [f"license: {license}", "tags:", "- ordinal", "- rlhf", "- human-preference", "configs:"]
    for kind, paths in configs.items():
        header += [f"- config_name: {kind}", "  data_files:"]
        for path in paths:
            split = path.split("/")[1].split("-")[0]
            header += [f"  - split: {split}", f"    path: {kind}/{split}-*"]
    counts = manifest.get("counts", {})
    rate, interval = agreement.get("pairwise_agreement"), agreement.get("pairwise_agreement_ci")
    agreed = ("not measured yet" if rate is None else
              f"{rate:.3f}" + (f" (95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""))
    versions = ", ".join(f"v{v}" for v in manifest.get("guideline_versions", [])) or "none recorded"
    lines = [
        f"# {snapshot.project.name}: Ordinal snapshot {snapshot.pk}", "",
        "Human preference labels exported by Ordinal from accepted consensus rankings, in TRL's formats.", "",
        "| config | split | rows |", "| --- | --- | ---: |",
        *[f"| {kind} | {path.split('/')[1].split('-')[0]} | {counts.get(name.rsplit('.', 1)[0], 0)} |"
          for path, (name, kind) in files.items()], "",
        f"- Pairwise agreement between annotators: {agreed}",
        f"- Decided items: {agreement.get('decided_items', 'unknown')}",
        f"- Guideline versions: {versions}",
        f"- License: {license}",
        f"- Filters: `{json.dumps(manifest.get('filters', {}), sort_keys=True)}`",
        f"- Created: {manifest.get('created_at', '')} by {manifest.get('code_version', 'ordinal')}", "",
        "Source files (sha256 as in the snapshot's manifest):", "",
        *[f"- `{name}`: `{manifest.get('files', {}).get(name, {}).get('sha256', '')}`" for name, _ in files.values()],
    ]
    return "---\n" + "\n".join(header) + "\n---\n\n" + "\n".join(lines) + "\n"


def hub_push_execute(push: HubPush) -> None:
    """Build the repository folder and send it as one commit (the task on `default`)."""
    from labeling.selectors.dashboard import project_agreement_summary

    try:
        agreement = project_agreement_summary(project=push.project)
        with tempfile.TemporaryDirectory(prefix=f"hub-push-{push.pk}-") as scratch:
            folder = hub_folder_build(push.snapshot, Path(scratch), license=push.license, agreement=agreement)
            url = _upload(push, folder)
    except Exception as exc:  # the Hub's and the network's errors are many; the run keeps the message
        logger.warning("hub push %s failed: %s", push.pk, exc)
        run_finish(push, status=Run.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        return
    HubPush.objects.filter(pk=push.pk).update(commit_url=url[:500])
    run_finish(push, status=Run.Status.DONE)


def _upload(push: HubPush, folder: Path) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=settings.HF_ENDPOINT, token=settings.HF_HUB_PUSH_TOKEN)
    api.create_repo(push.repo_id, repo_type="dataset", private=push.private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=str(path.relative_to(folder)), path_or_fileobj=str(path))
                  for path in sorted(folder.rglob("*")) if path.is_file()]
    commit = api.create_commit(push.repo_id, repo_type="dataset", operations=operations,
                               commit_message=f"Ordinal snapshot {push.snapshot_id} of {push.project.slug}")
    return str(commit.commit_url)
