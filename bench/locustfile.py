"""Locust scenario of annotators on the workspace API, driven by bench/load_bench.py.

Each user is one annotator with their own API token (`Authorization: Token ...`) and
loops: `GET /api/projects/{id}/next`, reads the item for a think time, then either
`POST /api/assignments/{id}/ranking` (a shuffled ranking, `Idempotency-Key:
load-<assignment id>`) or `POST /api/assignments/{id}/skip`. Three kinds:

- SteadyAnnotator (weight 6): ranks; half of them pre-load the next item
  (`?prefetch=1`, a second lease); 5% of their rankings are sent again with the same key.
- FickleAnnotator (weight 3): skips 30% of items; 25% of their rankings are retried with
  the same key, half of those as two concurrent twins (a double click).
- LeaseHolder (weight 1): claims an item and sits on it past its lease, so the lease
  expires (load_bench's sweeper); then half the time submits it late anyway.

What counts as a failure (locust's `num_failures`) is any reply outside EXPECTED below,
any transport error or timeout. 409s that are the designed answer to a race are expected:
`lease_expired` / `item_closed` when a ranking arrives after its lease was swept (the
item's slots went to others, or it was completed), `already_expired` when a skip arrives
after the sweep. A retry or twin must answer 200 with the first ranking's id.

It is not run on its own: load_bench passes --project-id, --tokens-file (one token per
user), --report-file (where this process writes its stats, outcomes and retries as JSON
when it quits), --think and --hold-seconds.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task
from locust.clients import ResponseContextManager
from locust.env import Environment

REQUEST_TIMEOUT = 60  # seconds; a reply slower than this is a failure, not a hang
# gunicorn closes a keep-alive connection idle for 5 s (hot_path_bench.start_gunicorn). A
# request sent on it just as the server closes it fails with a reset; browsers resend
# it, requests does not. So a user about to idle longer than this closes its connections
# first and opens a new one after, and no such reset is counted as the server's failure.
IDLE_CLOSE_SECONDS = 4.0

# (endpoint) -> {status: None (any body) or the set of allowed 409 codes}
EXPECTED: dict[str, dict[int, set[str] | None]] = {
    "next": {200: None, 204: None},  # 204: nothing left for this annotator
    # 204 also when the item on screen lost its lease between the two calls (nothing to pre-load behind)
    "prefetch": {200: None, 204: None},
    "ranking": {201: None, 409: {"lease_expired", "item_closed"}},
    "retry": {200: None},  # the same key again: the stored ranking, nothing new
    "twin": {200: None, 201: None, 409: {"lease_expired", "item_closed"}},
    "late": {201: None, 409: {"lease_expired", "item_closed"}},
    "skip": {200: None, 409: {"already_expired"}},
}

OUTCOMES: Counter[str] = Counter()
RETRIES: list[dict[str, Any]] = []  # one record per retried or twinned key
USERS: Counter[str] = Counter()  # started users by kind
_tokens: list[str] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--project-id", type=int, default=0, include_in_web_ui=False)
    parser.add_argument("--tokens-file", default="", include_in_web_ui=False)
    parser.add_argument("--report-file", default="", include_in_web_ui=False)
    parser.add_argument("--think", default="1,4", help="min,max seconds on an item", include_in_web_ui=False)
    parser.add_argument("--hold-seconds", type=float, default=20.0, include_in_web_ui=False)


@events.init.add_listener
def _load_tokens(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or not options.tokens_file or not options.project_id:
        raise SystemExit("run through bench/load_bench.py: --project-id and --tokens-file are required")
    _tokens.extend(json.loads(Path(options.tokens_file).read_text()))


@events.quitting.add_listener
def _write_report(environment: Environment, **_: Any) -> None:
    """Everything load_bench needs, from inside this process (locust's own JSON output
    has no percentiles and no per-status outcomes)."""
    stats = environment.stats
    endpoints = {}
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        endpoints[f"{entry.method} {entry.name}"] = _entry(entry)
    report = {
        "endpoints": endpoints,
        "total": _entry(stats.total),
        "errors": {f"{e.method} {e.name}: {e.error}": e.occurrences for e in stats.errors.values()},
        "outcomes": dict(sorted(OUTCOMES.items())),
        "retries": RETRIES,
        "users": dict(sorted(USERS.items())),
    }
    Path(environment.parsed_options.report_file).write_text(json.dumps(report))


def _entry(entry: Any) -> dict[str, float]:
    if not entry.num_requests:
        return {"requests": 0, "failures": entry.num_failures}
    return {
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "p50_ms": entry.get_response_time_percentile(0.50),
        "p95_ms": entry.get_response_time_percentile(0.95),
        "p99_ms": entry.get_response_time_percentile(0.99),
        "max_ms": round(entry.max_response_time, 1),
        "mean_ms": round(entry.avg_response_time, 1),
        "requests_per_s": round(entry.total_rps, 2),
    }


def _judge(response: ResponseContextManager, kind: str) -> bool:
    """Mark the reply a success or a failure by EXPECTED; count it by status and code."""
    status = response.status_code
    code = ""
    if status == 409:
        try:
            code = response.json().get("code", "")
        except ValueError:
            code = "<no json>"
    label = f"{kind} {status}" + (f" {code}" if code else "")
    OUTCOMES[label] += 1
    allowed = EXPECTED[kind]
    if status in allowed and (allowed[status] is None or code in allowed[status]):
        response.success()
        return True
    detail = repr(response.error) if status == 0 else (response.text or "")[:200]
    response.failure(f"unexpected {label}: {detail}")
    return False


class Annotator(HttpUser):
    abstract = True
    wait_time = between(0.2, 1.0)  # between items: back from the last submit to the next
    skip_rate = 0.0
    retry_rate = 0.0
    twin_share = 0.0  # of the retried rankings, the share sent as two concurrent twins
    prefetch = False

    def on_start(self) -> None:
        if not _tokens:
            raise SystemExit("more locust users than annotator tokens")
        self.token = _tokens.pop()
        USERS[type(self).__name__] += 1
        self.client.headers["Authorization"] = f"Token {self.token}"
        options = self.environment.parsed_options
        self.project_id = options.project_id
        low, high = (float(x) for x in options.think.split(","))
        self.think = (low, high)
        self.hold_seconds = options.hold_seconds

    def claim(self, *, prefetch: bool = False) -> dict[str, Any] | None:
        """The current (or a new) item, or None when there is nothing to do."""
        suffix = "?prefetch=1" if prefetch else ""
        with self.client.get(
            f"/api/projects/{self.project_id}/next{suffix}",
            name=f"/api/projects/[id]/next{suffix}",
            catch_response=True,
            timeout=REQUEST_TIMEOUT,
        ) as response:
            if _judge(response, "prefetch" if prefetch else "next") and response.status_code == 200:
                return response.json()
        return None

    def post_ranking(self, assignment: dict[str, Any], body: dict[str, Any], kind: str) -> tuple[int, int | None]:
        """(status, ranking id or None) of one POST of the ranking."""
        suffix = "" if kind == "ranking" else f" ({kind})"
        with self.client.post(
            f"/api/assignments/{assignment['id']}/ranking",
            name=f"/api/assignments/[id]/ranking{suffix}",
            json=body,
            headers={"Idempotency-Key": f"load-{assignment['id']}"},
            catch_response=True,
            timeout=REQUEST_TIMEOUT,
        ) as response:
            _judge(response, kind)
            ranking_id = response.json().get("id") if response.status_code in (200, 201) else None
            return response.status_code, ranking_id

    def ranking_of(self, assignment: dict[str, Any]) -> dict[str, Any]:
        tiers = [[c["id"]] for c in assignment["candidates"]]
        random.shuffle(tiers)
        return {"tiers": tiers, "duration_ms": random.randint(5_000, 60_000)}

    def submit(self, assignment: dict[str, Any]) -> None:
        body = self.ranking_of(assignment)
        key = f"load-{assignment['id']}"
        retried = random.random() < self.retry_rate
        if retried and random.random() < self.twin_share:
            twins = [gevent.spawn(self.post_ranking, assignment, body, "twin") for _ in range(2)]
            gevent.joinall(twins)
            responses = [twin.value for twin in twins if twin.successful()]
            RETRIES.append({"token": self.token, "key": key, "kind": "twin", "responses": responses})
            return
        first = self.post_ranking(assignment, body, "ranking")
        if retried and first[0] == 201:
            second = self.post_ranking(assignment, body, "retry")
            RETRIES.append({"token": self.token, "key": key, "kind": "retry", "responses": [first, second]})

    def skip(self, assignment: dict[str, Any]) -> None:
        with self.client.post(
            f"/api/assignments/{assignment['id']}/skip",
            name="/api/assignments/[id]/skip",
            json={"reason": "load test: needs expertise"},
            catch_response=True,
            timeout=REQUEST_TIMEOUT,
        ) as response:
            _judge(response, "skip")

    def idle(self, seconds: float) -> None:
        if seconds > IDLE_CLOSE_SECONDS:
            self.client.close()  # see IDLE_CLOSE_SECONDS; the session reconnects on its next request
        gevent.sleep(seconds)

    @task
    def annotate(self) -> None:
        assignment = self.claim()
        if assignment is None:
            gevent.sleep(1.0)  # nothing left: an annotator would look again later
            return
        if self.prefetch:
            self.claim(prefetch=True)
        self.idle(random.uniform(*self.think))
        if random.random() < self.skip_rate:
            self.skip(assignment)
        else:
            self.submit(assignment)


class SteadyAnnotator(Annotator):
    weight = 6
    retry_rate = 0.05

    def on_start(self) -> None:
        super().on_start()
        self.prefetch = random.random() < 0.5


class FickleAnnotator(Annotator):
    weight = 3
    skip_rate = 0.3
    retry_rate = 0.25
    twin_share = 0.5


class LeaseHolder(Annotator):
    """Opens an item and leaves it open past its lease (a closed laptop lid)."""

    weight = 1

    @task
    def annotate(self) -> None:
        assignment = self.claim()
        if assignment is None:
            gevent.sleep(1.0)
            return
        self.idle(self.hold_seconds)
        if random.random() < 0.5:
            self.post_ranking(assignment, self.ranking_of(assignment), "late")
