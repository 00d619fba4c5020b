"""Benchmark of the annotator workspace hot path over HTTP: next item, submit ranking.

Seeds a scratch PostgreSQL database with N items x K candidates (COPY), a project with
overlap 3, and 50 annotators with API tokens; runs the app under gunicorn on 127.0.0.1
and drives it from this process (asyncio + httpx) with token auth:

  (a) open loop: a fixed offered load (100 annotator loops/s by default) scheduled by
      the clock, each of the 50 annotators starting a loop (GET next, then POST the
      ranking) every 50/rate seconds whatever the responses did; p50/p95/p99 of both;
  (b) saturation: the 50 annotators in a closed loop, next -> submit back to back;
      completed loops per second;

then checks the overlap invariants in SQL and captures EXPLAIN (ANALYZE, BUFFERS) of the
next-item claim query (after seeding and after the load).

    .venv/bin/python bench/hot_path_bench.py                         # 1,000,000 items
    .venv/bin/python bench/hot_path_bench.py --items 20000 --open-seconds 10 --closed-seconds 10
    .venv/bin/python bench/hot_path_bench.py --reuse                 # keep the seeded database
    .venv/bin/python bench/hot_path_bench.py --reuse --sweep gthread:3:4,sync:5:1

Human-readable lines first; the LAST line is one JSON object (see bench/README.md).
The database is dropped and recreated (unless --reuse): its name must contain "bench".
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import platform
import random
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/ordinal_hotpath_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
SEED = 20261127
PROMPT_CHARS = 200
ANSWER_CHARS = 1000
PROJECT_SLUG = "hot-path-bench"
OVERLAP = 3
GUNICORN_LOG = "/tmp/hot-path-gunicorn.log"
SEED_TABLES = ("labeling_prompt", "labeling_candidate", "labeling_item", "labeling_itemcandidate")


def log(message: str) -> None:
    print(message, file=sys.stderr if os.environ.get("HOT_PATH_CHILD") else sys.stdout, flush=True)


# --------------------------------------------------------------------------- text


def _vocabulary(rng: random.Random, size: int = 2000) -> list[str]:
    """Pronounceable pseudo-words of 1-4 syllables (as in import_bench.py): letters only,
    so no row needs COPY or JSON escaping."""
    onsets = ["", *"b c d f g h l m n p r s t v w br ch cl gr pl qu sh st th tr".split()]  # noqa: SIM905
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    codas = ["", "", "", "n", "r", "s", "t", "l", "nd", "st", "ng", "ck"]
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        parts = (rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))
        words.add("".join(parts))
    return sorted(words)


class TextMaker:
    """Texts of about `target` characters (+-20%) made of sentences of 6-18 random words
    from a seeded 2,000-word vocabulary. Sentences are drawn from a pool of 65,536 so
    that 4 million answers take seconds, not minutes, to make; an answer is 10-15 random
    sentences out of the pool, so answers practically never repeat."""

    def __init__(self, seed: int, pool_size: int = 65_536) -> None:
        import numpy as np

        rng = random.Random(seed)
        vocab = _vocabulary(rng)
        pool = []
        for _ in range(pool_size):
            words = rng.choices(vocab, k=rng.randint(6, 18))
            pool.append(" ".join([words[0].capitalize(), *words[1:]]) + ".")
        self.pool = pool
        self.lengths = np.array([len(s) + 1 for s in pool], dtype=np.int64)
        self.mean = float(self.lengths.mean())
        self.np_rng = np.random.default_rng(seed)

    def texts(self, n: int, target: int) -> list[str]:
        import numpy as np

        low, high = target * 4 // 5, target * 6 // 5
        width = math.ceil(high / (self.mean * 0.5)) + 2
        targets = self.np_rng.integers(low, high + 1, size=n)
        idx = self.np_rng.integers(0, len(self.pool), size=(n, width))
        cums = np.cumsum(self.lengths[idx], axis=1)
        take = np.minimum((cums < targets[:, None]).sum(axis=1) + 1, width).tolist()
        pool = self.pool
        return [" ".join([pool[j] for j in row[:t]]) for row, t in zip(idx.tolist(), take, strict=True)]


# --------------------------------------------------------------------------- database


def _db_name(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        sys.exit(f"--database-url must be a postgres:// URL, got {url!r}")
    name = unquote(parts.path.lstrip("/"))
    if "bench" not in name:
        sys.exit(f"refusing to drop database {name!r}: its name must contain 'bench'")
    return name


def _conninfo(url: str, dbname: str | None = None) -> dict[str, str]:
    parts = urlsplit(url)
    info = {
        "dbname": dbname or unquote(parts.path.lstrip("/")),
        "host": parts.hostname or "",
        "user": unquote(parts.username or ""),
        "port": str(parts.port or ""),
        "password": unquote(parts.password or ""),
    }
    return {k: v for k, v in info.items() if v}


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = _db_name(url)
    with psycopg.connect(**_conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def server_facts(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(**_conninfo(url, "postgres"), autocommit=True) as conn:
        facts = {}
        for name in ("server_version", "autovacuum", "shared_buffers", "synchronous_commit", "max_connections"):
            facts[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # noqa: S608 - fixed names
    facts["server_version"] = facts["server_version"].split()[0]
    return facts


def database_exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(**_conninfo(url, "postgres"), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (_db_name(url),)).fetchone() is not None


def _env(url: str, redis_url: str) -> dict[str, str]:
    """The production-like environment of both the Django child and gunicorn."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        REDIS_URL=redis_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


# --------------------------------------------------------------------------- child: seed


def _copy(cur: object, table: str, columns: list[str], blocks: object, label: str) -> float:
    """COPY ... FREEZE from an iterator of text-format blocks; returns seconds."""
    from psycopg.copy import QueuedLibpqWriter

    start = time.perf_counter()
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FREEZE)"
    with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:  # type: ignore[attr-defined]
        for block in blocks:
            copy.write(block)
    seconds = time.perf_counter() - start
    log(f"  {label}: {seconds:.1f} s")
    return seconds


def _check_columns(cur: object, table: str, columns: list[str]) -> None:
    """Every NOT NULL column without a default must be in the COPY column list."""
    cur.execute(  # type: ignore[attr-defined]
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'",
        (table,),
    )
    missing = sorted({row[0] for row in cur.fetchall()} - set(columns))  # type: ignore[attr-defined]
    if missing:
        raise SystemExit(f"{table}: the seed does not set NOT NULL columns {missing}")


def check_plain_html(maker: TextMaker) -> None:
    """The seed writes the stored HTML of its texts (letters, spaces and full stops) as
    one paragraph, as the app's renderer does, without rendering 4 million answers."""
    from core.rendering import render_markdown

    for text in maker.texts(20, ANSWER_CHARS):
        if str(render_markdown(text)) != f"<p>{text}</p>\n":
            raise SystemExit(f"the renderer no longer writes a plain paragraph for {text[:60]!r}")


def seed_items(url: str, project_id: int, n_items: int, k: int, required: int, chunk: int = 10_000) -> dict[str, float]:
    """Prompts, candidates, items and item-candidate links by COPY, ids assigned here
    (prompt i <-> item i, candidates k*(i-1)+1..k*i). In one transaction that first
    truncates the (empty) tables, so COPY FREEZE writes rows already frozen and
    all-visible, as a vacuumed production table would be; foreign-key triggers are off
    for the session (the ids are consistent by construction)."""
    import psycopg

    maker = TextMaker(SEED)
    now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
    timings: dict[str, float] = {}
    stats = {"prompt_chars": 0, "answer_chars": 0}
    with psycopg.connect(**_conninfo(url)) as conn, conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute("SET synchronous_commit = off")
        for table in SEED_TABLES:
            cur.execute(f"TRUNCATE {table} CASCADE")  # noqa: S608 - fixed names

        check_plain_html(maker)
        prompt_cols = ["id", "project_id", "messages", "messages_html", "content_hash", "source", "metadata",
                       "created_at"]
        cand_cols = [
            "id",
            "prompt_id",
            "text",
            "origin",
            "model_name",
            "sampling_params",
            "sample_index",
            "dedupe_key",
            "is_duplicate",
            "text_html",
            "created_at",
        ]
        item_cols = [
            "id",
            "project_id",
            "prompt_id",
            "status",
            "rankings_count",
            "active_leases",
            "required_rankings",
            "flagged_unsafe",
            "is_gold",
            "decision_note",
            "created_at",
            "kind",
            "axes",
        ]
        link_cols = ["id", "item_id", "candidate_id", "position"]
        for table, cols in zip(SEED_TABLES, (prompt_cols, cand_cols, item_cols, link_cols), strict=True):
            _check_columns(cur, table, cols)

        def prompt_blocks() -> object:
            for lo in range(1, n_items + 1, chunk):
                hi = min(lo + chunk, n_items + 1)
                texts = maker.texts(hi - lo, PROMPT_CHARS - 12)
                lines = []
                for i, body in zip(range(lo, hi), texts, strict=True):
                    content = f"Task {i}: {body}"
                    stats["prompt_chars"] += len(content)
                    # labeling.importing.content_hash: canonical JSON, sorted keys.
                    canonical = '[{"content":"' + content + '","role":"user"}]'
                    digest = hashlib.sha256(canonical.encode()).hexdigest()
                    lines.append(
                        f'{i}\t{project_id}\t[{{"role": "user", "content": "{content}"}}]\t'
                        f'["<p>{content}</p>\\\\n"]\t{digest}\tbench\t{{}}\t{now}\n'
                    )
                yield "".join(lines)

        def candidate_blocks() -> object:
            done = 0
            for lo in range(1, n_items + 1, chunk):
                hi = min(lo + chunk, n_items + 1)
                texts = maker.texts((hi - lo) * k, ANSWER_CHARS)
                lines = []
                t = 0
                for prompt_id in range(lo, hi):
                    seen: dict[str, int] = {}
                    for j in range(k):
                        text = texts[t]
                        t += 1
                        stats["answer_chars"] += len(text)
                        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
                        occurrence = seen.get(digest, 0)
                        seen[digest] = occurrence + 1
                        cid = (prompt_id - 1) * k + j + 1
                        lines.append(
                            f"{cid}\t{prompt_id}\t{text}\timport\tm{j}\t{{}}\t0\t"
                            f"import:{digest}:{occurrence}\t{'t' if occurrence else 'f'}\t<p>{text}</p>\\n\t{now}\n"
                        )
                yield "".join(lines)
                done = hi - 1
                if done % 100_000 < chunk:
                    log(f"    candidates of {done:,} prompts written")

        def item_blocks() -> object:
            for lo in range(1, n_items + 1, chunk * 10):
                hi = min(lo + chunk * 10, n_items + 1)
                yield "".join(
                    f"{i}\t{project_id}\t{i}\topen\t0\t0\t{required}\tf\tf\t\t{now}\tranking\t{{}}\n"
                    for i in range(lo, hi)
                )

        def link_blocks() -> object:
            for lo in range(1, n_items + 1, chunk * 10):
                hi = min(lo + chunk * 10, n_items + 1)
                yield "".join(
                    f"{(i - 1) * k + j + 1}\t{i}\t{(i - 1) * k + j + 1}\t{j}\n" for i in range(lo, hi) for j in range(k)
                )

        timings["prompts"] = _copy(cur, "labeling_prompt", prompt_cols, prompt_blocks(), f"{n_items:,} prompts")
        timings["candidates"] = _copy(
            cur, "labeling_candidate", cand_cols, candidate_blocks(), f"{n_items * k:,} candidates"
        )
        timings["items"] = _copy(cur, "labeling_item", item_cols, item_blocks(), f"{n_items:,} items")
        timings["item_candidates"] = _copy(
            cur, "labeling_itemcandidate", link_cols, link_blocks(), f"{n_items * k:,} item-candidate links"
        )
        start = time.perf_counter()
        conn.commit()
        timings["commit"] = time.perf_counter() - start
    with psycopg.connect(**_conninfo(url), autocommit=True) as conn:
        start = time.perf_counter()
        for table in SEED_TABLES:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
            conn.execute(f"ANALYZE {table}")  # noqa: S608 - fixed names
        timings["analyze"] = time.perf_counter() - start
        log(f"  setval + ANALYZE: {timings['analyze']:.1f} s")
    timings["mean_prompt_chars"] = stats["prompt_chars"] / max(n_items, 1)
    timings["mean_answer_chars"] = stats["answer_chars"] / max(n_items * k, 1)
    return timings


# --------------------------------------------------------------------------- child: probes


def claim_explain(project: object, annotator: object) -> dict[str, object]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim: labeling.services.assignment._open_items with
    _lock_first's FOR UPDATE SKIP LOCKED OF self and LIMIT 1, rolled back. Run twice;
    the second (warm) plan is kept."""
    from django.db import connection, transaction

    from labeling.services.assignment import _open_items

    plans = []
    for _ in range(2):
        with transaction.atomic():
            qs = _open_items(annotator, project).select_for_update(skip_locked=True, of=("self",))
            sql, params = qs[:1].query.sql_with_params()
            query = connection.ops.compose_sql(sql, params)
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
            transaction.set_rollback(True)
    times = []
    for plan in plans:
        for line in plan.splitlines():
            if line.strip().startswith("Execution Time:"):
                times.append(float(line.split(":")[1].split()[0]))
    return {"sql": query, "plan": plans[-1], "execution_ms": times}


def request_queries(project: object, annotator: object, token: str) -> dict[str, object]:
    """Queries one real next + submit run, through Django's test client (all middleware,
    token auth), after one warm-up loop. Leaves those two rankings in the database."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Token {token}")
    out: dict[str, object] = {}
    for attempt in range(2):
        with CaptureQueriesContext(connection) as next_q:
            response = client.get(f"/api/projects/{project.pk}/next")
        if response.status_code != 200:
            raise SystemExit(f"probe: next answered {response.status_code}: {response.content[:300]!r}")
        body = response.json()
        tiers = [[c["id"]] for c in body["candidates"]]
        with CaptureQueriesContext(connection) as submit_q:
            response = client.post(
                f"/api/assignments/{body['id']}/ranking",
                data={"tiers": tiers},
                content_type="application/json",
                HTTP_IDEMPOTENCY_KEY=f"probe-{body['id']}",
            )
        if response.status_code != 201:
            raise SystemExit(f"probe: submit answered {response.status_code}: {response.content[:300]!r}")
        if attempt == 1:
            for name, ctx in (("next", next_q), ("submit", submit_q)):
                out[name] = {
                    "count": len(ctx.captured_queries),
                    "db_ms": round(sum(float(q["time"]) for q in ctx.captured_queries) * 1000, 2),
                    "queries": [f"{float(q['time']) * 1000:7.2f} ms  {q['sql'][:160]}" for q in ctx.captured_queries],
                }
    return out


def child(args: argparse.Namespace) -> None:
    """Django side: --setup (migrate, seed, users, probes) or --explain-only."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.utils import timezone

    from accounts.models import ApiToken
    from accounts.tokens import key_digest, password_fingerprint
    from labeling.models import Membership, Project, Role
    from labeling.services.projects import project_create

    User = get_user_model()  # noqa: N806
    result: dict[str, object] = {}
    if args.child == "setup":
        start = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        result["migrate_seconds"] = time.perf_counter() - start
        log(f"  migrate: {result['migrate_seconds']:.1f} s")
        project = project_create(name="Hot path bench", slug=PROJECT_SLUG, k=args.candidates, overlap=OVERLAP)
        users = User.objects.bulk_create(
            [User(username=f"bench-annotator-{i:02d}", password=make_password(None)) for i in range(args.annotators)]
        )
        Membership.objects.bulk_create([Membership(user=user, project=project, role=Role.ANNOTATOR) for user in users])
        expires = timezone.now() + timedelta(days=365)
        ApiToken.objects.bulk_create([
            ApiToken(user=user, name="bench", key_hash=key_digest(bench_token_key(user.username)),
                     prefix=bench_token_key(user.username)[:8], password_fingerprint=password_fingerprint(user),
                     expires_at=expires)
            for user in users])
        start = time.perf_counter()
        result["seed"] = seed_items(
            os.environ["DATABASE_URL"], project.pk, args.items, args.candidates, project.overlap
        )
        result["seed_seconds"] = time.perf_counter() - start
        log(f"  seed total: {result['seed_seconds']:.1f} s")
    project = Project.objects.get(slug=PROJECT_SLUG)
    annotator = User.objects.get(username="bench-annotator-00")
    result["explain"] = claim_explain(project, annotator)
    if args.child == "setup":
        result["queries"] = request_queries(project, annotator, bench_token_key(annotator.username))
    print(json.dumps(result))


def run_child(mode: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--items",
        str(args.items),
        "--candidates",
        str(args.candidates),
        "--annotators",
        str(args.annotators),
    ]
    proc = subprocess.run(
        command, env={**env, "HOT_PATH_CHILD": "1"}, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout)
        sys.exit(f"the {mode} process failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- gunicorn


@dataclass
class Server:
    proc: subprocess.Popen
    workers: int
    threads: int
    worker_class: str
    command: list[str]


def start_gunicorn(env: dict[str, str], port: int, workers: int, threads: int, worker_class: str) -> Server:
    import httpx

    command = [
        str(Path(sys.executable).parent / "gunicorn"),
        "config.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--threads",
        str(threads),
        "--timeout",
        "120",
        "--graceful-timeout",
        "10",
        "--keep-alive",
        "5",
        "--backlog",
        "2048",
        "--log-level",
        "warning",
    ]
    # Its error log (tracebacks of any 500) goes to a file, not between the figures.
    with open(GUNICORN_LOG, "ab") as log_file:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return Server(proc, workers, threads, worker_class, command)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_gunicorn(Server(proc, workers, threads, worker_class, command))
    sys.exit("gunicorn did not answer /healthz within 60 s")


def stop_gunicorn(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group (start_new_session)
            proc.wait()


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    import psutil

    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            seconds[pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


def cpu_snapshot(server: Server, url: str) -> dict:
    """CPU seconds so far of gunicorn (master + workers), of this database's PostgreSQL
    backends (the persistent connections of the workers, per pid: a connection past
    CONN_MAX_AGE is replaced during a phase) and of this process."""
    import psutil
    import psycopg

    try:
        workers = [server.proc.pid] + [p.pid for p in psutil.Process(server.proc.pid).children()]
    except psutil.Error:
        workers = []
    with psycopg.connect(**_conninfo(url), autocommit=True) as conn:
        backends = [
            row[0]
            for row in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
        ]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "gunicorn": sum(_cpu_seconds(workers).values()),
        "postgres": _cpu_seconds(backends),
        "client": usage.ru_utime + usage.ru_stime,
        "backends": float(len(backends)),
    }


def postgres_cpu_between(before: dict, after: dict) -> float:
    """PostgreSQL CPU seconds between two `cpu_snapshot`s: each backend's growth."""
    return sum(cpu - before["postgres"].get(pid, 0.0) for pid, cpu in after["postgres"].items())


def cpu_delta(before: dict, after: dict, loops: int) -> dict[str, float]:
    """Per phase. PostgreSQL: each backend's growth; one that started during the phase
    counts whole, one that ended during it is missing (`postgres_backends_ended`: its
    last seconds are not counted, so the figure is a lower bound when that is not 0)."""
    per = max(loops, 1)
    postgres = postgres_cpu_between(before, after)
    return {
        "gunicorn_cpu_s": round(after["gunicorn"] - before["gunicorn"], 2),
        "postgres_cpu_s": round(postgres, 2),
        "client_cpu_s": round(after["client"] - before["client"], 2),
        "gunicorn_ms_per_loop": round((after["gunicorn"] - before["gunicorn"]) * 1000 / per, 2),
        "postgres_ms_per_loop": round(postgres * 1000 / per, 2),
        "client_ms_per_loop": round((after["client"] - before["client"]) * 1000 / per, 2),
        "postgres_backends": int(after["backends"]),
        "postgres_backends_ended": len(set(before["postgres"]) - set(after["postgres"])),
    }


# --------------------------------------------------------------------------- load


@dataclass
class Annotator:
    token: str
    index: int
    rng: random.Random
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Token {self.token}"}


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    next_from_schedule_ms: list[float] = field(default_factory=list)
    loops: int = 0
    empty: int = 0
    late_starts: int = 0
    errors: Counter = field(default_factory=Counter)
    scheduled: int = 0
    unfinished: int = 0
    completed_in_window: int = 0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)

    return {
        "n": len(ordered),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


async def one_loop(
    client: object,
    ann: Annotator,
    project_id: int,
    stats: Stats | None,
    done: list[float],
    scheduled: float | None = None,
    window_end: float | None = None,
) -> str:
    """GET next, then POST a ranking of its candidates (shuffled, no ties). Returns
    'ok', 'empty' or 'error'. Appends the completion time of every good loop to `done`;
    records latencies when `stats` is given (and, with `window_end`, only if the submit
    completed before it)."""
    clock = time.perf_counter
    t0 = clock()
    try:
        response = await client.get(f"/api/projects/{project_id}/next", headers=ann.headers)
    except Exception as exc:  # noqa: BLE001 - any transport error is a failed loop
        if stats is not None:
            stats.errors[f"next {type(exc).__name__}"] += 1
        return "error"
    t1 = clock()
    if response.status_code == 204:
        if stats is not None:
            stats.empty += 1
        return "empty"
    if response.status_code != 200:
        if stats is not None:
            stats.errors[f"next {response.status_code}"] += 1
        return "error"
    body = response.json()
    tiers = [[c["id"]] for c in body["candidates"]]
    ann.rng.shuffle(tiers)
    t2 = clock()
    try:
        response = await client.post(
            f"/api/assignments/{body['id']}/ranking",
            json={"tiers": tiers, "duration_ms": ann.rng.randint(5_000, 60_000)},
            headers={**ann.headers, "Idempotency-Key": f"hot-path-{body['id']}"},
        )
    except Exception as exc:  # noqa: BLE001
        if stats is not None:
            stats.errors[f"submit {type(exc).__name__}"] += 1
        return "error"
    t3 = clock()
    if response.status_code not in (200, 201):
        if stats is not None:
            stats.errors[f"submit {response.status_code}"] += 1
        return "error"
    done.append(t3)
    if stats is not None and (window_end is None or t3 <= window_end):
        stats.next_ms.append((t1 - t0) * 1000)
        stats.submit_ms.append((t3 - t2) * 1000)
        if scheduled is not None:
            stats.next_from_schedule_ms.append((t1 - scheduled) * 1000)
        stats.loops += 1
    return "ok"


def _client(base_url: str, annotators: int) -> object:
    import httpx

    limits = httpx.Limits(max_connections=annotators + 8, max_keepalive_connections=annotators + 8)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120)


async def open_loop(
    base_url: str,
    annotators: list[Annotator],
    project_id: int,
    rate: float,
    warmup: float,
    seconds: float,
    drain_limit: float,
) -> tuple[Stats, float]:
    """Each annotator starts a loop every len(annotators)/rate seconds, phases spread
    evenly, so loops start every 1/rate s on the clock whatever the server does. A loop
    that is due while the same annotator's previous one still runs starts as soon as
    that one ends (late_starts; next_from_schedule_ms includes the wait). Latencies are
    those of the loops scheduled in the window; loops still running `drain_limit` s
    after it are cancelled and counted as unfinished."""
    stats = Stats()
    done: list[float] = []
    period = len(annotators) / rate
    async with _client(base_url, len(annotators)) as client:
        start = time.perf_counter() + 0.2
        measure_from = start + warmup
        end = measure_from + seconds

        async def run(ann: Annotator) -> None:
            phase = ann.index * period / len(annotators)
            k = 0
            while True:
                scheduled = start + phase + k * period
                k += 1
                if scheduled >= end:
                    return
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                record = scheduled >= measure_from
                if record:
                    stats.scheduled += 1
                    if time.perf_counter() - scheduled > 0.010:
                        stats.late_starts += 1
                await one_loop(client, ann, project_id, stats if record else None, done, scheduled)

        tasks = [asyncio.ensure_future(run(ann)) for ann in annotators]
        _, pending = await asyncio.wait(tasks, timeout=end + drain_limit - time.perf_counter())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        drained = time.perf_counter() - end
    stats.unfinished = stats.scheduled - stats.loops - stats.empty - sum(stats.errors.values())
    stats.completed_in_window = sum(1 for t in done if measure_from <= t <= end)
    return stats, drained


async def closed_loop(
    base_url: str, annotators: list[Annotator], project_id: int, warmup: float, seconds: float
) -> Stats:
    """Every annotator: next -> submit -> next ... with no pause. Loops/s counts the
    loops whose submit completed inside the window; latencies are those of the loops
    that started and ended in it."""
    stats = Stats()
    done: list[float] = []
    async with _client(base_url, len(annotators)) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        end = measure_from + seconds

        async def run(ann: Annotator) -> None:
            while (now := time.perf_counter()) < end:
                outcome = await one_loop(
                    client, ann, project_id, stats if now >= measure_from else None, done, window_end=end
                )
                if outcome != "ok":
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(run(ann) for ann in annotators))
    stats.completed_in_window = sum(1 for t in done if measure_from <= t <= end)
    return stats


# --------------------------------------------------------------------------- invariants


INVARIANTS = {
    # The overlap is never exceeded (gold items are exempt by design).
    "over_required": (
        "SELECT count(*) FROM labeling_item WHERE project_id = %(p)s AND NOT is_gold "
        "AND rankings_count > required_rankings"
    ),
    # One live ranking per (item, annotator).
    "duplicate_live_rankings": (
        "SELECT count(*) FROM (SELECT r.item_id, r.annotator_id FROM labeling_ranking r "
        "JOIN labeling_item i ON i.id = r.item_id WHERE i.project_id = %(p)s "
        "AND r.superseded_by_id IS NULL GROUP BY 1, 2 HAVING count(*) > 1) d"
    ),
    # The counter equals the rankings actually stored (all rankings; none is superseded here).
    "rankings_count_mismatch": (
        "SELECT count(*) FROM labeling_item i LEFT JOIN (SELECT item_id, count(*) AS n "
        "FROM labeling_ranking GROUP BY item_id) r ON r.item_id = i.id "
        "WHERE i.project_id = %(p)s AND i.rankings_count <> coalesce(r.n, 0)"
    ),
}
EXTRA_CHECKS = {
    # Not a goal of the issue, checked anyway: the lease counter matches the leases.
    "active_leases_mismatch": (
        "SELECT count(*) FROM labeling_item i LEFT JOIN (SELECT item_id, count(*) AS n "
        "FROM labeling_assignment WHERE status = 'active' GROUP BY item_id) a "
        "ON a.item_id = i.id WHERE i.project_id = %(p)s AND i.active_leases <> coalesce(a.n, 0)"
    ),
    "complete_below_required": (
        "SELECT count(*) FROM labeling_item WHERE project_id = %(p)s AND NOT is_gold "
        "AND status <> 'open' AND rankings_count < required_rankings"
    ),
}


def check_invariants(url: str, project_id: int) -> dict[str, int]:
    import psycopg

    out: dict[str, int] = {}
    with psycopg.connect(**_conninfo(url), autocommit=True) as conn:
        for name, query in {**INVARIANTS, **EXTRA_CHECKS}.items():
            out[name] = conn.execute(query, {"p": project_id}).fetchone()[0]
        row = conn.execute(
            "SELECT (SELECT count(*) FROM labeling_ranking), "
            "(SELECT count(*) FROM labeling_assignment), "
            "(SELECT count(*) FROM labeling_assignment WHERE status = 'active'), "
            "(SELECT count(*) FROM labeling_item WHERE project_id = %(p)s AND status <> 'open')",
            {"p": project_id},
        ).fetchone()
        out.update(rankings_total=row[0], assignments_total=row[1], active_leases=row[2], items_decided=row[3])
    out["violations"] = sum(out[name] for name in INVARIANTS)
    return out


def bench_token_key(username: str) -> str:
    """The API token key of a bench annotator. Only its hash is stored, so a run with
    --reuse could not read the keys back: they are derived from the username instead.
    A scratch database on 127.0.0.1 only (its name must contain "bench")."""
    return hashlib.sha256(f"ordinal-bench-token:{username}".encode()).hexdigest()


def load_bench_state(url: str, annotators: int) -> tuple[int, list[str], int]:
    import psycopg

    with psycopg.connect(**_conninfo(url), autocommit=True) as conn:
        row = conn.execute("SELECT id FROM labeling_project WHERE slug = %s", (PROJECT_SLUG,)).fetchone()
        if row is None:
            sys.exit(f"no project {PROJECT_SLUG!r} in the database: run without --reuse first")
        project_id = row[0]
        tokens = [
            bench_token_key(r[0])
            for r in conn.execute(
                "SELECT u.username FROM accounts_apitoken t JOIN auth_user u ON u.id = t.user_id "
                "JOIN labeling_membership m ON m.user_id = u.id AND m.project_id = %s "
                "WHERE u.username LIKE 'bench-annotator-%%' AND t.name = 'bench' ORDER BY u.username",
                (project_id,),
            )
        ]
        items = conn.execute("SELECT count(*) FROM labeling_item WHERE project_id = %s", (project_id,)).fetchone()[0]
    if len(tokens) < annotators:
        sys.exit(f"the database has {len(tokens)} bench annotators, {annotators} asked")
    return project_id, tokens[:annotators], items


# --------------------------------------------------------------------------- main


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _fmt(p: dict[str, float]) -> str:
    if not p.get("n"):
        return "no samples"
    return f"p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms (n={p['n']})"


def run_phases(
    args: argparse.Namespace,
    env: dict[str, str],
    url: str,
    project_id: int,
    tokens: list[str],
    workers: int,
    threads: int,
    worker_class: str,
    open_seconds: float,
    closed_seconds: float,
) -> dict[str, object]:
    base_url = f"http://127.0.0.1:{args.port}"
    server = start_gunicorn(env, args.port, workers, threads, worker_class)
    rng = random.Random(SEED)
    annotators = [Annotator(token, i, random.Random(rng.random())) for i, token in enumerate(tokens)]
    result: dict[str, object] = {
        "gunicorn": {
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class,
            "command": " ".join(["gunicorn", *server.command[1:]]),
        },
    }
    try:
        if open_seconds > 0:
            result["load_avg_before_open"] = _load()
            before = cpu_snapshot(server, url)
            stats, tail = asyncio.run(
                open_loop(base_url, annotators, project_id, args.rate, args.warmup, open_seconds, args.drain_limit)
            )
            after = cpu_snapshot(server, url)
            result["open_loop"] = {
                "offered_loops_per_s": args.rate,
                "seconds": open_seconds,
                "warmup_seconds": args.warmup,
                "achieved_loops_per_s": round(stats.completed_in_window / open_seconds, 1),
                "scheduled_loops": stats.scheduled,
                "unfinished_loops": stats.unfinished,
                "next_ms": percentiles(stats.next_ms),
                "submit_ms": percentiles(stats.submit_ms),
                "next_from_schedule_ms": percentiles(stats.next_from_schedule_ms),
                "late_starts": stats.late_starts,
                "drain_seconds": round(tail, 2),
                "empty": stats.empty,
                "errors": dict(stats.errors),
                "cpu": cpu_delta(before, after, stats.loops),
                "load_avg_after": _load(),
            }
            o = result["open_loop"]
            o["sustained"] = o["achieved_loops_per_s"] >= 0.95 * args.rate and not o["unfinished_loops"]
            log(
                f"(a) open loop, {args.rate:g} loops/s offered for {open_seconds:g} s "
                f"(+{args.warmup:g} s warm-up): {o['achieved_loops_per_s']} loops/s completed "
                f"in the window ({'sustained' if o['sustained'] else 'NOT sustained'}; "
                f"{o['unfinished_loops']} of {o['scheduled_loops']} loops unfinished "
                f"{args.drain_limit:g} s after it)"
            )
            log(f"    next:   {_fmt(o['next_ms'])}")
            log(f"    submit: {_fmt(o['submit_ms'])}")
            log(
                f"    next, from its scheduled start: {_fmt(o['next_from_schedule_ms'])}; "
                f"{o['late_starts']} loops started >10 ms late; errors {o['errors'] or 'none'}"
            )
            log(
                f"    CPU per loop: gunicorn {o['cpu']['gunicorn_ms_per_loop']} ms, PostgreSQL "
                f"{o['cpu']['postgres_ms_per_loop']} ms, client {o['cpu']['client_ms_per_loop']} ms;"
                f" load average {o['load_avg_after']}"
            )
        if closed_seconds > 0:
            result["load_avg_before_saturation"] = _load()
            before = cpu_snapshot(server, url)
            stats = asyncio.run(closed_loop(base_url, annotators, project_id, args.warmup, closed_seconds))
            after = cpu_snapshot(server, url)
            result["saturation"] = {
                "annotators": len(annotators),
                "seconds": closed_seconds,
                "warmup_seconds": args.warmup,
                "loops_per_s": round(stats.completed_in_window / closed_seconds, 1),
                "next_ms": percentiles(stats.next_ms),
                "submit_ms": percentiles(stats.submit_ms),
                "empty": stats.empty,
                "errors": dict(stats.errors),
                "cpu": cpu_delta(before, after, stats.loops),
                "load_avg_after": _load(),
            }
            s = result["saturation"]
            log(
                f"(b) saturation, {len(annotators)} closed-loop annotators for {closed_seconds:g} s: "
                f"{s['loops_per_s']} loops/s"
            )
            log(f"    next:   {_fmt(s['next_ms'])}")
            log(f"    submit: {_fmt(s['submit_ms'])}; errors {s['errors'] or 'none'}")
            log(
                f"    CPU per loop: gunicorn {s['cpu']['gunicorn_ms_per_loop']} ms, PostgreSQL "
                f"{s['cpu']['postgres_ms_per_loop']} ms, client {s['cpu']['client_ms_per_loop']} ms;"
                f" load average {s['load_avg_after']}"
            )
    finally:
        stop_gunicorn(server)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--rate", type=float, default=100.0, help="offered loops/s in (a)")
    parser.add_argument("--open-seconds", type=float, default=60.0)
    parser.add_argument("--closed-seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per phase")
    parser.add_argument(
        "--drain-limit", type=float, default=30.0, help="(a): seconds to wait for late loops after the window"
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--database-url", default=os.environ.get("HOT_PATH_DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    parser.add_argument("--reuse", action="store_true", help="keep the database seeded by an earlier run (no seeding)")
    parser.add_argument(
        "--sweep",
        metavar="CLASS:WORKERS:THREADS,...",
        help="instead of the bench: a short saturation run (b) per gunicorn setting",
    )
    parser.add_argument("--sweep-seconds", type=float, default=20.0)
    parser.add_argument(
        "--explain-out",
        default="/tmp/hot-path-explain.txt",
        help="where the EXPLAIN plans and the per-request queries go",
    )
    parser.add_argument("--child", choices=["setup", "explain"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args)
        return

    url = args.database_url
    db = _db_name(url)
    env = _env(url, args.redis_url)
    facts = server_facts(url)
    load_start = _load()
    cores = len(os.sched_getaffinity(0))
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    log(
        f"machine: {cores} cores, {mem_gib} GiB, Python {platform.python_version()}, "
        f"PostgreSQL {facts['server_version']} (autovacuum {facts['autovacuum']}, shared_buffers "
        f"{facts['shared_buffers']}); load average {load_start}"
    )

    setup: dict[str, object] = {}
    reused = args.reuse and database_exists(url)
    if not reused:
        log(
            f"recreating database {db}; seeding {args.items:,} items x {args.candidates} "
            f"candidates, {args.annotators} annotators"
        )
        recreate_database(url)
        setup = run_child("setup", args, env)
    project_id, tokens, items = load_bench_state(url, args.annotators)
    if reused:
        log(f"reusing database {db}: {items:,} items")
    with_setup = bool(setup)
    explains = {}
    if with_setup:
        explains["after_seed"] = setup["explain"]
        q = setup["queries"]
        log(
            f"seeded in {setup['seed_seconds']:.1f} s (not measured further): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in setup["seed"].items() if not k.startswith("mean"))
        )
        log(
            f"queries per request (Django test client, 2nd loop): next {q['next']['count']} "
            f"({q['next']['db_ms']} ms in the database), submit {q['submit']['count']} "
            f"({q['submit']['db_ms']} ms)"
        )
        log(f"claim query after seeding: {setup['explain']['execution_ms']} ms (EXPLAIN ANALYZE)")

    if args.sweep:
        rows = []
        for spec in args.sweep.split(","):
            worker_class, workers, threads = spec.split(":")
            log(f"--- sweep: {worker_class} workers={workers} threads={threads}")
            # Saturation only: it is what the setting changes; (a) is then run once.
            res = run_phases(
                args, env, url, project_id, tokens, int(workers), int(threads), worker_class, 0, args.sweep_seconds
            )
            sat = res["saturation"]
            rows.append(
                {
                    "worker_class": worker_class,
                    "workers": int(workers),
                    "threads": int(threads),
                    "saturation_loops_per_s": sat["loops_per_s"],
                    "next_p99_ms": sat["next_ms"].get("p99"),
                    "submit_p99_ms": sat["submit_ms"].get("p99"),
                    "gunicorn_ms_per_loop": sat["cpu"]["gunicorn_ms_per_loop"],
                    "postgres_ms_per_loop": sat["cpu"]["postgres_ms_per_loop"],
                    "load_avg": sat["load_avg_after"],
                }
            )
        print(
            json.dumps(
                {
                    "bench": "hot_path_sweep",
                    "items": items,
                    "seconds": args.sweep_seconds,
                    "rate": args.rate,
                    "rows": rows,
                    "load_avg_start": load_start,
                }
            )
        )
        return

    phases = run_phases(
        args,
        env,
        url,
        project_id,
        tokens,
        args.workers,
        args.threads,
        args.worker_class,
        args.open_seconds,
        args.closed_seconds,
    )
    start = time.perf_counter()
    invariants = check_invariants(url, project_id)
    invariant_seconds = time.perf_counter() - start
    log(f"invariants ({invariant_seconds:.1f} s): " + ", ".join(f"{k}={v}" for k, v in invariants.items()))
    explains["after_load"] = run_child("explain", args, env)["explain"]
    log(f"claim query after the load: {explains['after_load']['execution_ms']} ms (EXPLAIN ANALYZE)")

    with open(args.explain_out, "w", encoding="utf-8") as fh:
        for name, data in explains.items():
            fh.write(f"== claim query, {name}\n{data['sql']}\n\n{data['plan']}\n\n")
        if with_setup:
            for name, data in setup["queries"].items():
                fh.write(f"== queries of one {name} ({data['count']}, {data['db_ms']} ms)\n")
                fh.write("\n".join(data["queries"]) + "\n\n")
    log(f"plans and queries written to {args.explain_out}")
    log("")
    log(explains["after_load"]["plan"])

    with_db_size = None
    import psycopg

    with psycopg.connect(**_conninfo(url), autocommit=True) as conn:
        with_db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

    o, s = phases.get("open_loop", {}), phases.get("saturation", {})
    # None: not measured in this run. (a) counts only when the offered load was sustained.
    goals = {
        "next_p99_le_50ms_at_offered_rate": (o["sustained"] and o["next_ms"].get("p99", 1e9) <= 50) if o else None,
        "saturation_ge_100_loops_per_s": s["loops_per_s"] >= 100 if s else None,
        "zero_invariant_violations": invariants["violations"] == 0,
    }
    log(
        "goals: "
        + ", ".join(f"{k}: {'not measured' if v is None else 'met' if v else 'MISSED'}" for k, v in goals.items())
    )
    summary = {
        "bench": "hot_path",
        "items": items,
        "candidates_per_item": args.candidates,
        "annotators": args.annotators,
        "overlap": OVERLAP,
        "reused_db": reused,
        "seed_seconds": round(setup["seed_seconds"], 1) if with_setup else None,
        "seed": ({k: round(v, 1) for k, v in setup["seed"].items()} if with_setup else None),
        "db_size_mb": round(with_db_size / 2**20, 1),
        **phases,
        "invariants": invariants,
        "queries_per_request": (
            {k: {"count": v["count"], "db_ms": v["db_ms"]} for k, v in setup["queries"].items()} if with_setup else None
        ),
        "claim_explain_ms": {k: v["execution_ms"] for k, v in explains.items()},
        "goals": goals,
        "load_avg_start": load_start,
        "load_avg_end": _load(),
        "machine": {
            "cores": cores,
            "mem_gib": mem_gib,
            "python": platform.python_version(),
            "postgres": facts["server_version"],
            "autovacuum": facts["autovacuum"],
            "shared_buffers": facts["shared_buffers"],
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
