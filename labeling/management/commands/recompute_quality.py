"""python manage.py recompute_quality [--project SLUG]: repair every derived figure."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from labeling.models import Item, Project
from labeling.services.quality import item_decide, quality_refresh


class Command(BaseCommand):
    help = "Recompute item decisions (agreement, consensus) and annotator quality."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", help="project slug (default: all projects)")
        parser.add_argument("--items", action="store_true",
                            help="also re-decide every complete/accepted/disputed item")

    def handle(self, *args: Any, **options: Any) -> None:
        projects = Project.objects.all()
        if options["project"]:
            projects = projects.filter(slug=options["project"])
            if not projects.exists():
                raise CommandError(f"no project {options['project']!r}")
        for project in projects:
            if options["items"]:
                # Reviewer decisions (decided_by) are kept; only automatic ones are redone.
                items = Item.objects.filter(
                    project=project, decided_by__isnull=True, is_gold=False,
                    status__in=[Item.Status.COMPLETE, Item.Status.ACCEPTED, Item.Status.DISPUTED],
                )
                for item_id in tqdm(list(items.values_list("id", flat=True)), desc=project.slug,
                                    file=self.stderr):
                    item_decide(item_id=item_id)
            rows = quality_refresh(project=project)
            self.stdout.write(f"{project.slug}: {rows} annotator-period rows")
