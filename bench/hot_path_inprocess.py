"""In-process CPU per next + submit loop: Django's test client, all middleware, token auth.

The server-side cost of the annotators' hot path without gunicorn or an HTTP client in
the way, so two versions of the code can be compared back to back on a busy machine.
Run from a checkout's root (that checkout's code is measured):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ordinal_hot_b1 \\
        .venv/bin/python /path/to/bench/hot_path_inprocess.py --loops 150 --rounds 3

Seeds a fresh project (one per run) with `--items` items x 4 candidates, overlap 3, and
`--rounds` annotators with API tokens; round r loops as annotator r: GET next, POST the
ranking. Prints CPU ms per loop (this process: Python and the client), the part of it
spent inside Django's request handler (`server_cpu_ms_per_loop`: the server's own work,
without the test client building requests and reading responses), PostgreSQL backend
CPU ms per loop, queries per loop; last line one JSON object.

`--web` measures the annotators' page instead of the API: session login and CSRF as the
browser sends them; a loop is what static/js/annotate.js does per item once the page is
open, the ranking POSTed to the API with the session cookie, then the prefetch fragment
(`/annotate/<slug>/prefetch`, the item behind the current one, rendered HTML). The
workspace page itself (a refresh, which shows the held item again) is timed separately:
`page_cpu_ms`.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import re
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
    parser.add_argument("--web", action="store_true",
                        help="the workspace page and its prefetch (session auth), not the API")
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
    clients, clocks = [], []
    for r in range(args.rounds):
        user = UserFactory(username=f"inproc-{stamp}-{r}")
        Membership.objects.create(user=user, project=project, role=Role.ANNOTATOR)
        if args.web:
            client = Client(SERVER_NAME="127.0.0.1", enforce_csrf_checks=True)
            client.force_login(user)
        else:
            _, key = token_create(user=user, name="bench")
            client = Client(SERVER_NAME="127.0.0.1", HTTP_AUTHORIZATION=f"Token {key}")
        clocks.append(ServerClock(client))
        clients.append(client)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def api_loop(client: Client, n: int) -> None:
        body_next = client.get(f"/api/projects/{project.pk}/next")
        assert body_next.status_code == 200, (body_next.status_code, body_next.content[:300])
        body = body_next.json()
        response = client.post(
            f"/api/assignments/{body['id']}/ranking",
            data=json.dumps({"tiers": [[c["id"]] for c in body["candidates"]]}),
            content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"k-{body['id']}-{n}")
        assert response.status_code == 201, (response.status_code, response.content[:300])

    page_url, prefetch_url = f"/annotate/{project.slug}/", f"/annotate/{project.slug}/prefetch"
    screens: dict[int, list] = {}  # per client: [the item on screen, the one behind it]

    def web_open(client: Client) -> None:
        page = client.get(page_url)
        assert page.status_code == 200, (page.status_code, page.content[:300])
        behind = client.get(prefetch_url)
        assert behind.status_code == 200, (behind.status_code, behind.content[:300])
        screens[id(client)] = [shown(page.content), shown(behind.content)]

    def web_loop(client: Client, n: int) -> None:
        screen = screens[id(client)]
        assignment, ids = screen[0]
        response = client.post(
            f"/api/assignments/{assignment}/ranking",
            data=json.dumps({"tiers": [[i] for i in ids], "all_bad": False, "unsafe": False,
                             "needs_expert": False, "rationale": "", "duration_ms": 4000}),
            content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"w-{assignment}-{n}",
            HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
        assert response.status_code == 201, (response.status_code, response.content[:300])
        behind = client.get(prefetch_url)
        assert behind.status_code == 200, (behind.status_code, behind.content[:300])
        screen[:] = [screen[1], shown(behind.content)]

    loop = web_loop if args.web else api_loop
    rounds = []
    for r, client in enumerate(clients):
        if args.web:
            web_open(client)
        for n in range(args.warmup):
            loop(client, -n - 1)
        queries = []  # request_started resets connection.queries: count with a wrapper

        def record(execute, sql, params, many, context, queries=queries):  # noqa: ANN001, ANN202
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            loop(client, -1000)
        server = clocks[r]
        server.seconds = 0.0
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
                       "server_cpu_ms_per_loop": round(server.seconds / args.loops * 1000, 2),
                       "postgres_cpu_ms_per_loop": round(pg / args.loops * 1000, 2),
                       "wall_ms_per_loop": round(wall / args.loops * 1000, 2),
                       "queries_per_loop": len(queries),
                       "load_average": round(os.getloadavg()[0], 2)})
        if args.web:  # a refresh of the page: the held item rendered again
            server.seconds = 0.0
            for _ in range(20):
                assert client.get(page_url).status_code == 200
            rounds[-1]["page_cpu_ms"] = round(server.seconds / 20 * 1000, 2)
        print(f"round {r}: {rounds[-1]}", flush=True)
    if os.environ.get("INPROC_SHOW_QUERIES"):
        for sql in queries:
            print(sql[:200])
    best = min(rounds, key=lambda x: x["cpu_ms_per_loop"])
    print(json.dumps({"bench": "hot_path_inprocess", "mode": "web" if args.web else "api",
                      "loops": args.loops, "rounds": rounds,
                      "best_cpu_ms_per_loop": best["cpu_ms_per_loop"],
                      "median_cpu_ms_per_loop": sorted(x["cpu_ms_per_loop"] for x in rounds)[len(rounds) // 2],
                      "queries_per_loop": rounds[-1]["queries_per_loop"],
                      "checkout": os.getcwd().rsplit("/", 1)[-1]}))


class ServerClock:
    """CPU seconds spent inside the client's request handler (Django's own work)."""

    def __init__(self, client) -> None:  # noqa: ANN001 - django.test.Client
        self.seconds = 0.0
        self.handler = client.handler
        client.handler = self

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        start = time.process_time()
        try:
            return self.handler(*args, **kwargs)
        finally:
            self.seconds += time.process_time() - start


ASSIGNMENT = re.compile(rb'data-assignment="(\d+)"')
ANSWER = re.compile(rb'class="answer card" id="[^"]*" data-id="([^"]+)"')


def shown(html: bytes) -> tuple[int, list[str]]:
    """The assignment id and the answers' blind ids of the item on a page or fragment."""
    assignment = ASSIGNMENT.search(html)
    assert assignment, html[:500]
    return int(assignment.group(1)), [m.decode() for m in ANSWER.findall(html)]


if __name__ == "__main__":
    main()
