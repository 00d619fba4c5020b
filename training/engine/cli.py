"""One entry point for every kind of training run, in-process or under ``accelerate launch``.

In-process (a Celery task on a one-GPU worker)::

    from training.engine.cli import train
    results = train("reward", {"model": "/models/minilm", "max_length": 256},
                    "pairs-train.parquet", "pairs-validation.parquet", out, on_metrics=sink)

Several GPUs (the task runs this command and reads the files it writes)::

    accelerate launch -m training.engine.cli --kind dpo --config run.json \\
        --train dpo-train.parquet --eval dpo-validation.parquet --output out/ \\
        --metrics-file out/metrics.jsonl --cancel-file out/CANCEL

``--metrics-file`` receives one JSON object per metric event (see training.engine.callbacks),
``--cancel-file`` cancels the run when it appears, and the results are written to
``out/results.json`` and printed as the last line. A cancelled run exits 0 too (launchers
report any other status as a crash): its ``status`` in results.json says "cancelled".

Kinds: "reward" (training.engine.reward), "sft", "dpo", "rl" (GRPO or RLOO). The config
is the kind's Config dataclass or its JSON dict; unknown keys are refused. Importing this
module imports no torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.engine.callbacks import MetricsSink
from training.engine.trainer_config import TrainingConfig

KINDS = {
    "reward": ("training.engine.reward", "RewardTrainingConfig"),
    "sft": ("training.engine.sft", "SFTTrainingConfig"),
    "dpo": ("training.engine.dpo", "DPOTrainingConfig"),
    "rl": ("training.engine.rl", "RLTrainingConfig"),
}


def config_class(kind: str) -> type[TrainingConfig]:
    if kind not in KINDS:
        raise ValueError(f"unknown training kind {kind!r}; expected one of {sorted(KINDS)}")
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def train(kind: str, config: TrainingConfig | Mapping[str, Any], train_path: Path | str,
          eval_path: Path | str | None, output_dir: Path | str, on_metrics: MetricsSink | None = None,
          resume: bool = True) -> dict[str, Any]:
    """Run the kind's ``train``; returns its results dict (also in output_dir/results.json)."""
    cls = config_class(kind)
    if not isinstance(config, cls):
        if not isinstance(config, Mapping):
            raise TypeError(f"a {kind} run takes a {cls.__name__} or its dict, got {type(config).__name__}")
        config = cls.from_dict(config)
    module = importlib.import_module(KINDS[kind][0])
    return module.train(config, train_path, eval_path, output_dir, on_metrics=on_metrics, resume=resume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.engine.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--config", required=True, type=Path, help="JSON file of the kind's config")
    parser.add_argument("--train", required=True, type=Path, help="training rows (.parquet or .jsonl)")
    parser.add_argument("--eval", type=Path, default=None, help="held-out rows (.parquet or .jsonl)")
    parser.add_argument("--output", required=True, type=Path, help="the run's output folder")
    parser.add_argument("--no-resume", action="store_true", help="start over, removing old checkpoints")
    parser.add_argument("--metrics-file", type=Path, default=None, help="append metric events here (JSONL)")
    parser.add_argument("--cancel-file", type=Path, default=None, help="cancel when this file exists")
    args = parser.parse_args(argv)

    config = json.loads(args.config.read_text())
    sink = _file_sink(args.metrics_file, args.cancel_file)
    results = train(args.kind, config, args.train, args.eval, args.output, on_metrics=sink,
                    resume=not args.no_resume)
    if int(os.environ.get("RANK", "0")) == 0:  # one line from a multi-process launch
        print(json.dumps({k: v for k, v in results.items() if k != "history"}, default=str))
    return 0


def _file_sink(metrics_file: Path | None, cancel_file: Path | None) -> MetricsSink:
    def sink(event: dict[str, Any]) -> bool:
        if metrics_file is not None:
            with open(metrics_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(event, default=str) + "\n")
        return not (cancel_file is not None and cancel_file.exists())

    return sink


if __name__ == "__main__":
    sys.exit(main())
