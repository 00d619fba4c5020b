"""What the API returns, as plain dataclasses (no pandas), with the actions that apply to
each: a project starts imports and runs, a run waits and cancels, a snapshot downloads
(sha256 checked) and loads as a `datasets.Dataset`, a model version is promoted."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ordinal_client.client import Ordinal, file_name, jsonl_bytes
from ordinal_client.errors import RunFailed, WaitTimeout
from ordinal_client.progress import ProgressLine

if TYPE_CHECKING:
    import datasets  # type: ignore[import-not-found, unused-ignore]  # optional dependency

R = TypeVar("R", bound="Resource")
RunT = TypeVar("RunT", bound="Run")
T = TypeVar("T")


@dataclass
class Resource:
    """A row of the API. `raw` keeps the whole answer, for fields not mapped here."""

    client: Ordinal = field(repr=False, compare=False)
    id: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls: type[R], client: Ordinal, row: Mapping[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)} - {"client", "raw"}
        values: dict[str, Any] = {name: row.get(name) for name in names}
        return cls(client=client, raw=dict(row), **values)

    def _update(self: R, row: Mapping[str, Any]) -> R:
        fresh = self.from_api(self.client, row)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        return self


# --------------------------------------------------------------------------- runs


@dataclass
class Run(Resource):
    """A background run: poll it with `refresh()`, block on it with `wait()`."""

    path: ClassVar[str] = ""
    what: ClassVar[str] = "run"
    project: int = 0
    status: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def fetch(cls: type[RunT], client: Ordinal, run_id: int) -> RunT:
        return cls.from_api(client, client.get(cls.path.format(id=run_id)))

    @property
    def finished(self) -> bool:
        return self.status in {"done", "failed", "cancelled"}

    def refresh(self: RunT) -> RunT:
        return self._update(self.client.get(self.path.format(id=self.id)))

    def wait(self: RunT, *, timeout: float | None = None, poll: float = 1.0, progress: bool | None = None,
             raise_on_failure: bool = True) -> RunT:
        """Block until the run is done, failed or cancelled, drawing a progress bar on
        stderr (by default when stderr is a terminal). Raises RunFailed when it did not
        end done (unless `raise_on_failure=False`), WaitTimeout after `timeout` seconds."""
        bar = ProgressLine(f"{self.what} {self.id}", enabled=progress)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                self.refresh()
                done, total, unit = self.fraction()
                bar.update(done, total, unit, self.status)
                if self.finished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"{self.what} {self.id} still {self.status} after {timeout} s")
                time.sleep(poll)
        finally:
            bar.close()
        if raise_on_failure and self.status != "done":
            raise RunFailed(self)
        return self

    def fraction(self) -> tuple[float, float | None, str]:
        """(done, total, unit) for the progress bar."""
        return 0, None, ""


@dataclass
class ImportJob(Run):
    path: ClassVar[str] = "/api/imports/{id}"
    what: ClassVar[str] = "import"
    original_name: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    def fraction(self) -> tuple[float, float | None, str]:
        p = self.progress or {}
        return p.get("bytes_done", 0), p.get("bytes_total"), "bytes"


@dataclass
class GenerationRun(Run):
    path: ClassVar[str] = "/api/generation-runs/{id}"
    what: ClassVar[str] = "generation run"
    backend: str = ""
    model: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def fraction(self) -> tuple[float, float | None, str]:
        p = self.progress or {}
        return p.get("prompts_done", 0), p.get("prompts_total"), "prompts"

    def cancel(self) -> GenerationRun:
        return self._update(self.client.post(f"/api/generation-runs/{self.id}/cancel"))


@dataclass
class TrainingRun(Run):
    path: ClassVar[str] = "/api/training-runs/{id}"
    what: ClassVar[str] = "training run"
    kind: str = ""
    snapshot: int | None = None
    base_model: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def fraction(self) -> tuple[float, float | None, str]:
        p = self.progress or {}
        return p.get("step", 0), p.get("max_steps"), "steps"

    def cancel(self) -> TrainingRun:
        return self._update(self.client.post(f"/api/training-runs/{self.id}/cancel"))

    def metrics(self) -> list[dict[str, Any]]:
        """Per logged step: {"step", "values": {"loss": ..., ...}, "created_at"}."""
        return list(self.client.get(f"/api/training-runs/{self.id}/metrics"))

    @property
    def model_version(self) -> ModelVersion:
        """The model this finished run registered."""
        version_id = (self.progress or {}).get("model_version")
        if version_id is None:
            raise ValueError(f"training run {self.id} registered no model (status {self.status})")
        for version in Project.from_api(self.client, {"id": self.project}).models():
            if version.id == version_id:
                return version
        raise ValueError(f"model version {version_id} of training run {self.id} is gone")


@dataclass
class HubPush(Run):
    path: ClassVar[str] = "/api/hub-pushes/{id}"
    what: ClassVar[str] = "hub push"
    snapshot: int = 0
    repo_id: str = ""
    commit_url: str = ""


# --------------------------------------------------------------------------- snapshots


@dataclass
class Snapshot(Run):
    path: ClassVar[str] = "/api/datasets/{id}"
    what: ClassVar[str] = "snapshot"
    kinds: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None

    def fraction(self) -> tuple[float, float | None, str]:
        p = self.progress or {}
        return p.get("steps_done", 0), p.get("steps_total"), "files"

    def download(self, folder: str | os.PathLike[str], *, names: Iterable[str] | None = None) -> list[Path]:
        """Stream the snapshot's files (all, or `names`) into `folder`, each checked
        against the manifest's sha256 (ChecksumMismatch, and no file left, otherwise)."""
        from ordinal_client.download import download_file

        if self.status != "done":
            raise ValueError(f"snapshot {self.id} is {self.status}, not done: wait() for it first")
        listed = (self.manifest or {}).get("files") or self.files
        wanted = list(names) if names is not None else sorted(listed)
        unknown = [name for name in wanted if name not in listed]
        if unknown:
            raise ValueError(f"snapshot {self.id} has no {', '.join(unknown)}; it has {', '.join(sorted(listed))}")
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        return [download_file(self.client, f"/api/datasets/{self.id}/files/{name}", target / name,
                              sha256=listed[name]["sha256"]) for name in wanted]

    def load(self, kind: str = "pairs", *, split: str | None = "train",
             folder: str | os.PathLike[str] | None = None) -> datasets.Dataset | datasets.DatasetDict:
        """One kind of the snapshot as a `datasets.Dataset` (`split`: "train" or
        "validation"), or a DatasetDict of both splits with `split=None`. Files are
        downloaded (sha256 checked) into `folder`, a temporary one by default.
        Needs the `datasets` package (pip install "ordinal-client[datasets]")."""
        from ordinal_client.download import load_snapshot_kind

        return load_snapshot_kind(self, kind, split=split, folder=folder)

    def push_to_hub(self, repo_id: str, *, private: bool = True, license: str = "other") -> HubPush:
        """Push this snapshot to the Hugging Face Hub (the server's operator configures the
        Hub and its token; admins only). Returns the push, a run to `wait()` on."""
        body = {"repo_id": repo_id, "private": private, "license": license}
        return HubPush.from_api(self.client, self.client.post(f"/api/datasets/{self.id}/hub-push", body))


# --------------------------------------------------------------------------- models, quality


@dataclass
class ModelVersion(Resource):
    project: int = 0
    kind: str = ""
    name: str = ""
    version: int = 0
    base_model: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    source_run: int | None = None
    snapshot: int | None = None
    warnings: list[str] = field(default_factory=list)
    is_current: bool = False

    def promote(self, *, confirm: bool = False) -> ModelVersion:
        return self._update(self.client.promote(self.id, confirm=confirm).raw)


@dataclass
class Agreement:
    """A project's agreement summary (plain data)."""

    items: dict[str, int]
    decided_items: int
    pairwise_agreement: float | None
    pairwise_agreement_ci: list[float] | None
    rankings_saved_by_adaptive_overlap: int


@dataclass
class AnnotatorQuality:
    """One annotator's figures for a period (plain data)."""

    annotator: str
    period: str
    rankings: int
    loo_agreement: float | None
    gold_items: int
    gold_accuracy: float | None
    median_seconds: float | None
    tie_rate: float | None
    position_bias: float | None
    position_expected: float | None
    length_bias: float | None
    flags: list[str]
    updated_at: str


def _plain(cls: type[T], row: Mapping[str, Any]) -> T:
    values: dict[str, Any] = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**values)


@dataclass
class Webhook(Resource):
    project: int = 0
    url: str = ""
    events: list[str] = field(default_factory=list)
    active: bool = True
    description: str = ""
    secret: str | None = None  # only in the answer that created it

    def deliveries(self) -> list[dict[str, Any]]:
        """Latest deliveries, newest first: status, attempts, response code, latency, log."""
        return list(self.client.get(f"/api/webhooks/{self.id}/deliveries"))

    def redeliver(self, delivery_id: int) -> dict[str, Any]:
        """Send a delivery's event again (the same event id)."""
        return dict(self.client.post(f"/api/webhook-deliveries/{delivery_id}/redeliver"))

    def delete(self) -> None:
        self.client.request("DELETE", f"/api/webhooks/{self.id}")


# --------------------------------------------------------------------------- projects


@dataclass
class Project(Resource):
    name: str = ""
    slug: str = ""
    k: int = 0
    overlap: int = 0
    agreement_threshold: float = 0.0
    status: str = ""

    # imports
    def import_file(self, path: str | os.PathLike[str], *, skip_invalid: bool = False) -> ImportJob:
        """Upload a JSONL, CSV or Parquet file (optionally .gz); returns the import job."""
        with open(path, "rb") as fh:
            return self._upload(file_name(path), fh, skip_invalid)

    def import_rows(self, rows: Iterable[Mapping[str, Any]], *, skip_invalid: bool = False,
                    name: str = "rows.jsonl") -> ImportJob:
        """Upload rows ({"prompt": ...} or {"messages": [...]}, optionally "candidates",
        or TRL's {"prompt", "chosen", "rejected"}) as one JSONL file."""
        return self._upload(name, jsonl_bytes(rows), skip_invalid)

    def import_dataset(self, dataset: Any, *, skip_invalid: bool = False) -> ImportJob:
        """Upload a `datasets.Dataset` whose columns are import fields."""
        return self.import_rows(iter(dataset), skip_invalid=skip_invalid, name="dataset.jsonl")

    def _upload(self, name: str, fh: Any, skip_invalid: bool) -> ImportJob:
        row = self.client.request("POST", f"/api/projects/{self.id}/imports",
                                  files={"file": (name, fh, "application/octet-stream")},
                                  data={"skip_invalid": "true" if skip_invalid else "false"})
        return ImportJob.from_api(self.client, row)

    def imports(self) -> list[ImportJob]:
        return [ImportJob.from_api(self.client, r) for r in self.client.get(f"/api/projects/{self.id}/imports")]

    # runs
    def generate(self, *, backend: str = "builtin-tiny", model: str = "", endpoint: str = "", k: int | None = None,
                 policy: int | None = None, **params: Any) -> GenerationRun:
        """Sample K candidates per prompt (temperature, top_p, max_new_tokens, seed,
        stop, system_prompt, prompt_ids: as the API takes them). `policy`: a model version id
        of this project's policies to sample from instead of `backend`."""
        body: dict[str, Any] = {"k": k or self.k, **params}
        if policy is not None:
            body["policy"] = policy
        else:
            body["backend"] = backend
        if model:
            body["model"] = model
        if endpoint:
            body["endpoint"] = endpoint
        return GenerationRun.from_api(self.client, self.client.post(f"/api/projects/{self.id}/generation-runs", body))

    def snapshot(self, *, kinds: Iterable[str] = ("pairs",), formats: Iterable[str] = ("parquet", "jsonl"),
                 **options: Any) -> Snapshot:
        """Freeze accepted labels (filters and options: as the API takes them)."""
        body = {"kinds": list(kinds), "formats": list(formats), **options}
        return Snapshot.from_api(self.client, self.client.post(f"/api/projects/{self.id}/datasets", body))

    def train(self, kind: str, snapshot: int | Snapshot, *, config: Mapping[str, Any] | None = None,
              base_model: str = "", base_version: int | None = None, devices: int = 1) -> TrainingRun:
        """Start a reward, sft, dpo or rl run on a built snapshot."""
        body: dict[str, Any] = {"kind": kind, "snapshot": snapshot if isinstance(snapshot, int) else snapshot.id,
                                "config": dict(config or {}), "devices": devices}
        if base_model:
            body["base_model"] = base_model
        if base_version is not None:
            body["base_version"] = base_version
        return TrainingRun.from_api(self.client, self.client.post(f"/api/projects/{self.id}/training-runs", body))

    def generation_runs(self) -> list[GenerationRun]:
        return [GenerationRun.from_api(self.client, r)
                for r in self.client.get(f"/api/projects/{self.id}/generation-runs")]

    def snapshots(self) -> list[Snapshot]:
        return [Snapshot.from_api(self.client, r) for r in self.client.get(f"/api/projects/{self.id}/datasets")]

    def training_runs(self) -> list[TrainingRun]:
        return [TrainingRun.from_api(self.client, r)
                for r in self.client.get(f"/api/projects/{self.id}/training-runs")]

    # models and quality
    def models(self) -> list[ModelVersion]:
        return [ModelVersion.from_api(self.client, r)
                for r in self.client.get(f"/api/projects/{self.id}/model-versions")]

    def current_model(self, kind: str = "reward") -> ModelVersion | None:
        return next((m for m in self.models() if m.kind == kind and m.is_current), None)

    def agreement(self) -> Agreement:
        return _plain(Agreement, self.client.get(f"/api/projects/{self.id}/agreement"))

    def annotators(self, period: str = "all") -> list[AnnotatorQuality]:
        rows = self.client.get(f"/api/projects/{self.id}/annotators", period=period)
        return [_plain(AnnotatorQuality, row) for row in rows]

    # webhooks
    def webhooks(self) -> list[Webhook]:
        return [Webhook.from_api(self.client, r) for r in self.client.get(f"/api/projects/{self.id}/webhooks")]

    def add_webhook(self, url: str, events: Iterable[str], *, description: str = "") -> Webhook:
        """Register a webhook (admins); the returned object holds its `secret`, once."""
        body = {"url": url, "events": list(events), "description": description}
        return Webhook.from_api(self.client, self.client.post(f"/api/projects/{self.id}/webhooks", body))
