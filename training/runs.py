"""Training runs: create one (validated), execute it, stop it.

`training_run_create` validates a run (the engine's own config class checks the
config) and audits it; `training_run_execute` (the task on `train`, and `manage.py
train`) runs the engine in-process on one device, or `accelerate launch` of the
engine's entry point for several, streams its metric events into TrainingMetric rows
and the run's heartbeat, stops when the run is cancelled, resumes from the last
complete checkpoint after a crash (the engine picks it), and registers the result
(training/registry.py). `run_stop` cancels a generation or training run, audited.

Label axes (issue #21): a reward run learns one axis's pairs, `config["axis"]` (default:
the project's primary axis), and must train on a snapshot built for that axis
(`snapshot.filters["axis"]`, absent = primary). An RL run may name one reward model per
axis, `config["reward_models"] = {axis: model version id}`, with a `combination`
(training.engine.combination, Llama 2's rule); the run's config stores their folders and
the resolved combination, and the worker re-checks each folder against the registry.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit
from core.errors import DomainError
from core.runs import Run, run_cancel, run_enqueue, run_finish, run_heartbeat
from labeling.axes import Axis, axes_from_config
from labeling.models import Project
from training.artifacts import artifact_local_model
from training.model_refs import model_reference
from training.models import (
    DatasetSnapshot,
    ModelVersion,
    TrainingMetric,
    TrainingRun,
)
from training.registry import compare_with_current, current_model, model_version_register
from training.snapshots import snapshot_local_dir
from training.workers import torch_threads

logger = logging.getLogger(__name__)
DATA_KIND = {"reward": "pairs", "dpo": "dpo", "sft": "sft", "rl": "sft"}


def default_base_model(kind: str) -> str:
    """The built-in models: MiniLM for reward models, the tiny LM for policies."""
    if kind == TrainingRun.Kind.REWARD:
        from training.engine.reward import minilm_path

        return str(minilm_path())
    return str(settings.BUILTIN_TINY_DIR)


def data_file_names(snapshot: DatasetSnapshot, kind: str) -> tuple[str, str | None]:
    """The snapshot's training and validation file names for this kind (parquet preferred)."""
    data = DATA_KIND[kind]
    for fmt in ("parquet", "jsonl"):
        train = f"{data}-train.{fmt}"
        if train in snapshot.files:
            validation = f"{data}-validation.{fmt}"
            held_out = snapshot.files.get(validation, {}).get("rows", 0) > 0
            return train, (validation if held_out else None)
    raise DomainError(f"snapshot {snapshot.pk} has no {data} files; a {kind} run needs them")


def data_files(snapshot: DatasetSnapshot, kind: str) -> tuple[Path, Path | None]:
    """The same files on this machine (fetched from artifact storage when missing)."""
    train, validation = data_file_names(snapshot, kind)
    folder = snapshot_local_dir(snapshot)
    return folder / train, (folder / validation if validation else None)


@transaction.atomic
def training_run_create(
    *, project: Project, kind: str, snapshot: DatasetSnapshot | None, config: dict[str, Any],
    base_model: str = "", base_version: ModelVersion | None = None,
    reward_version: ModelVersion | None = None, devices: int = 1,
    user: AbstractBaseUser | None = None, enqueue: bool = True,
) -> TrainingRun:
    from training.engine.cli import config_class

    if kind not in TrainingRun.Kind.values:
        raise DomainError(f"kind must be one of {', '.join(TrainingRun.Kind.values)}")
    if snapshot is None or snapshot.project_id != project.pk or snapshot.status != "done":
        raise DomainError("a training run needs a built dataset snapshot of this project")
    if snapshot.contains_erased:
        raise DomainError(f"snapshot {snapshot.pk} held data erased since and its files are deleted; "
                          "rebuild it and train on the new one")
    train_file, _ = data_file_names(snapshot, kind)
    _check_policy_data(snapshot, kind)
    if snapshot.files[train_file]["rows"] == 0:
        raise DomainError(f"{train_file} in snapshot {snapshot.pk} has no rows to train on")
    for version in (base_version, reward_version):
        if version is not None and version.project_id != project.pk:
            raise DomainError("registered models must belong to this project")
    if base_version is not None:
        base_model = base_version.merged_path or base_version.adapter_path
    elif base_model:
        base_model = model_reference(base_model)
    else:
        base_model = default_base_model(kind)
    config = {**config, "model": base_model}
    if kind == TrainingRun.Kind.REWARD:
        config["axis"] = reward_axis(project, snapshot, config.get("axis"))
    combined: dict[str, int] = {}
    if kind == TrainingRun.Kind.RL and "reward_models" in config:
        if reward_version is not None:
            raise DomainError("give one reward model or per-axis reward_models, not both")
        combined = _per_axis_rewards(project, config)
    elif kind == TrainingRun.Kind.RL:
        reward_version = reward_version or current_model(project, ModelVersion.Kind.REWARD)
        if reward_version is None:
            raise DomainError("online RL needs a reward model: promote one first")
        config["reward_model"] = reward_version.adapter_path
    try:
        config = config_class(kind).from_dict(config).to_dict()
    except (ValueError, TypeError) as exc:
        raise DomainError(f"invalid {kind} config: {exc}") from None
    if not 1 <= devices <= 64:
        raise DomainError("devices must be between 1 and 64")
    run = TrainingRun.objects.create(
        project=project, created_by=user if user and user.is_authenticated else None, kind=kind,
        base_model=base_model, base_version=base_version, snapshot=snapshot,
        reward_version=reward_version, config=config, devices=devices,
    )
    TrainingRun.objects.filter(pk=run.pk).update(
        artifact_path=str(settings.ARTIFACT_ROOT / "runs" / str(run.pk)))
    run.refresh_from_db()
    audit(actor=user, project=project, action="training.start", target=run,
          after={"kind": kind, "snapshot": snapshot.pk, "base_model": base_model,
                 **({"axis": config["axis"]} if "axis" in config else {}),
                 **({"reward_models": combined, "combination": config["combination"]} if combined else {})})
    if enqueue:
        run_enqueue(run)
    return run


def reward_axis(project: Project, snapshot: DatasetSnapshot, axis: object) -> str:
    """The axis a reward run learns: the one named (default: the project's primary axis),
    which must be one of the project's and the one the snapshot's pairs were built for."""
    axes = [a.key for a in axes_from_config(project.axes)]
    if axis in (None, ""):
        axis = axes[0]
    if not isinstance(axis, str) or axis not in axes:
        raise DomainError(f"axis {axis!r} is not one of this project's axes ({', '.join(axes)})")
    built_for = snapshot.filters.get("axis") or axes[0]
    if built_for != axis:
        raise DomainError(f"snapshot {snapshot.pk} holds the {built_for!r} axis's pairs, not {axis!r}'s: "
                          f"build a snapshot with the filter axis={axis!r}")
    return axis


def version_axis(version: ModelVersion) -> str:
    """The axis a registered reward model learned (older versions: the primary axis)."""
    return version.axis or axes_from_config(version.project.axes)[0].key


def _per_axis_rewards(project: Project, config: dict[str, Any]) -> dict[str, int]:
    """Resolve `reward_models` ({axis: model version id}) to their folders in `config` and
    complete the combination's axes from the axes' purposes; returns {axis: version id}.
    The engine's config class checks the combination itself (rule, threshold, axes)."""
    from training.engine.combination import combination_from_dict

    axes: dict[str, Axis] = {a.key: a for a in axes_from_config(project.axes)}
    chosen = config["reward_models"]
    if not isinstance(chosen, dict) or len(chosen) < 2:
        raise DomainError("reward_models maps two or more of the project's axes to reward model version ids")
    ids: dict[str, int] = {}
    for axis, version_id in chosen.items():
        if axis not in axes:
            raise DomainError(f"reward_models names axis {axis!r}, not one of this project's ({', '.join(axes)})")
        version = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD,
                                              pk=version_id if isinstance(version_id, int) else None).first()
        if version is None:
            raise DomainError(f"reward_models[{axis!r}] must be the id of a reward model of this project")
        if version_axis(version) != axis:
            raise DomainError(f"{version} learned the {version_axis(version)!r} axis, not {axis!r}")
        ids[axis] = version.pk
    combination = config.get("combination")
    if not isinstance(combination, dict):
        raise DomainError("reward_models needs a combination, e.g. {\"rule\": \"llama2\", \"safety_threshold\": 0.15}")
    combination = dict(combination)
    for field, purpose in (("safety_axis", "harmlessness"), ("helpful_axis", "helpfulness")):
        if field not in combination:
            matches = [key for key in ids if axes[key].purpose == purpose]
            if len(matches) != 1:
                raise DomainError(f"combination.{field}: name the axis (no single reward model axis has the "
                                  f"purpose {purpose!r})")
            combination[field] = matches[0]
    try:
        combination = combination_from_dict(combination, set(ids)).as_dict()
    except ValueError as exc:
        raise DomainError(f"invalid combination: {exc}") from None
    config["reward_models"] = {axis: ModelVersion.objects.get(pk=pk).adapter_path for axis, pk in ids.items()}
    config["combination"] = combination
    config["reward_model"] = ""
    return ids


def _check_policy_data(snapshot: DatasetSnapshot, kind: str) -> None:
    """A policy trains on messages, rendered by its chat template as they are when it is
    sampled; a snapshot exported as text would train it on another prompt format (the
    engine refuses such files too, but hours later on a worker)."""
    from training.engine.datasets import ExportOptions

    if kind == TrainingRun.Kind.REWARD:
        return
    if not ExportOptions(**snapshot.options).conversational_for(DATA_KIND[kind]):
        raise DomainError(
            f"snapshot {snapshot.pk} holds text prompts (conversational=false), and a {kind} run "
            "needs messages so the policy is trained on the prompt format it is sampled with: "
            "export a new snapshot with conversational left unset or true")


# --------------------------------------------------------------------------- executing


class _Sink:
    """Turns engine metric events into rows and heartbeats; False cancels the engine."""

    def __init__(self, run: TrainingRun, progress: Any = None) -> None:
        self.run, self.progress = run, progress
        self.max_steps: int | None = None

    def __call__(self, event: dict[str, Any]) -> bool:
        step = int(event.get("step") or 0)
        if event.get("event") == "start":
            self.max_steps = event.get("max_steps")
        if event.get("event") in {"log", "eval"}:
            values = {k: v for k, v in event.items()
                      if k not in {"event", "logs"} and isinstance(v, int | float) and v is not None}
            metric, created = TrainingMetric.objects.get_or_create(
                run=self.run, step=step, defaults={"values": values})
            if not created:
                TrainingMetric.objects.filter(pk=metric.pk).update(values={**metric.values, **values})
        if self.progress:
            self.progress(step, self.max_steps)
        return run_heartbeat(self.run, step=step, max_steps=self.max_steps)


def training_run_execute(run: TrainingRun, *, progress: Any = None) -> None:
    """Run (or resume) a claimed training run to the end; `progress(step, max_steps)`."""
    output = Path(run.artifact_path)
    sink = _Sink(run, progress)
    torch_threads()
    try:
        config = _checked_models(run)
        train_file, eval_file = data_files(run.snapshot, run.kind)
        if run.devices > 1:
            results = _launch_accelerate(run, config, train_file, eval_file, output, sink)
        else:
            from training.engine.cli import train

            results = train(run.kind, config, train_file, eval_file, output,
                            on_metrics=sink, resume=True)
    except SoftTimeLimitExceeded:
        raise  # the task fails the run with the time-limit message (core.runs)
    except Exception as exc:  # the engine's errors are many; the run records the message
        logger.exception("training run %s failed", run.pk)
        run_finish(run, status=Run.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return
    summary = {k: v for k, v in results.items() if k != "history"}
    if run.kind == TrainingRun.Kind.REWARD and results.get("status") != "cancelled":
        from training.engine.reward import learning_warnings

        # The engine wrote them too; the rule is applied here again so that results from
        # any engine (a launcher's results.json, an older worker) carry today's verdict.
        summary["warnings"] = learning_warnings(results)
    TrainingRun.objects.filter(pk=run.pk).update(results=summary)
    if results.get("status") == "cancelled":
        return  # the run row is already CANCELLED; no model is registered
    version = model_version_register(run=run, results=summary)
    if run.kind == TrainingRun.Kind.REWARD and eval_file is not None:
        try:  # a comparison that fails leaves the run and its model as they are
            compare_with_current(version=version, validation_file=eval_file)
        except Exception:
            logger.exception("comparing reward model %s with the current one failed", version.pk)
    run_finish(run, status=Run.Status.DONE, model_version=version.pk)


def _checked_models(run: TrainingRun) -> dict[str, Any]:
    """The run's config with its models checked again on the worker: registered models
    come from their rows (and may be in artifact storage only), anything else must be an
    accepted model reference. A row written some other way gets no further."""
    config = dict(run.config)
    base = run.base_version
    if base is not None and base.project_id == run.project_id:
        config["model"] = artifact_local_model(base.merged_path or base.adapter_path)
    else:
        config["model"] = model_reference(str(config.get("model", "")))
    if config.get("reward_models"):
        config["reward_models"] = {axis: _registered_reward(run, axis, folder)
                                   for axis, folder in config["reward_models"].items()}
    elif "reward_model" in config:
        reward = run.reward_version
        if reward is None or reward.project_id != run.project_id:
            raise DomainError("online RL needs a registered reward model of this project")
        config["reward_model"] = artifact_local_model(reward.adapter_path)
    return config


def _registered_reward(run: TrainingRun, axis: str, folder: str) -> str:
    """A per-axis reward model's folder, on this machine, if it is one of the project's
    registered reward models of that axis."""
    version = ModelVersion.objects.filter(project=run.project_id, kind=ModelVersion.Kind.REWARD,
                                          adapter_path=folder).first()
    if version is None or version_axis(version) != axis:
        raise DomainError(f"reward_models[{axis!r}] is not a registered {axis!r} reward model of this project")
    return artifact_local_model(version.adapter_path)


def _launch_accelerate(run: TrainingRun, config: dict[str, Any], train_file: Path,
                       eval_file: Path | None, output: Path, sink: _Sink) -> dict[str, Any]:
    """Several GPUs: `accelerate launch` the engine's entry point and follow its files."""
    output.mkdir(parents=True, exist_ok=True)
    config_file, metrics_file, cancel_file = (output / "run-config.json",
                                              output / "metrics.jsonl", output / "CANCEL")
    config_file.write_text(json.dumps(config))
    cancel_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
               str(run.devices), "-m", "training.engine.cli", "--kind", run.kind, "--config",
               str(config_file), "--train", str(train_file), "--output", str(output),
               "--metrics-file", str(metrics_file), "--cancel-file", str(cancel_file)]
    if eval_file:
        command += ["--eval", str(eval_file)]
    process = subprocess.Popen(command)
    seen = 0
    try:
        while process.poll() is None:
            time.sleep(2)
            lines = metrics_file.read_text().splitlines() if metrics_file.exists() else []
            for line in lines[seen:]:
                if sink(json.loads(line)) is False:
                    cancel_file.touch()
            seen = len(lines)
    except BaseException:
        # A time limit or a crash here must not leave the launcher holding the GPUs.
        process.kill()
        process.wait()
        raise
    if process.returncode not in {0, 3}:
        raise RuntimeError(f"accelerate launch exited with status {process.returncode}")
    return json.loads((output / "results.json").read_text())


# --------------------------------------------------------------------------- registry


def run_stop(*, run: Run, actor: AbstractBaseUser | None) -> bool:
    """Cancel a queued or running generation, training or snapshot run or import (the
    worker stops at its next chunk or step; what it wrote is kept); audited. False when it
    had finished."""
    cancelled = run_cancel(run)
    if cancelled:
        audit(actor=actor, project=run.project, action=f"{run.audit_name}.cancel", target=run)
    return cancelled
