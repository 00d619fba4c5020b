"""python manage.py erase_prompt PROMPT_ID [--yes]

Without --yes, prints what would be deleted, the snapshots that would be emptied and
the model versions that would be flagged, and changes nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.audit import audit_origin
from erasure.services.prompts import prompt_erase, prompt_erasure_preview
from labeling.models import Prompt


class Command(BaseCommand):
    help = "Erase a prompt and everything on it; empty the snapshots that hold it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prompt", type=int, help="the prompt's id")
        parser.add_argument("--yes", action="store_true", help="erase (default: only show)")

    def handle(self, *args: Any, **options: Any) -> None:
        prompt = Prompt.objects.filter(pk=options["prompt"]).select_related("project").first()
        if prompt is None:
            raise CommandError(f"no prompt {options['prompt']}")
        preview = prompt_erasure_preview(prompt=prompt)
        self.stdout.write(f"prompt {prompt.pk} of project {prompt.project.slug}")
        for name, count in preview.counts.items():
            self.stdout.write(f"  {name}: {count}")
        self.stdout.write(f"  snapshots to empty: {preview.snapshots or 'none'}")
        self.stdout.write(f"  model versions to flag: {preview.model_versions or 'none'}")
        if not options["yes"]:
            self.stdout.write("nothing changed: add --yes to erase")
            return
        with audit_origin("cli"):  # the audit event says it came from the CLI
            record = prompt_erase(prompt=prompt, actor=None)
        self.stdout.write(f"erased (erasure {record.pk}); rebuild the snapshots with "
                          f"POST /api/datasets/<id>/rebuild")
