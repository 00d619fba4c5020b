"""python manage.py generate --project SLUG --backend builtin-tiny --k 4 [--temperature 1.0]

Samples K candidates for every prompt that has fewer than K model-sampled candidates
(or the --prompts given), in this process with a progress bar; `--enqueue` hands the
run to a worker on the `generate` queue instead. Running it again adds nothing.
--policy ID (or "current") samples from a registered policy of the project instead, the
way the API's `policy` does. The openai backend samples from a configured endpoint named with --endpoint
(GENERATION_ENDPOINTS), never from a URL; --model takes what the API takes.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.audit import audit_origin
from core.errors import DomainError
from core.runs import run_claim
from labeling.models import Project
from training.generation import generation_run_create, generation_run_execute
from training.models import GenerationRun, ModelVersion


class Command(BaseCommand):
    help = "Sample K answers per prompt from a model (builtin-tiny, transformers, vllm, openai)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--backend", default="builtin-tiny",
                            choices=GenerationRun.Backend.values)
        parser.add_argument("--model", default="",
                            help="hub id, a folder under MODEL_DIRS, or the endpoint's model name")
        parser.add_argument("--endpoint", default="",
                            help="openai: a GENERATION_ENDPOINTS name (default: the only one)")
        parser.add_argument("--policy", default="",
                            help="a model version id of this project's policies, or 'current' "
                                 "for the promoted one (replaces --backend and --model)")
        parser.add_argument("--k", type=int, default=4)
        parser.add_argument("--temperature", type=float, default=1.0)
        parser.add_argument("--top-p", type=float, default=1.0)
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--system-prompt", default=None)
        parser.add_argument("--prompts", default="", help="comma-separated prompt ids")
        parser.add_argument("--enqueue", action="store_true",
                            help="run on a worker (generate queue) instead of here")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        try:
            prompt_ids = [int(p) for p in options["prompts"].split(",") if p.strip()] or None
        except ValueError:
            raise CommandError("--prompts takes comma-separated prompt ids") from None
        policy = None
        if options["policy"]:
            policies = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY)
            if options["policy"] == "current":
                policy = policies.filter(is_current=True).first()
            elif options["policy"].isdigit():
                policy = policies.filter(pk=int(options["policy"])).first()
            if policy is None:
                raise CommandError(f"no policy {options['policy']!r} in project {project.slug}: "
                                   "give a model version id of its policies, or 'current'")
        try:
            with audit_origin("cli"):  # the run's audit event says it came from the CLI
                run = generation_run_create(
                    project=project, backend="" if policy else options["backend"],
                    model="" if policy else options["model"], policy=policy,
                    params={"k": options["k"], "temperature": options["temperature"],
                            "top_p": options["top_p"], "max_new_tokens": options["max_new_tokens"],
                            "seed": options["seed"], "system_prompt": options["system_prompt"]},
                    prompt_ids=prompt_ids, enqueue=options["enqueue"], endpoint=options["endpoint"],
                )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        total = len(run.prompt_ids)
        if options["enqueue"] or total == 0:
            self.stdout.write(f"generation run {run.pk}: {total} prompts"
                              + (" queued on 'generate'" if options["enqueue"] and total else
                                 " need candidates; nothing to do"))
            if not options["enqueue"]:
                GenerationRun.objects.filter(pk=run.pk).update(status="done")
            return
        claimed = run_claim(GenerationRun, run.pk)
        bar = tqdm(total=total, unit="prompt", desc=f"run {run.pk}", file=self.stderr)
        generation_run_execute(claimed, progress=lambda done, _t: bar.update(done - bar.n))
        bar.close()
        run.refresh_from_db()
        self.stdout.write(
            f"generation run {run.pk}: {run.status}; {run.progress.get('prompts_done')} of "
            f"{total} prompts, {run.stats.get('candidates', 0)} candidates, "
            f"{run.progress.get('tokens_per_s')} tokens/s, duplicate rate "
            f"{run.stats.get('duplicate_rate')}, distinct-2 {run.stats.get('distinct_2')}"
            + (f", {len(run.errors)} prompts skipped" if run.errors else "")
            + (f"\nerror: {run.error}" if run.error else "")
        )
        if run.status == "failed":
            raise CommandError(run.error)
