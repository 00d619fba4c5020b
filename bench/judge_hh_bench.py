"""A registered reward model as an AI judge, on the held-out part of Anthropic HH-RLHF
(harmless-base test split): its agreement with the HH labels, with a bootstrap
interval, printed next to the same reward model's held-out accuracy, and the judge
run's throughput (items/s) on CPU.

    .venv/bin/python bench/judge_hh_bench.py                  # 60 training steps (the recorded run)
    .venv/bin/python bench/judge_hh_bench.py --max-steps 20   # quicker, a weaker reward model

Everything goes through the product, in a fresh Django database (SQLite under the
workdir, its own ARTIFACT_ROOT), with reward_hh_bench's pipeline setup:

1. ``migrate``, a project, the real importer on ../shared/data/hh_rlhf (each valid HH
   transcript: a prompt, two candidates, an ExternalPreference);
2. a pairs snapshot (``include_external``, 20% of prompts held out, seed 7) built by
   its task, and a reward TrainingRun (MiniLM, reward_hh_bench's settings) executed by
   ``training.tasks.train_run`` in this process: its registered ModelVersion is the judge;
3. one ranking item per held-out prompt (its two HH answers; the RM never trained on
   them), a reward-model Judge (``judge_create``) and a JudgeRun over those items executed
   by ``judges.tasks.generate_judgements``; the run's own items/s is the throughput;
4. agreement: 1 when the judge ranks HH's chosen answer first, 1/2 for a tie, 0 when it
   ranks the rejected one first; the mean over items with a 95% percentile bootstrap
   interval (labeling.stats.bootstrap), next to the training run's held-out accuracy
   (the engine's evaluation of the same held-out pairs).

The JSON line with the results is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reward_hh_bench import DATA, PIPELINE_MAX_STEPS, Settings, pipeline_prepare  # noqa: E402


def held_out_preferences(eval_path: Path) -> list[int]:
    """The ExternalPreference ids in the snapshot's held-out split."""
    import pyarrow.parquet as pq

    return [int(p) for p in pq.read_table(eval_path, columns=["preference_id"]).column("preference_id").to_pylist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, default=PIPELINE_MAX_STEPS)
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench" / "judge_hh")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    options = parser.parse_args()
    settings = replace(Settings(), max_steps=options.max_steps, threads=options.threads)
    started = time.monotonic()

    data = pipeline_prepare(options.workdir / "pipeline", settings)
    import torch

    torch.set_num_threads(settings.threads)
    import config.celery  # noqa: F401 - binds the shared tasks to the configured app
    from judges.models import JudgeRanking, JudgeRun
    from judges.services import judge_create, judge_run_create
    from judges.tasks import generate_judgements
    from labeling.models import ExternalPreference, Item, Project
    from labeling.services.items import items_create_bulk
    from labeling.stats.bootstrap import bootstrap_ci
    from training.models import ModelVersion, TrainingRun
    from training.tasks import train_run

    training_started = time.monotonic()
    train_run.apply(args=[data["run"]])
    training_seconds = time.monotonic() - training_started
    run = TrainingRun.objects.get(pk=data["run"])
    if run.status != "done":
        raise SystemExit(f"training run {run.pk} ended {run.status}: {run.error}")
    version = ModelVersion.objects.get(source_run=run)
    project = Project.objects.get(pk=run.project_id)

    held_out = ExternalPreference.objects.filter(pk__in=held_out_preferences(data["eval"])).order_by("id")
    chosen = {}
    sets = []
    for pref in held_out:
        sets.append((pref.prompt_id, [pref.chosen_id, pref.rejected_id]))
        chosen[pref.prompt_id] = (pref.chosen_id, pref.rejected_id)
    items_create_bulk(project=project, candidate_sets=sets)
    item_ids = list(Item.objects.filter(project=project, prompt_id__in=chosen).values_list("id", flat=True))

    judge = judge_create(project=project, actor=None, name="rm-judge", kind="reward_model", reward_version=version)
    judge_run = judge_run_create(judge=judge, actor=None, item_ids=item_ids, enqueue=False)
    judging_started = time.monotonic()
    generate_judgements.apply(args=[judge_run.pk])
    judging_wall = time.monotonic() - judging_started
    judge_run = JudgeRun.objects.get(pk=judge_run.pk)
    if judge_run.status != "done":
        raise SystemExit(f"judge run {judge_run.pk} ended {judge_run.status}: {judge_run.error}")

    scores = []
    for prompt_id, tiers in JudgeRanking.objects.filter(judge=judge, status="ranked").values_list(
            "item__prompt_id", "tiers"):
        good, _ = chosen[prompt_id]
        scores.append(0.5 if len(tiers) == 1 else float(tiers[0] == [good]))
    agreement = sum(scores) / len(scores)
    low, high = bootstrap_ci(scores, n_resamples=2000, seed=0)
    accuracy = run.results["eval"]["accuracy"]
    print(f"{DATA.name}: {len(held_out)} held-out pairs (prompts the reward model did not train on), "
          f"reward model {version.name} v{version.version} after {run.results['global_step']} steps "
          f"({training_seconds:.0f} s)")
    print(f"RM as judge: agreement with HH labels {100 * agreement:.2f}% "
          f"(95% bootstrap CI {100 * low:.2f}-{100 * high:.2f}, n={len(scores)}); "
          f"the same RM's held-out accuracy {100 * accuracy:.2f}% ({run.results['eval']['pairs']} pairs)")
    print(f"judge run {judge_run.pk}: {judge_run.progress['items_per_s']} items/s in the run "
          f"({len(item_ids) / judging_wall:.2f} items/s wall, model load included), "
          f"{settings.threads} torch thread(s)")
    print(json.dumps({
        "bench": "judge_hh", "data": DATA.name, "held_out_pairs": len(held_out), "judged": len(scores),
        "agreement_with_hh": round(agreement, 4), "agreement_ci": [round(low, 4), round(high, 4)],
        "rm_held_out_accuracy": round(accuracy, 4), "rm_eval_pairs": run.results["eval"]["pairs"],
        "rm_steps": run.results["global_step"], "training_seconds": round(training_seconds, 1),
        "judge_items_per_s": judge_run.progress["items_per_s"],
        "judge_items_per_s_wall": round(len(item_ids) / judging_wall, 3),
        "mean_confidence": judge_run.stats.get("mean_confidence"),
        "threads": settings.threads, "seconds": round(time.monotonic() - started, 1),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
