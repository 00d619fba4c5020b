"""Benchmark of the prompt import service (labeling.importing.prompts_import).

Generates a deterministic JSONL file of N prompts x K candidates, recreates a scratch
PostgreSQL database, migrates it, creates a project and times the import of the file,
then a second (idempotent) import of the same file that adds nothing, then a third after
an explicit ANALYZE (for servers running with autovacuum off). The imports run in a fresh
child process so the peak RSS is theirs, not the generator's.

    .venv/bin/python bench/import_bench.py                    # 100,000 prompts x 4
    .venv/bin/python bench/import_bench.py --prompts 5000     # a quick check
    .venv/bin/python bench/import_bench.py --prompts 20000 --profile /tmp/import.prof.txt

Human-readable lines first; the LAST line is one JSON object (see bench/README.md).
The database is dropped and recreated: its name must contain "bench".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ordinal_bench"
SEED = 20261127
PROMPT_CHARS = 200
ANSWER_CHARS = 1000
PROJECT_SLUG = "import-bench"


# --------------------------------------------------------------------------- data


def _vocabulary(rng: random.Random, size: int = 2000) -> list[str]:
    """Pronounceable pseudo-words of 1-4 syllables (deterministic for a given rng)."""
    onsets = ["", *"b c d f g h l m n p r s t v w br ch cl gr pl qu sh st th tr".split()]  # noqa: SIM905
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "ck"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        parts = (rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        words.add("".join(parts))
    return sorted(words)


def _text(rng: random.Random, vocab: list[str], target: int) -> str:
    """Sentences of random words, about `target` characters (+-20%)."""
    want = rng.randint(target * 4 // 5, target * 6 // 5)
    # Mean word length in the vocabulary is ~5.5 chars plus a space: draw enough words.
    words = rng.choices(vocab, k=want // 5 + 8)
    out: list[str] = []
    length = 0
    sentence_left = rng.randint(6, 18)
    capital = True
    for word in words:
        if capital:
            word = word.capitalize()
            capital = False
        sentence_left -= 1
        if sentence_left == 0:
            word += "."
            sentence_left = rng.randint(6, 18)
            capital = True
        out.append(word)
        length += len(word) + 1
        if length >= want:
            break
    text = " ".join(out)
    return text if text.endswith(".") else text + "."


def generate(path: Path, prompts: int, candidates: int, seed: int = SEED) -> dict[str, float]:
    """Write the JSONL file; every prompt is distinct (it carries its row number)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    prompt_chars = answer_chars = 0
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(prompts):
            prompt = f"Task {i + 1}: " + _text(rng, vocab, PROMPT_CHARS - 12)
            answers = [_text(rng, vocab, ANSWER_CHARS) for _ in range(candidates)]
            prompt_chars += len(prompt)
            answer_chars += sum(map(len, answers))
            row = {
                "prompt": prompt,
                "candidates": [{"text": text, "model": f"m{j}"} for j, text in enumerate(answers)],
            }
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")
    return {
        "mean_prompt_chars": prompt_chars / max(prompts, 1),
        "mean_answer_chars": answer_chars / max(prompts * candidates, 1),
    }


# --------------------------------------------------------------------------- database


def _db_name(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        sys.exit(f"--database-url must be a postgres:// URL, got {url!r}")
    name = unquote(parts.path.lstrip("/"))
    if "bench" not in name:
        sys.exit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    return name


def _admin_conninfo(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    info = {
        "dbname": "postgres",
        "host": parts.hostname or "",
        "user": unquote(parts.username or ""),
    }
    if parts.port:
        info["port"] = str(parts.port)
    if parts.password:
        info["password"] = unquote(parts.password)
    return {k: v for k, v in info.items() if v}


def recreate_database(url: str) -> str:
    """Drop and create the bench database; returns the server version."""
    import psycopg
    from psycopg import sql

    name = _db_name(url)
    with psycopg.connect(**_admin_conninfo(url), autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return version


def _django_env(url: str, debug: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = url
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if debug:
        env["DEBUG"] = "1"
    else:
        # Production-like: DEBUG off, so Django does not keep every SQL string in
        # connection.queries (that costs time and memory on bulk inserts).
        env["DEBUG"] = "0"
        env["SECRET_KEY"] = secrets.token_urlsafe(48)
    return env


# --------------------------------------------------------------------------- child process


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _backend_cpu(pid: int) -> float | None:
    """utime + stime of a local PostgreSQL backend from /proc, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(path: Path, candidates: int, profile_to: str | None) -> None:
    """Child process: migrate, create the project, time the import, a re-import, then a
    re-import after ANALYZE. Prints one JSON line."""
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from labeling.importing import prompts_import
    from labeling.models import Candidate, Item, ItemCandidate, Prompt
    from labeling.services.projects import project_create

    call_command("migrate", verbosity=0, interactive=False)
    project = project_create(name="Import bench", slug=PROJECT_SLUG, k=candidates)
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]  # the import reuses this connection
    rss_before = _peak_rss_mb()

    cpu: dict[str, dict[str, float | None]] = {}

    def timed_import(name: str) -> tuple[float, object]:
        # CPU seconds of this process and of its PostgreSQL backend (when the server is
        # local and /proc readable) are less sensitive than wall time to other jobs on
        # a shared machine.
        own, db = _own_cpu(), _backend_cpu(backend_pid)
        start = time.perf_counter()
        report = prompts_import(project=project, path=path, skip_invalid=False, progress=None)
        wall = time.perf_counter() - start
        db_after = _backend_cpu(backend_pid)
        cpu[name] = {
            "python_cpu_s": round(_own_cpu() - own, 2),
            "postgres_cpu_s": None if db is None or db_after is None else round(db_after - db, 2),
        }
        return wall, report

    profiler = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    seconds, report = timed_import("import")
    if profiler is not None:
        profiler.disable()
        import io
        import pstats

        buffer = io.StringIO()
        stats = pstats.Stats(profiler, stream=buffer)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
        Path(profile_to).write_text(buffer.getvalue())
        profiler.dump_stats(profile_to + ".pstats")  # for snakeviz / pstats browsing
    rss_import = _peak_rss_mb()

    # The re-import as it comes: with autovacuum off (as on the reference machine) the
    # planner still has no statistics for the tables the first import filled.
    reimport_seconds, second = timed_import("reimport")
    # Then with fresh statistics, as autovacuum would have left them in production.
    with connection.cursor() as cursor:
        for table in (
            "labeling_prompt",
            "labeling_candidate",
            "labeling_item",
            "labeling_itemcandidate",
            "labeling_externalpreference",
        ):
            cursor.execute(f"ANALYZE {table}")  # noqa: S608 - fixed table names
    analyzed_seconds, third = timed_import("reimport_analyzed")

    counts = {
        "prompts": Prompt.objects.filter(project=project).count(),
        "candidates": Candidate.objects.filter(prompt__project=project).count(),
        "items": Item.objects.filter(project=project).count(),
        "item_candidates": ItemCandidate.objects.filter(item__project=project).count(),
    }

    def _counts(rep: object) -> dict[str, object]:
        data = rep.as_dict()  # type: ignore[attr-defined]
        if not data["errors"]:
            data.pop("errors")
        return data

    print(
        json.dumps(
            {
                "seconds": seconds,
                "reimport_seconds": reimport_seconds,
                "reimport_analyzed_seconds": analyzed_seconds,
                "rss_before_import_mb": rss_before,
                "peak_rss_mb": rss_import,
                "peak_rss_after_reimport_mb": _peak_rss_mb(),
                "report": _counts(report),
                "reimport_report": _counts(second),
                "reimport_analyzed_report": _counts(third),
                "db_counts": counts,
                "chunk_rows": settings.IMPORT_CHUNK_ROWS,
                "autovacuum": autovacuum,
                "cpu": cpu,
            }
        )
    )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument(
        "--workdir",
        help="where to write the file (default: a temp dir); a file kept there by an "
        "earlier --keep run with the same sizes is reused",
    )
    parser.add_argument(
        "--debug", action="store_true", help="run Django with DEBUG=1 (logs every query; slower)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the first import, write the top entries to FILE and the raw "
        "stats to FILE.pstats (the timing then includes the profiler's overhead)",
    )
    parser.add_argument("--measure", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if not 2 <= args.candidates <= 16:
        sys.exit("--candidates must be between 2 and 16 (a project's K range)")
    if args.measure:
        measure(Path(args.measure), args.candidates, args.profile)
        return

    _db_name(args.database_url)  # refuse early
    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="ordinal-import-bench-")
        workdir = Path(tmp)
    path = workdir / f"prompts-{args.prompts}x{args.candidates}-seed{SEED}.jsonl"

    try:
        if path.exists():
            print(f"reusing {path} ({path.stat().st_size / 2**20:.1f} MiB)", flush=True)
        else:
            start = time.perf_counter()
            partial = path.with_suffix(".partial")
            shape = generate(partial, args.prompts, args.candidates)
            partial.rename(path)  # a file under the final name is always complete
            print(
                f"generated {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.prompts} "
                f"prompts x {args.candidates} candidates, mean prompt "
                f"{shape['mean_prompt_chars']:.0f} chars, mean answer "
                f"{shape['mean_answer_chars']:.0f} chars) in "
                f"{time.perf_counter() - start:.1f} s (not measured)",
                flush=True,
            )

        server_version = recreate_database(args.database_url)
        print(
            f"recreated database {_db_name(args.database_url)} (PostgreSQL {server_version})",
            flush=True,
        )

        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--measure",
            str(path),
            "--candidates",
            str(args.candidates),
        ]
        if args.profile:
            command += ["--profile", str(Path(args.profile).resolve())]
        child = subprocess.run(
            command,
            env=_django_env(args.database_url, args.debug),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stdout + child.stderr)
            sys.exit(f"the measuring process failed (exit {child.returncode})")
        sys.stderr.write(child.stderr)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            path.with_suffix(".partial").unlink(missing_ok=True)
            if tmp:
                os.rmdir(tmp)
    if args.keep:
        print(f"kept {path}")

    n, k = args.prompts, args.candidates
    seconds = result["seconds"]
    report = result["report"]
    print(
        f"import:    {seconds:.2f} s, {n / seconds:,.0f} prompts/s, "
        f"{n * k / seconds:,.0f} candidates/s (Django DEBUG={int(args.debug)}, "
        f"chunk {result['chunk_rows']} rows)"
    )
    import_cpu = result["cpu"]["import"]
    print(
        f"cpu:       {import_cpu['python_cpu_s']} s in Python, {import_cpu['postgres_cpu_s']} s "
        f"in the PostgreSQL backend during the import (of {seconds:.2f} s wall)"
    )
    print(
        f"peak RSS:  {result['peak_rss_mb']:.0f} MB after the import "
        f"({result['rss_before_import_mb']:.0f} MB before it, after migrate; "
        f"{result['peak_rss_after_reimport_mb']:.0f} MB after the re-imports)"
    )
    for label, key in (("re-import", "reimport"), ("+ANALYZE", "reimport_analyzed")):
        again = result[f"{key}_report"]
        print(
            f"{label + ':':<10} {result[f'{key}_seconds']:.2f} s (added "
            f"{again['prompts_added']} prompts, {again['candidates_added']} candidates, "
            f"{again['items_added']} items)"
        )
    print("report:    " + ", ".join(f"{key}={value}" for key, value in report.items()))
    print("database:  " + ", ".join(f"{key}={value}" for key, value in result["db_counts"].items()))
    print(
        f"server:    autovacuum={result['autovacuum']} (off: no table is analyzed during "
        f"the run; the '+ANALYZE' re-import runs after an explicit ANALYZE)"
    )
    if args.profile:
        print(f"profile:   {args.profile} (timing above includes cProfile overhead)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        json.dumps(
            {
                "bench": "import",
                "prompts": n,
                "candidates": n * k,
                "candidates_per_prompt": k,
                "seconds": round(seconds, 3),
                "prompts_per_s": round(n / seconds, 1),
                "candidates_per_s": round(n * k / seconds, 1),
                "peak_rss_mb": round(result["peak_rss_mb"], 1),
                "reimport_seconds": round(result["reimport_seconds"], 3),
                "reimport_analyzed_seconds": round(result["reimport_analyzed_seconds"], 3),
                "report": report,
                "debug": args.debug,
                "profiled": bool(args.profile),
                "autovacuum": result["autovacuum"],
                "cpu": result["cpu"],
                "load_avg_1m_after": round(os.getloadavg()[0], 2),
                "machine": f"{cores} cores, Python {platform.python_version()}, PostgreSQL {server_version}",
            }
        )
    )


if __name__ == "__main__":
    main()
