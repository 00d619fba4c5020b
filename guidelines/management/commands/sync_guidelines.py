"""python manage.py sync_guidelines: load guidelines/content/<slug>/vNNN.md."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from guidelines.services import guidelines_sync


class Command(BaseCommand):
    help = "Load the shipped guideline files; new files become new published versions."

    def handle(self, *args: Any, **options: Any) -> None:
        report = guidelines_sync()
        for label in report.created:
            self.stdout.write(f"published {label}")
        self.stdout.write(f"{len(report.created)} new, {len(report.unchanged)} unchanged")
        if report.errors:
            for error in report.errors:
                self.stderr.write(error)
            raise CommandError(f"{len(report.errors)} guideline files could not be synced")
