"""Benchmark of a pairs export as the snapshot task runs it: accepted items read from
PostgreSQL by `training.snapshots.snapshot_items`, then `write_pair_files` to JSONL and to
Parquet. bench/export_bench.py times the exporter alone on an in-memory source; this
times the source the task really uses, alone and with the export.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ordinal_bench \\
        .venv/bin/python bench/snapshot_source_bench.py --items 10000

The database must be migrated. The first run seeds a project (slug PROJECT_SLUG) of
``--items`` accepted items, K=4 answers of ~1,000 characters (the export bench's corpus),
three live rankings each, in chunks; a later run with the same count reuses it, another
count replaces it. Each format is measured in a fresh child process (peak RSS is the
export's own). SNAPSHOT_READ_AHEAD=0 in the environment measures the source and the
export taking turns (the default reads ahead on a thread). Human-readable lines first;
the LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.import_bench import _backend_cpu, _own_cpu  # noqa: E402 - the same CPU clocks

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

PROJECT_SLUG = "snapshot-source-bench"
K = 4
SEED_CHUNK = 5000  # items per seeding transaction: bounds the seeder's memory


def seed(n_items: int) -> None:
    """A project of n_items accepted items (strict consensus), K answers, 3 rankings each."""
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone

    from bench.export_bench import SEED, corpus
    from labeling.models import Assignment, Candidate, Item, ItemCandidate, Project, Prompt, Ranking
    from training.engine.datasets import prompt_hash

    project = Project.objects.filter(slug=PROJECT_SLUG).first()
    if project is not None and Item.objects.filter(project=project).count() == n_items:
        return
    if project is not None:  # another count: the old seed goes, children first (PROTECTed keys)
        for model in (Ranking, Assignment, ItemCandidate):
            model.objects.filter(item__project=project).delete()
        Item.objects.filter(project=project).delete()
        Candidate.objects.filter(prompt__project=project).delete()
        Prompt.objects.filter(project=project).delete()
        project.delete()
    text, rng = corpus(SEED), random.Random(SEED)
    span = len(text) - 2000
    project = Project.objects.create(name="Snapshot source bench", slug=PROJECT_SLUG, overlap=3)
    users = [User.objects.get_or_create(username=f"snapshot-bench-{n}")[0] for n in range(3)]
    for first in range(0, n_items, SEED_CHUNK):
        with transaction.atomic():
            prompts = []
            for n in range(first, min(first + SEED_CHUNK, n_items)):
                start = int(rng.random() * span)
                messages = [{"role": "user", "content": f"{n}. {text[start:start + 200]}"}]
                prompts.append(Prompt(project=project, messages=messages, content_hash=prompt_hash(messages)))
            Prompt.objects.bulk_create(prompts, batch_size=2000)
            answers = []
            for prompt in prompts:
                for j in range(K):
                    start, length = int(rng.random() * span), int(1000 * (0.8 + 0.4 * rng.random()))
                    answers.append(Candidate(prompt=prompt, text=text[start:start + length], origin="model",
                                             model_name=f"policy-v{j}", sampling_params={"temperature": 1.0},
                                             seed=j, dedupe_key=f"bench:{prompt.pk}:{j}"))
            Candidate.objects.bulk_create(answers, batch_size=2000)
            items = []
            for n, prompt in enumerate(prompts):
                ids = [c.pk for c in answers[n * K:(n + 1) * K]]
                rng.shuffle(ids)
                items.append(Item(project=project, prompt=prompt, status="accepted", required_rankings=3,
                                  rankings_count=3, agreement=0.75, consensus=[[c] for c in ids],
                                  decided_at=timezone.now()))
            Item.objects.bulk_create(items, batch_size=2000)
            ItemCandidate.objects.bulk_create(
                [ItemCandidate(item=item, candidate=answers[n * K + j], position=j)
                 for n, item in enumerate(items) for j in range(K)], batch_size=5000)
            now = timezone.now()
            leases = [Assignment(item=item, annotator=user, status="submitted", leased_at=now,
                                 expires_at=now + timedelta(hours=1), finished_at=now)
                      for item in items for user in users]
            Assignment.objects.bulk_create(leases, batch_size=5000)
            Ranking.objects.bulk_create(
                [Ranking(assignment=a, item=a.item, annotator=a.annotator, tiers=a.item.consensus,
                         strength=None, idempotency_key=f"bench-{a.pk}") for a in leases], batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")




def _note_thread_backends(cpu: list[float]) -> None:
    """With SNAPSHOT_READ_AHEAD the items are read on a thread, on a connection of its own
    that it closes as it ends (the backend exits with its figures): note that backend's CPU
    just before, so the PostgreSQL CPU counts both backends."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    close = DatabaseWrapper.close

    def noting_close(self: DatabaseWrapper) -> None:
        if self.connection is not None and threading.current_thread() is not threading.main_thread():
            used = _backend_cpu(self.connection.info.backend_pid)
            if used is not None:
                cpu.append(used)
        close(self)

    DatabaseWrapper.close = noting_close


def measure(fmt: str, workdir: Path) -> dict:
    """Child: the source alone, then source + export of one format."""
    from django.conf import settings
    from django.db import connection

    from labeling.models import Project
    from training.engine.datasets import ExportOptions
    from training.engine.pair_export import write_pair_files
    from training.engine.writers import JsonlWriter, ParquetRowWriter, parquet_schema
    from training.models import DatasetSnapshot
    from training.snapshots import snapshot_items

    snapshot = DatasetSnapshot(project=Project.objects.get(slug=PROJECT_SLUG), kinds=["pairs"],
                               formats=[fmt], filters={}, options={})
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    threads: list[float] = []
    _note_thread_backends(threads)
    figures: dict = {"format": fmt, "read_ahead": settings.SNAPSHOT_READ_AHEAD}
    for name in ("source", "export"):
        threads.clear()
        server, cpu, started = _backend_cpu(backend), _own_cpu(), time.perf_counter()
        if name == "source":
            figures["items"] = sum(1 for _ in snapshot_items(snapshot))
        else:
            path = workdir / f"pairs.{fmt}"
            schema = parquet_schema("pairs", conversational=False)
            stats = write_pair_files(
                snapshot_items(snapshot), ExportOptions(conversational=False), "pairs",
                lambda split, path=path, schema=schema: (JsonlWriter(path) if fmt == "jsonl"
                                                         else ParquetRowWriter(path, schema)),
                splits=("train",))["train"]
            path.unlink()
            figures.update(rows=stats.rows, bytes=stats.bytes, sha256=stats.sha256)
        after = _backend_cpu(backend)
        after = None if after is None else after + sum(threads)
        figures[name] = {"seconds": round(time.perf_counter() - started, 2), "python_cpu_s": round(_own_cpu() - cpu, 2),
                         "postgres_cpu_s": None if server is None or after is None else round(after - server, 2)}
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=166_667, help="accepted items, K=4 (default: 1,000,002 pairs)")
    parser.add_argument("--formats", default="jsonl,parquet")
    parser.add_argument("--workdir", help="where the files go (default: a temporary folder)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import django

    django.setup()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="snapshot-source-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.measure:
        print(json.dumps(measure(args.measure, workdir)))
        return
    started = time.perf_counter()
    seed(args.items)
    print(f"{args.items:,} items ready in {time.perf_counter() - started:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    results = {}
    for fmt in args.formats.split(","):
        child = subprocess.run([sys.executable, __file__, "--measure", fmt, "--workdir", str(workdir)],
                               check=True, capture_output=True, text=True, cwd=REPO_ROOT)
        result = results[fmt] = json.loads(child.stdout.strip().splitlines()[-1])
        result["load_average"] = round(os.getloadavg()[0], 1)
        ahead = "on " if result["read_ahead"] else "off"
        print(f"{fmt:8} read ahead {ahead} {result['rows']:>9,} pairs  "
              f"source alone {result['source']['seconds']:.1f} s "
              f"(Python {result['source']['python_cpu_s']:.1f} s, PostgreSQL {result['source']['postgres_cpu_s']} s)  "
              f"source + export {result['export']['seconds']:.1f} s (Python {result['export']['python_cpu_s']:.1f} s)  "
              f"peak RSS {result['peak_rss_mb']} MB  load {result['load_average']}")
    if not args.workdir:
        workdir.rmdir()
    print(json.dumps({"bench": "snapshot_source", "items": args.items, "k": K, "results": results,
                      "load_average": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
