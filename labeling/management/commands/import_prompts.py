"""python manage.py import_prompts FILE --project SLUG [--skip-invalid] [--axis KEY]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from labeling.importing import ImportFileError, ImportReport, import_axis_problem, prompts_import
from labeling.services.projects import project_get_or_create_default


class Command(BaseCommand):
    help = (
        "Import prompts (and candidates or preference pairs) from JSONL, CSV or Parquet, "
        "optionally gzipped. The project is created with defaults if it does not exist."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True, help="project slug")
        parser.add_argument("--skip-invalid", action="store_true",
                            help="import the valid rows and report the invalid ones")
        parser.add_argument("--source", default="", help="label stored on each prompt")
        parser.add_argument("--axis", default="",
                            help="the project axis the file's preference pairs judge, e.g. harmless "
                                 "for HH-RLHF's harmless file (default: the primary axis)")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        project, created = project_get_or_create_default(slug=options["project"])
        if created:
            self.stdout.write(f"created project {project.slug!r} with default settings")
        problem = import_axis_problem(project, options["axis"])
        if problem:
            raise CommandError(problem)
        bar = tqdm(total=2 * path.stat().st_size, unit="B", unit_scale=True,
                   desc="validate+import", disable=options["no_progress"], file=self.stderr)

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            report = prompts_import(project=project, path=path,
                                    skip_invalid=options["skip_invalid"],
                                    source=options["source"], progress=progress, axis=options["axis"])
        except ImportFileError as exc:
            bar.close()
            if exc.report is not None:  # the rows found invalid, and what skip-invalid wrote
                self._print(exc.report)
            raise CommandError(f"{path}: {exc}") from None
        finally:
            bar.close()
        self._print(report)
        if report.rejected:
            raise CommandError(
                f"{path}: rejected, {report.invalid} invalid rows; nothing imported "
                "(fix them, or pass --skip-invalid to import the valid rows)"
            )

    def _print(self, report: ImportReport) -> None:
        for error in report.errors:
            self.stderr.write(f"line {error['line']}: {error['reason']}")
        if report.invalid > len(report.errors):
            self.stderr.write(f"... and {report.invalid - len(report.errors)} more invalid rows")
        if report.rejected:
            return
        self.stdout.write(
            f"rows: {report.rows} ({report.invalid} invalid, skipped)\n"
            f"prompts: {report.prompts_added} added, {report.prompts_skipped} already there\n"
            f"candidates: {report.candidates_added} added ({report.duplicate_candidates} "
            f"flagged duplicate), {report.candidates_skipped} already there\n"
            f"external preferences: {report.preferences_added} added, "
            f"{report.preferences_skipped} already there\n"
            f"items: {report.items_added} added"
        )
