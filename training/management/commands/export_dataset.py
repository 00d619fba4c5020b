"""python manage.py export_dataset --project SLUG --kind pairs --format parquet

Builds a dataset snapshot in this process and prints where its files and manifest are.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from core.errors import DomainError
from core.runs import run_claim
from labeling.models import Project
from training.models import DatasetSnapshot
from training.snapshots import FORMATS, KINDS, snapshot_build, snapshot_create


class Command(BaseCommand):
    help = "Freeze accepted labels into a versioned dataset (pairs, dpo, sft, kto, raw, ratings)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True)
        parser.add_argument("--kind", action="append", choices=KINDS, required=True)
        parser.add_argument("--format", action="append", choices=FORMATS)
        parser.add_argument("--include-external", action="store_true")
        parser.add_argument("--include-ai", action="store_true",
                            help="AI judges' rankings too (raw, pairs, dpo), rows marked source ai + judge id")
        parser.add_argument("--keep-flagged", action="store_true",
                            help="keep items flagged unsafe or needs-expert")
        parser.add_argument("--min-agreement", type=float)
        parser.add_argument("--axis", help="a key of the project's axes (default: the primary axis)")
        # Neither flag: messages for sft/dpo/kto (policy training needs them), text for pairs.
        parser.add_argument("--conversational", action="store_true", default=None,
                            help="message lists in every file")
        parser.add_argument("--text", dest="conversational", action="store_false",
                            help="plain-format text in every file (policy runs refuse it)")
        parser.add_argument("--validation-fraction", type=float, default=0.0)
        parser.add_argument("--split-seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project {options['project']!r}")
        filters: dict[str, Any] = {"include_external": options["include_external"],
                                   "exclude_flagged": not options["keep_flagged"],
                                   "include_ai": options["include_ai"]}
        if options["min_agreement"] is not None:
            filters["min_agreement"] = options["min_agreement"]
        if options["axis"] is not None:
            filters["axis"] = options["axis"]
        try:
            snapshot = snapshot_create(
                project=project, kinds=options["kind"], formats=options["format"] or ["parquet"],
                filters=filters, enqueue=False,
                options={"conversational": options["conversational"],
                         "validation_fraction": options["validation_fraction"],
                         "split_seed": options["split_seed"]},
            )
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        claimed = run_claim(DatasetSnapshot, snapshot.pk)
        bar = tqdm(total=len(snapshot.kinds) * len(snapshot.formats), unit="file",
                   file=self.stderr)
        snapshot_build(claimed, progress=lambda done, _t: bar.update(done - bar.n))
        bar.close()
        snapshot.refresh_from_db()
        self.stdout.write(f"snapshot {snapshot.pk}: {snapshot.status} at {snapshot.path}")
        for name, info in snapshot.files.items():
            self.stdout.write(f"  {name}: {info['rows']} rows, sha256 {info['sha256'][:16]}...")
        if not any(snapshot.counts.values()):
            self.stdout.write("  (empty: see empty_reason in manifest.json)")
