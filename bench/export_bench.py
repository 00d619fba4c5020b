"""Benchmark of the snapshot export path: builders (training.engine.datasets) + writers
(training.engine.writers), from synthetic accepted consensus items to a JSONL file and
to a Parquet file of preference pairs.

    .venv/bin/python bench/export_bench.py                      # 1,000,000 pairs (166,667 items x K=4)
    .venv/bin/python bench/export_bench.py --pairs 60000        # a quick check
    .venv/bin/python bench/export_bench.py --conversational     # message-list rows instead of text

Each format runs in a fresh child process (``--measure FORMAT``, internal), so its peak
RSS (``ru_maxrss``) is the export's own. The items come from a *source*: ``memory``
(the only one so far) makes them on the fly from a seeded 16 MB word corpus, each text a
slice of it at a random offset (unique, word-like, compressible like real prose), at a
cost the child measures on its own (``source_seconds``: iterating the items without
building or writing anything) and reports next to the export time. A ``postgres``
source (accepted rankings of a generated project, read with a server-side cursor) would
be another function returning ``Iterator[SnapshotItem]`` in SOURCES, with the same
measuring code.

Human-readable lines first; the LAST line is one JSON object (see bench/README.md).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.engine.datasets import (  # noqa: E402 - after the sys.path fix above
    CandidateInfo,
    ExportOptions,
    SnapshotItem,
    build_pairs,
)
from training.engine.pair_export import write_pair_files  # noqa: E402
from training.engine.writers import (  # noqa: E402
    JsonlWriter,
    ParquetRowWriter,
    parquet_schema,
    write_jsonl,
    write_parquet,
)

SEED = 20261127
PROMPT_CHARS = 200
ANSWER_CHARS = 1000
CORPUS_CHARS = 16 * 1024 * 1024
FORMATS = ("jsonl", "parquet")
EXPORTERS = ("fast", "rows")
GOAL_SECONDS, GOAL_RSS_MB = 20.0, 500.0


# --------------------------------------------------------------------------- source


@functools.cache
def corpus(seed: int) -> str:
    """About CORPUS_CHARS of sentences over a 2,000-word pseudo-vocabulary, made once per
    process before anything is timed, a sentence at a time (a list of every word would
    cost more memory than the export being measured)."""
    rng = random.Random(seed)
    onsets, vowels = "bcdfghlmnprstvw", ("a", "e", "i", "o", "u", "ai", "ou")
    syllables = [onset + vowel for onset in onsets for vowel in vowels]
    vocab = ["".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 4)))) for _ in range(2000)]
    sentences, size = [], 0
    while size < CORPUS_CHARS:
        sentence = " ".join(rng.choices(vocab, k=rng.randint(6, 18))).capitalize() + ". "
        sentences.append(sentence)
        size += len(sentence)
    return "".join(sentences)[:CORPUS_CHARS]


def memory_items(n_items: int, k: int, seed: int) -> Iterator[SnapshotItem]:
    """Accepted items made on the fly: a 200-char prompt, K answers of ~1,000 chars from
    four models, a strict consensus ranking (so C(K,2) pairs each), agreement, version."""
    text = corpus(seed)
    rng = random.Random(seed + 1)
    uniform = rng.random
    span = len(text) - 2 * ANSWER_CHARS
    models = [f"policy-v{n}" for n in range(4)]
    orders = list(itertools.permutations(range(k))) if k <= 6 else None
    for item_id in range(1, n_items + 1):
        start = int(uniform() * span)
        prompt = [{"role": "user", "content": text[start : start + PROMPT_CHARS]}]
        ids = [item_id * k + j for j in range(k)]
        candidates = {}
        for j, cid in enumerate(ids):
            start, length = int(uniform() * span), int(ANSWER_CHARS * (0.8 + 0.4 * uniform()))
            candidates[cid] = CandidateInfo(text[start : start + length], models[j % 4], 1.0, cid)
        order = orders[int(uniform() * len(orders))] if orders else rng.sample(range(k), k)
        yield SnapshotItem(
            item_id, prompt, candidates, [[ids[j]] for j in order],
            f"prompt-{item_id}", 0.75, (1,),
        )


SOURCES: dict[str, Callable[[int, int, int], Iterator[SnapshotItem]]] = {"memory": memory_items}


# --------------------------------------------------------------------------- child


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(args: argparse.Namespace) -> dict:
    """Runs in the child: time the source alone, then source + builder + writer."""
    options = ExportOptions(conversational=args.conversational, validation_fraction=0.0)
    source = SOURCES[args.source]
    n_items = math.ceil(args.pairs / math.comb(args.k, 2))

    corpus(SEED)
    started = time.perf_counter()
    for _ in source(n_items, args.k, SEED):
        pass
    source_seconds = time.perf_counter() - started
    rss_before = _peak_rss_mb()

    path = Path(args.workdir) / f"pairs-{args.exporter}.{args.measure}"
    schema = parquet_schema("pairs", conversational=options.conversational_for("pairs"))
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.exporter == "fast":  # what a snapshot runs (training.engine.pair_export)
        def open_writer(split: str) -> JsonlWriter | ParquetRowWriter:
            return JsonlWriter(path) if args.measure == "jsonl" else ParquetRowWriter(path, schema)

        stats = write_pair_files(source(n_items, args.k, SEED), options, "pairs", open_writer,
                                 splits=("train",))["train"]
    else:  # the row builders: one dict per pair (the export before issue #19)
        rows = build_pairs(source(n_items, args.k, SEED), options)
        if args.measure == "jsonl":
            stats = write_jsonl(rows, path)
        else:
            stats = write_parquet(rows, path, schema)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if not args.keep:
        path.unlink()
    return {
        "format": args.measure, "exporter": args.exporter, "rows": stats.rows, "bytes": stats.bytes,
        "sha256": stats.sha256,
        "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "source_seconds": round(source_seconds, 2), "rows_per_s": round(stats.rows / seconds),
        "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_before_mb": round(rss_before, 1),
    }


# --------------------------------------------------------------------------- parent


def python_speed_seconds() -> float:
    """Seconds for a fixed pure-Python loop (best of 3): a yardstick for comparing figures
    between machines, since the export is bound by the interpreter's speed. A current
    desktop core does it in about 0.15 s."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        sum(range(10_000_000))
        best = min(best, time.process_time() - started)
    return round(best, 3)


def run_child(args: argparse.Namespace, fmt: str, workdir: Path, exporter: str) -> dict:
    command = [sys.executable, __file__, "--measure", fmt, "--pairs", str(args.pairs), "--k", str(args.k),
               "--source", args.source, "--workdir", str(workdir)]
    command += ["--conversational"] * args.conversational + ["--keep"] * args.keep
    command += ["--exporter", exporter]
    child = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000, help="pairs to export (default 1,000,000)")
    parser.add_argument("--k", type=int, default=4, help="candidates per item, strict ranking (default 4)")
    parser.add_argument("--source", choices=sorted(SOURCES), default="memory")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated: jsonl,parquet")
    parser.add_argument("--conversational", action="store_true", help="message-list rows")
    parser.add_argument("--workdir", help="where the files go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the exported files")
    parser.add_argument("--exporters", default="fast",
                        help="comma-separated: fast (pair_export, what snapshots run), rows (the "
                             "row builders, before #19); with both, each format alternates them "
                             "and the JSON line carries the ratio")
    parser.add_argument("--exporter", choices=EXPORTERS, default="fast", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=FORMATS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args)))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="export-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    yardstick = python_speed_seconds()
    print(f"exporting {args.pairs:,} pairs (K={args.k}, {args.source} source) to {workdir}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"sum(range(10**7)) takes {yardstick:.2f} s CPU here")
    results, exporters = {}, args.exporters.split(",")
    runs = [(fmt, exporter) for fmt in args.formats.split(",") for exporter in exporters]
    for fmt, exporter in runs:
        name = fmt if len(exporters) == 1 else f"{fmt}/{exporter}"
        result = results[name] = run_child(args, fmt, workdir, exporter)
        result["load_average"] = round(os.getloadavg()[0], 1)
        within = result["seconds"] <= GOAL_SECONDS and result["peak_rss_mb"] <= GOAL_RSS_MB
        print(f"{name:15} {result['rows']:>9,} rows  {result['seconds']:6.1f} s "
              f"(CPU {result['cpu_seconds']:.1f} s, source alone {result['source_seconds']:.1f} s)  "
              f"{result['rows_per_s']:>7,} rows/s  {result['bytes'] / 1e6:7.1f} MB  "
              f"peak RSS {result['peak_rss_mb']:5.1f} MB  load {result['load_average']}  "
              f"{'within goal' if within else 'OVER GOAL'}")
    comparison = {}
    if {"fast", "rows"} <= set(exporters):
        for fmt in args.formats.split(","):
            fast, rows = results[f"{fmt}/fast"], results[f"{fmt}/rows"]
            comparison[fmt] = {
                "same_sha256": fast["sha256"] == rows["sha256"],
                "wall_ratio": round(rows["seconds"] / fast["seconds"], 2),
                "cpu_ratio": round(rows["cpu_seconds"] / fast["cpu_seconds"], 2),
            }
            print(f"{fmt}: rows/fast {comparison[fmt]['wall_ratio']}x wall, "
                  f"{comparison[fmt]['cpu_ratio']}x CPU, same bytes: {comparison[fmt]['same_sha256']}")
    if not args.keep and not args.workdir:
        workdir.rmdir()
    keys = ("rows", "seconds", "cpu_seconds", "source_seconds", "rows_per_s", "bytes", "peak_rss_mb",
            "load_average")
    print(json.dumps({
        "bench": "export", "pairs": args.pairs, "k": args.k, "source": args.source,
        "conversational": args.conversational, "prompt_chars": PROMPT_CHARS, "answer_chars": ANSWER_CHARS,
        "results": {fmt: {key: r[key] for key in keys} for fmt, r in results.items()},
        "comparison": comparison, "goal": {"seconds": GOAL_SECONDS, "peak_rss_mb": GOAL_RSS_MB},
        "load_average": round(os.getloadavg()[0], 1), "python_speed_seconds": yardstick,
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
    }))


if __name__ == "__main__":
    main()
