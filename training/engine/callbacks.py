"""Metric streaming and checkpoint manifests, as transformers TrainerCallbacks.

The caller passes ``on_metrics(event: dict) -> bool | None``. Events:

- ``{"event": "start", "step", "max_steps"}`` when training starts (or resumes);
- ``{"event": "log", "step", "epoch", "loss", "accuracy", "reward", "margin", "kl",
  "learning_rate", "samples_per_second", "logs": {...raw Trainer logs}}`` every
  ``logging_steps`` (fields a kind does not have are None);
- ``{"event": "eval", "step", ..., "logs"}`` for evaluation logs;
- ``{"event": "checkpoint", "step", "path"}`` after a checkpoint is complete;
- ``{"event": "heartbeat", "step", "time"}`` at most every ``heartbeat_seconds``.

Returning ``False`` (not None) from any call cancels: training stops at the end of the
current step and `train` returns ``{"status": "cancelled", ...}`` without a final model.
Only the main process calls ``on_metrics``; its answer is broadcast to the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from training.engine.checkpoints import RunContext
from training.engine.manifest import write_manifest
from training.engine.trainer_config import TrainingConfig

MetricsSink = Callable[[dict[str, Any]], "bool | None"]


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


def metrics_callback(on_metrics: MetricsSink | None, *, heartbeat_seconds: float, samples_per_step: int,
                     keys: Mapping[str, str]) -> Any:
    """A TrainerCallback that streams events to ``on_metrics`` (see the module docstring).

    ``keys`` maps the standard names (accuracy, reward, margin, kl) to the kind's TRL log
    keys, e.g. ``{"accuracy": "rewards/accuracies"}`` for DPO."""

    class StreamMetrics(_callback_base()):
        def __init__(self) -> None:
            self.cancelled = False
            self.history: list[dict[str, Any]] = []
            self.last_logs: dict[str, Any] = {}
            self._last_beat = 0.0
            self._last_log = (time.monotonic(), 0)

        def emit(self, state: Any, event: dict[str, Any]) -> None:
            if on_metrics is not None and state.is_world_process_zero and on_metrics(event) is False:
                self.cancelled = True

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._last_log = (time.monotonic(), state.global_step)
            self.emit(state, {"event": "start", "step": state.global_step, "max_steps": state.max_steps})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            logs = dict(logs or {})
            if "train_runtime" in logs:  # the end-of-training summary
                return
            evaluation = any(k.startswith("eval_") for k in logs)
            prefix = "eval_" if evaluation else ""
            now = time.monotonic()
            started, step0 = self._last_log
            rate = None
            if not evaluation and state.global_step > step0 and now > started:
                rate = (state.global_step - step0) * samples_per_step / (now - started)
                self._last_log = (now, state.global_step)
            event = {
                "event": "eval" if evaluation else "log",
                "step": state.global_step,
                "epoch": state.epoch,
                "loss": logs.get(f"{prefix}loss"),
                "learning_rate": logs.get("learning_rate"),
                "samples_per_second": rate,
                **{name: logs.get(prefix + key) for name, key in keys.items()},
                "logs": logs,
            }
            if not evaluation:
                self.last_logs = logs
            self.history.append({k: v for k, v in event.items() if k != "logs"})
            self.emit(state, event)
            self.stop_if_cancelled(args, control)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.monotonic()
            if now - self._last_beat >= heartbeat_seconds:
                self._last_beat = now
                self.emit(state, {"event": "heartbeat", "step": state.global_step, "time": time.time()})
            self.stop_if_cancelled(args, control)

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.emit(state, {"event": "checkpoint", "step": state.global_step, "path": str(path)})
            self.stop_if_cancelled(args, control)

        def stop_if_cancelled(self, args: Any, control: Any) -> None:
            """Every process reaches the hooks that call this at the same steps, so they
            agree on the main process's answer and stop together, at the end of this step."""
            self.cancelled = _broadcast_flag(self.cancelled, args)
            if self.cancelled:
                control.should_training_stop = True
                control.should_save = False

    return StreamMetrics()


def checkpoint_manifest_callback(*, kind: str, config: TrainingConfig, dataset_hash: str,
                                 metrics: Any) -> Any:
    """A TrainerCallback writing manifest.json into each checkpoint once the Trainer has
    saved it (``on_save`` runs after the files, the trainer state and the rotation).
    Must come before the metrics callback, so the checkpoint event names a complete folder."""

    class CheckpointManifest(_callback_base()):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_manifest(folder, {
                "kind": kind, "step": state.global_step, "config": config.to_dict(),
                "dataset_sha256": dataset_hash, "metrics": metrics.last_logs,
            })

    return CheckpointManifest()


def _broadcast_flag(flag: bool, args: Any) -> bool:
    """The main process's cancel decision, on every process (all must stop together)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([1 if flag else 0], device=args.device)
    torch.distributed.broadcast(tensor, src=0)
    return bool(tensor.item())


def callbacks_for(kind: str, config: TrainingConfig, run: RunContext, on_metrics: MetricsSink | None,
                  samples_per_step: int, keys: Mapping[str, str]) -> tuple[Any, list[Any]]:
    """(the metrics callback, [manifest callback, metrics callback]) in that order."""
    metrics = metrics_callback(on_metrics, heartbeat_seconds=config.heartbeat_seconds,
                               samples_per_step=samples_per_step, keys=keys)
    manifest = checkpoint_manifest_callback(kind=kind, config=config, dataset_hash=run.dataset_hash,
                                            metrics=metrics)
    return metrics, [manifest, metrics]
