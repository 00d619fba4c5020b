"""python manage.py train --project SLUG --kind reward --snapshot ID [--base-model MODEL]

Trains in this process with a progress bar (or --enqueue for the `train` queue) and
registers the result as a model version; --promote makes it current. A run that may have
learned nothing prints its warnings, and --promote then refuses unless --confirm is given.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.audit import audit_origin
from core.errors import DomainError
from core.runs import run_claim
from labeling.models import Project
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.registry import PromotionNeedsConfirmation, model_version_promote
from training.runs import training_run_create, training_run_execute


class Command(BaseCommand):
    help = "Train a reward model, SFT, DPO or online RL (GRPO/RLOO) run on a dataset snapshot."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--kind", required=True, choices=TrainingRun.Kind.values)
        parser.add_argument("--snapshot", type=int, required=True)
        parser.add_argument("--base-model", default="",
                            help="hub id, a folder under MODEL_DIRS, builtin-tiny or minilm "
                                 "(default: the kind's built-in model)")
        parser.add_argument("--base-version", type=int, help="start from a registered model")
        parser.add_argument("--config", default="{}", help="JSON of the kind's config fields")
        parser.add_argument("--max-steps", type=int)
        parser.add_argument("--devices", type=int, default=1)
        parser.add_argument("--enqueue", action="store_true")
        parser.add_argument("--promote", action="store_true")
        parser.add_argument("--confirm", "--force", action="store_true",
                            help="with --promote: promote even if the run may have learned nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        try:
            config = json.loads(options["config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc}") from None
        if options["max_steps"]:
            config["max_steps"] = options["max_steps"]
        base_version = (ModelVersion.objects.filter(project=project, pk=options["base_version"])
                        .first() if options["base_version"] else None)
        try:
            with audit_origin("cli"):  # the run's audit event says it came from the CLI
                run = training_run_create(
                    project=project, kind=options["kind"],
                    snapshot=DatasetSnapshot.objects.filter(pk=options["snapshot"]).first(),
                    config=config, base_model=options["base_model"], base_version=base_version,
                    devices=options["devices"], enqueue=options["enqueue"],
                )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        if options["enqueue"]:
            self.stdout.write(f"training run {run.pk} queued on 'train'")
            return
        claimed = run_claim(TrainingRun, run.pk)
        bar = tqdm(unit="step", desc=f"{run.kind} run {run.pk}", file=self.stderr)

        def progress(step: int, max_steps: int | None) -> None:
            bar.total = max_steps or bar.total
            bar.update(max(0, step - bar.n))

        training_run_execute(claimed, progress=progress)
        bar.close()
        run.refresh_from_db()
        self.stdout.write(f"training run {run.pk}: {run.status} {json.dumps(run.results)[:500]}")
        if run.status != "done":
            raise CommandError(run.error or run.status)
        version = ModelVersion.objects.get(source_run=run)
        self.stdout.write(f"registered {version} ({version.kind}) at {version.adapter_path}")
        for warning in version.warnings:
            self.stdout.write(self.style.WARNING(f"WARNING: {version} may have learned nothing: {warning}"))
        if options["promote"]:
            try:
                model_version_promote(version=version, actor=None, confirm=options["confirm"])
            except PromotionNeedsConfirmation as exc:
                raise CommandError(
                    f"not promoted: {exc} It stays registered: promote it from the console's Runs page or "
                    f"POST /api/models/{version.pk}/promote with {{\"confirm\": true}}; "
                    "--promote --confirm promotes a flagged run's model at once.") from None
            self.stdout.write(f"{version} is now the current {version.kind} model")
