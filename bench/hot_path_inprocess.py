"""In-process CPU per next + submit loop: Django's test client, all middleware, token auth.

The server-side cost of the annotators' hot path without gunicorn or an HTTP client in
the way, so two versions of the code can be compared back to back on a busy machine.
Run from a checkout's root (that checkout's code is measured):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ordinal_hot_b1 \\
        .venv/bin/python /path/to/bench/hot_path_inprocess.py --loops 150 --rounds 3

Seeds a fresh project (one per run) with `--items` items x 4 candidates, overlap 3, and
`--rounds` annotators with API tokens; round r loops as annotator r: GET next, POST the
ranking. Prints CPU ms per loop (this process: Python and the client), PostgreSQL
backend CPU ms per loop, queries per loop; last line one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())  # the checkout we are run from, not this file's
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("DEBUG", "0")


def backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile", help="write a CPU-clock cProfile of the measured loops here")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from accounts.tokens import token_create
    from labeling.models import Membership, Role
    from labeling.services.projects import project_create
    from tests.factories import UserFactory, make_items

    call_command("migrate", verbosity=0, interactive=False)
    stamp = int(time.time() * 1000)
    project = project_create(name=f"inproc {stamp}", slug=f"inproc-{stamp}", k=4, overlap=3)
    make_items(project, args.items, k=4)
    clients = []
    for r in range(args.rounds):
        user = UserFactory(username=f"inproc-{stamp}-{r}")
        Membership.objects.create(user=user, project=project, role=Role.ANNOTATOR)
        _, key = token_create(user=user, name="bench")
        clients.append(Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Token {key}"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def loop(client: Client, n: int) -> None:
        body_next = client.get(f"/api/projects/{project.pk}/next")
        assert body_next.status_code == 200, (body_next.status_code, body_next.content[:300])
        body = body_next.json()
        response = client.post(
            f"/api/assignments/{body['id']}/ranking",
            data=json.dumps({"tiers": [[c["id"]] for c in body["candidates"]]}),
            content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"k-{body['id']}-{n}")
        assert response.status_code == 201, (response.status_code, response.content[:300])

    rounds = []
    for r, client in enumerate(clients):
        for n in range(args.warmup):
            loop(client, -n - 1)
        queries = []  # request_started resets connection.queries: count with a wrapper

        def record(execute, sql, params, many, context, queries=queries):  # noqa: ANN001, ANN202
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            loop(client, -1000)
        pg0, cpu0, wall0 = backend_cpu_s(backend), time.process_time(), time.perf_counter()
        profile = cProfile.Profile(time.process_time) if args.profile else None
        if profile:
            profile.enable()
        for n in range(args.loops):
            loop(client, n)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        cpu, wall, pg = (time.process_time() - cpu0, time.perf_counter() - wall0,
                         backend_cpu_s(backend) - pg0)
        rounds.append({"cpu_ms_per_loop": round(cpu / args.loops * 1000, 2),
                       "postgres_cpu_ms_per_loop": round(pg / args.loops * 1000, 2),
                       "wall_ms_per_loop": round(wall / args.loops * 1000, 2),
                       "queries_per_loop": len(queries),
                       "load_average": round(os.getloadavg()[0], 2)})
        print(f"round {r}: {rounds[-1]}", flush=True)
    if os.environ.get("INPROC_SHOW_QUERIES"):
        for sql in queries:
            print(sql[:200])
    best = min(rounds, key=lambda x: x["cpu_ms_per_loop"])
    print(json.dumps({"bench": "hot_path_inprocess", "loops": args.loops, "rounds": rounds,
                      "best_cpu_ms_per_loop": best["cpu_ms_per_loop"],
                      "median_cpu_ms_per_loop": sorted(x["cpu_ms_per_loop"] for x in rounds)[len(rounds) // 2],
                      "queries_per_loop": rounds[-1]["queries_per_loop"],
                      "checkout": os.getcwd().rsplit("/", 1)[-1]}))


if __name__ == "__main__":
    main()
