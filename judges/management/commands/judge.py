"""python manage.py judge --project P --judge J: run an AI judge over the items it has
not judged yet, in this process (the same service the generate-queue task calls)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.audit import audit_origin
from core.errors import DomainError
from core.runs import run_claim
from judges.metrics import judge_figures
from judges.models import Judge, JudgeRun
from judges.services import judge_run_create, judge_run_execute


class Command(BaseCommand):
    help = "Have an AI judge rank the project's items it has not judged yet, then print its figures."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--judge", required=True, help="judge name")
        parser.add_argument("--items", type=int, nargs="*", help="only these item ids")

    def handle(self, *args: Any, **options: Any) -> None:
        judge = Judge.objects.filter(project__slug=options["project"], name=options["judge"]).first()
        if judge is None:
            raise CommandError(f"no judge {options['judge']!r} in project {options['project']!r}")
        try:
            with audit_origin("cli"):  # the run's audit event says it came from the CLI
                run = judge_run_create(judge=judge, actor=None, item_ids=options["items"], enqueue=False)
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        claimed = run_claim(JudgeRun, run.pk)
        judge_run_execute(claimed, progress=lambda done, total: self.stdout.write(f"{done}/{total} items"))
        run.refresh_from_db()
        self.stdout.write(f"run {run.pk}: {run.status} {run.progress} {run.error}".rstrip())
        if run.status != "done":
            raise CommandError(run.error or f"run {run.pk} ended {run.status}")
        figures = judge_figures(judge)["all"]
        self.stdout.write(f"agreement with the human consensus: {figures.consensus_agreement}")
        self.stdout.write(f"judge-human: {figures.judge_human}  human-human: {figures.human_human}")
