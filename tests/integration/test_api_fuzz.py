"""Schemathesis against the live API, once per role.

The app runs under gunicorn on 127.0.0.1 against the PostgreSQL test database (a real
WSGI server in its own process, as in production: DEBUG off, the whole middleware stack,
a 500 is a 500 and not an exception in the test process). The fuzzer loads the schema
from /api/schema/ and runs every operation through Schemathesis' default phases
(examples, coverage, fuzzing, stateful) and default checks: no 5xx, status code,
content type, headers and body conform to the schema, negative data rejected, positive
data accepted, missing auth rejected, ... It authenticates with an API token of one of:

  admin      the project's admin (not staff)
  reviewer   the project's reviewer
  annotator  an annotator of the project, with an item on screen
  outsider   an active user with no membership anywhere

(bench/fuzz_bench.py adds `staff`, who alone may create projects and users.)

The project is seeded with items, candidates, rankings, a guideline, an import, a
generation run, a built snapshot, a training run with metrics and a model version; path
parameters are pinned to those ids, so the generated bodies and queries reach the code
behind the access checks instead of stopping at a 404. Each role gets a fresh database.

Bounded: ORDINAL_FUZZ_EXAMPLES (default 5) Hypothesis examples per operation and phase,
ORDINAL_FUZZ_SEED (default fixed, so CI is repeatable). bench/fuzz_bench.py runs the
same with a larger budget and records the case counts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("admin", "reviewer", "annotator", "outsider")
SNAPSHOT_FILE = "pairs-train.jsonl"
FUZZ_EXAMPLES = int(os.environ.get("ORDINAL_FUZZ_EXAMPLES", "5"))
FUZZ_SEED = int(os.environ.get("ORDINAL_FUZZ_SEED", "20261127"))

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """Ids of the seeded rows and one API token per role."""

    project: int
    scratch_project: int
    scratch_member: int
    prompt: int
    item: int
    assignment: int
    import_job: int
    generation_run: int
    snapshot: int
    training_run: int
    model_version: int
    webhook: int
    spare_webhook: int
    webhook_delivery: int
    hub_push: int
    spare_prompt: int
    spare_user: int
    judge: int = 0
    judge_run: int = 0
    tokens: dict[str, str] = field(default_factory=dict)
    # Per role, the id of a second token of theirs: what DELETE /api/auth/tokens/{id} revokes.
    spare_tokens: dict[str, int] = field(default_factory=dict)


def seed_world(artifact_root: Path) -> World:
    """A project in mid-life, through the services where they exist. `artifact_root` is
    the server's ARTIFACT_ROOT (the snapshot's file is written under it)."""
    from django.test import override_settings

    from accounts.tokens import token_create
    from guidelines.models import Acknowledgement, Guideline
    from guidelines.services import draft_create, version_publish
    from judges.models import Judge, JudgeRun
    from labeling.blind import tiers_as_shown
    from labeling.models import ImportJob, Role
    from labeling.services.assignment import next_item
    from labeling.services.rankings import RankingInput, ranking_submit
    from tests.factories import MembershipFactory, ProjectFactory, UserFactory, make_items
    from training.models import DatasetSnapshot, GenerationRun, HubPush, ModelVersion, TrainingMetric, TrainingRun
    from training.snapshots import snapshot_dir
    from webhooks.models import Webhook, WebhookDelivery, WebhookEvent

    suffix = secrets.token_hex(3)
    project = ProjectFactory(name=f"Fuzz {suffix}", slug=f"fuzz-{suffix}", k=3, overlap=3)
    scratch = ProjectFactory(name=f"Scratch {suffix}", slug=f"scratch-{suffix}")
    users = {}
    for role, member_role in (("admin", Role.ADMIN), ("reviewer", Role.REVIEWER),
                              ("annotator", Role.ANNOTATOR), ("outsider", None)):
        users[role] = UserFactory(username=f"fuzz-{role}-{suffix}")
        if member_role is not None:
            MembershipFactory(user=users[role], project=project, role=member_role)
    MembershipFactory(user=users["admin"], project=scratch, role=Role.ADMIN)
    # Staff reach the two operations no project role may use (create a project, a user);
    # the bench runs them as a fifth identity.
    users["staff"] = UserFactory(username=f"fuzz-staff-{suffix}", is_staff=True)
    scratch_member = UserFactory(username=f"fuzz-scratch-{suffix}")
    MembershipFactory(user=scratch_member, project=scratch, role=Role.ANNOTATOR)
    spare_user = UserFactory(username=f"fuzz-erasable-{suffix}")  # what account erasure may erase

    guideline = Guideline.objects.create(slug=f"fuzz-{suffix}", title="Fuzz", project=project)
    version = version_publish(version=draft_create(guideline=guideline, body="Rank by usefulness."),
                              user=None)
    project.guideline = guideline
    project.save(update_fields=["guideline"])

    items = make_items(project, 6, k=3)
    # Two other annotators rank the first items, so agreement, quality and model
    # comparison have rankings to work on.
    for n in range(2):
        other = UserFactory(username=f"fuzz-ranker{n}-{suffix}")
        MembershipFactory(user=other, project=project, role=Role.ANNOTATOR)
        Acknowledgement.objects.create(user=other, version=version)
        for key in range(3):
            assignment = next_item(annotator=other, project=project)
            ids = sorted(assignment.display_order)
            ranking_submit(annotator=other, assignment_id=assignment.pk,
                           data=RankingInput(tiers=tiers_as_shown(assignment, [[i] for i in ids])),
                           idempotency_key=f"seed-{n}-{key}")
    Acknowledgement.objects.create(user=users["annotator"], version=version)
    on_screen = next_item(annotator=users["annotator"], project=project)

    prompt = items[0].prompt_id
    spare_prompt = make_items(project, 1, k=3)[-1].prompt_id  # what prompt erasure may erase
    job = ImportJob.objects.create(project=project, created_by=users["admin"], file_path="/nonexistent",
                                   original_name="prompts.jsonl", status="done",
                                   report={"added": 0, "skipped": 0})
    generation = GenerationRun.objects.create(project=project, backend="builtin-tiny", params={"k": 3},
                                              prompt_ids=[prompt])
    snapshot = DatasetSnapshot.objects.create(
        project=project, kinds=["pairs"], formats=["jsonl"], status="done", counts={"pairs": 1},
        files={SNAPSHOT_FILE: {"rows": 1, "sha256": "0" * 64, "bytes": 3}},
    )
    with override_settings(ARTIFACT_ROOT=artifact_root):
        folder = snapshot_dir(snapshot)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SNAPSHOT_FILE).write_text("{}\n")
    training = TrainingRun.objects.create(project=project, kind="reward", base_model="builtin-tiny",
                                          snapshot=snapshot, status="done", results={"accuracy": 0.5})
    for step in range(3):
        TrainingMetric.objects.create(run=training, step=step, values={"loss": 1.0 / (step + 1)})
    model = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1,
                                        base_model="builtin-tiny", source_run=training, snapshot=snapshot)
    hooks = [Webhook.objects.create(project=project, url="https://hooks.example.com/h", events=["snapshot.ready"],
                                    secret="0" * 64) for _ in range(2)]
    event = WebhookEvent.objects.create(project=project, type="snapshot.ready", payload={"id": "x"})
    delivery = WebhookDelivery.objects.create(hook=hooks[0], event=event, status="failed", attempts=6)
    push = HubPush.objects.create(project=project, snapshot=snapshot, repo_id="acme/fuzz", status="done")
    judge = Judge.objects.create(project=project, name="fuzz-judge", kind="reward_model", reward_version=model)
    judge_run = JudgeRun.objects.create(judge=judge, judge_version=1, status="done")
    return World(
        judge=judge.pk, judge_run=judge_run.pk,
        webhook=hooks[0].pk, spare_webhook=hooks[1].pk, webhook_delivery=delivery.pk, hub_push=push.pk,
        spare_prompt=spare_prompt, spare_user=spare_user.pk,
        project=project.pk, scratch_project=scratch.pk, scratch_member=scratch_member.pk, prompt=prompt,
        item=items[0].pk, assignment=on_screen.pk, import_job=job.pk, generation_run=generation.pk,
        snapshot=snapshot.pk, training_run=training.pk, model_version=model.pk,
        tokens={role: token_create(user=user, name="fuzz")[1] for role, user in users.items()},
        spare_tokens={role: token_create(user=user, name="spare")[0].pk for role, user in users.items()},
    )


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn serving config.wsgi on 127.0.0.1; its log keeps the tracebacks of any 500."""

    def __init__(self, *, database_url: str, redis_url: str, folder: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "gunicorn.log"
        self.artifact_root = folder / "artifacts"
        env = {
            **os.environ,
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": "127.0.0.1", "SECURE_SSL_REDIRECT": "0", "SECURE_HSTS_SECONDS": "0",
            "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0", "LOG_LEVEL": "WARNING",
            # No connection outlives a request: the test flushes and finally drops the database.
            "DATABASE_CONN_MAX_AGE": "0",
            "ARTIFACT_ROOT": str(self.artifact_root), "UPLOAD_ROOT": str(folder / "uploads"),
            **(extra_env or {}),
        }
        command = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "--bind",
                   f"127.0.0.1:{self.port}", "--workers", "1", "--threads", "2", "--timeout", "60",
                   "--graceful-timeout", "5", "--log-level", "warning"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.output()[-3000:]}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"gunicorn did not answer /healthz in 60 s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def errors(self) -> str:
        """The log without the 4xx lines the fuzzer asked for: what a 500 left behind."""
        quiet = ('"level": "WARNING"', '"level": "INFO"')
        return "\n".join(line for line in self.output().splitlines() if not any(q in line for q in quiet))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only its workers
                self.process.wait()


# --------------------------------------------------------------------------- the fuzzer


def fuzz_config(world: World, role: str, *, base_url: str, max_examples: int, seed: int) -> dict[str, Any]:
    """Schemathesis' configuration (its schemathesis.toml, as a dict) for one role.

    Every check stays on. The inputs are steered: path ids point at the seeded rows, and
    removing a member at a scratch project, so it cannot take a role away from the
    operations after it. DELETE /api/projects/{id}/ is not steered: the fuzzed project
    holds labels, so deleting it answers 409 and keeps it, and the stateful phase deletes
    the projects it created. Where a check is narrowed, for a false positive by design,
    the reason is inline."""
    # Schema-valid input that a rule the schema cannot state refuses with a 400 (a
    # cross-field or referential rule, or wrong credentials): positive_data_acceptance
    # accepts a 400 there, and only there. Its 5xx, schema and negative checks still apply.
    domain_rule_400 = {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "401", "403",
                                                                          "404", "409", "429", "5xx"]}}
    return {
        "base-url": base_url,
        "seed": seed,
        "workers": 1,
        # No replay of an earlier run's requests (from .schemathesis/): the same seed, the same run.
        "cache": {"enabled": False},
        "headers": {"Authorization": f"Token {world.tokens[role]}"},
        # Schemathesis' default list plus 414: gunicorn refuses a request line over 4094
        # bytes (a huge query string) before Django sees it, which rejects it all the same.
        "checks": {"negative_data_rejection": {"expected-statuses": [
            "400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]}},
        "generation": {
            "max-examples": max_examples,
            "database": "none",
            # The schema offers session cookie OR token. Generated security parameters add a
            # random `sessionid` cookie next to our valid token; DRF then (rightly) signs the
            # request in with the token, which ignored_auth reads as "accepts invalid auth".
            # Without them, ignored_auth still removes our token and sends a bad one for
            # every operation and expects a 401/403 each time.
            "with-security-parameters": False,
        },
        "parameters": {
            "project_id": world.project, "prompt_id": world.prompt, "item_id": world.item,
            "assignment_id": world.assignment, "import_id": world.import_job,
            "snapshot_id": world.snapshot, "version_id": world.model_version, "name": SNAPSHOT_FILE,
            "hook_id": world.webhook, "delivery_id": world.webhook_delivery, "push_id": world.hub_push,
            "judge_id": world.judge,
        },
        # One entry per operation, matched by its name: Schemathesis ORs the include-*
        # filters of an entry, so include-path + include-method would match either.
        "operations": [
            {"include-path-regex": "^/api/generation-runs/", "parameters": {"run_id": world.generation_run}},
            {"include-path-regex": "^/api/training-runs/", "parameters": {"run_id": world.training_run}},
            {"include-path-regex": "^/api/judge-runs/", "parameters": {"run_id": world.judge_run}},
            {"include-name": "DELETE /api/projects/{project_id}/members/{user_id}/",
             "parameters": {"project_id": world.scratch_project, "user_id": world.scratch_member}},
            # Deleting the webhook the other operations use would turn them into 404s.
            {"include-name": "DELETE /api/webhooks/{hook_id}", "parameters": {"hook_id": world.spare_webhook}},
            # Erasing the seeded prompt, or an account whose token signs the requests, would
            # turn the later calls into 404s and 401s: erasure gets rows of its own.
            {"include-path-regex": "^/api/prompts/[^/]+/erasure$", "parameters": {"prompt_id": world.spare_prompt}},
            {"include-path-regex": "^/api/users/[^/]+/erasure$", "parameters": {"user_id": world.spare_user}},
            # Revoking the token the fuzzer signs in with would turn every later call into a 403.
            {"include-name": "DELETE /api/auth/tokens/{token_id}",
             "parameters": {"token_id": world.spare_tokens[role]}},
            # Which passwords are right (or strong enough); which usernames exist (or are
            # taken); which candidate ids an item holds and whether it asks for a ranking or
            # a written answer; which backends need a model; that a snapshot id is a built
            # snapshot of this project; that `since` is before `until`; which file names
            # are importable; which hosts webhooks may reach; whether Hub pushes are on; that
            # an erasure's confirmation names the prompt, that a snapshot to rebuild held
            # erased data, that an account is not erased already; that a guideline id exists
            # and is shared or the project's own, that an import follows a finished dry run
            # once, that an invite was not used.
            *({"include-name": name, "checks": domain_rule_400} for name in (
                "POST /api/projects/", "PATCH /api/projects/{project_id}/", "POST /api/imports/{import_id}/import",
                "POST /api/invites/{invite_id}/revoke",
                "POST /api/auth/token", "POST /api/users/", "PUT /api/projects/{project_id}/members/",
                "POST /api/assignments/{assignment_id}/ranking", "POST /api/assignments/{assignment_id}/demonstration",
                "POST /api/assignments/{assignment_id}/revision",
                "POST /api/projects/{project_id}/generation-runs", "POST /api/projects/{project_id}/training-runs",
                "POST /api/projects/{project_id}/datasets", "POST /api/projects/{project_id}/imports",
                "POST /api/projects/{project_id}/webhooks", "PATCH /api/webhooks/{hook_id}",
                "POST /api/datasets/{snapshot_id}/hub-push", "POST /api/prompts/{prompt_id}/erasure",
                "POST /api/datasets/{snapshot_id}/rebuild", "POST /api/users/{user_id}/erasure",
                # Which endpoints the operator configured and what a judge may name; a run
                # of a paused judge; items of this project.
                "POST /api/projects/{project_id}/judges", "PATCH /api/judges/{judge_id}",
                "POST /api/judges/{judge_id}/runs")),
            *([] if role == "annotator" else [{
                # Fetch and authorize first: someone else's assignment answers 404 before
                # its headers are read, so a missing Idempotency-Key cannot get a 400 there.
                "include-path-regex": "^/api/assignments/",
                "checks": {"missing_required_header": {"expected-statuses": ["400", "401", "403", "404", "406",
                                                                             "415", "422"]}},
            }]),
        ],
    }


@dataclass
class RoleResult:
    role: str
    operations: int
    operations_tested: int
    cases: int
    failures: int
    errors: int
    seconds: float
    cases_by_phase: dict[str, int] = field(default_factory=dict)
    report: str = ""

    def summary(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "report"}


def fuzz_role(role: str, config: dict[str, Any], schema_url: str) -> RoleResult:
    """Run Schemathesis' engine (what `schemathesis run` runs) with `config`; collect the
    statistics the CLI prints and the failures in its words, with a curl line each."""
    import schemathesis
    from schemathesis.engine import events, from_schema
    from schemathesis.engine.statistic import Statistic

    started = time.monotonic()
    schema = schemathesis.openapi.from_url(schema_url, config=schemathesis.Config.from_dict(config))
    operations = sum(1 for _ in schema.get_all_operations())
    statistic = Statistic()
    errors: list[str] = []
    by_phase: dict[str, int] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
            by_phase[event.phase.value] = by_phase.get(event.phase.value, 0) + len(event.recorder.cases)
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    lines: list[str] = []
    for label, groups in statistic.failures.items():
        for group in groups.values():
            lines.append(f"--- {role}: {label}")
            lines.append(group.format(index=None, curl=group.code_sample, config=schema.config.output))
    lines.extend(f"--- {role}: error: {error}" for error in errors)
    return RoleResult(
        role=role, operations=operations, operations_tested=len(statistic.tested_operations),
        cases=statistic.total_cases, failures=statistic.total_failures, errors=len(errors),
        seconds=round(time.monotonic() - started, 1), cases_by_phase=by_phase, report="\n".join(lines),
    )


# --------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def server(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    from tests.integration import conftest as integration

    with django_db_blocker.unblock():
        database_url = integration.test_database_url()
    server = Server(database_url=database_url, redis_url=os.environ["REDIS_URL"],
                    folder=tmp_path_factory.mktemp("fuzz-server"))
    yield server
    server.stop()
    purge_queues()


def purge_queues() -> None:
    """The tasks the fuzzer's requests enqueued (imports, runs) have no worker here: drop
    them, so no later worker picks them up."""
    from config.celery import app

    app.control.purge()


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_passes_default_checks(role: str, server: Server, transactional_db: None,
                                               record_property: pytest.RecordProperty) -> None:
    world = seed_world(server.artifact_root)
    config = fuzz_config(world, role, base_url=server.base_url, max_examples=FUZZ_EXAMPLES, seed=FUZZ_SEED)

    result = fuzz_role(role, config, f"{server.base_url}/api/schema/?format=json")

    record_property("fuzz", json.dumps(result.summary()))
    print(json.dumps(result.summary()))
    assert result.failures == 0 and result.errors == 0, (
        f"{result.failures} check failures, {result.errors} errors for {role} "
        f"({result.cases} cases over {result.operations} operations)\n{result.report}\n"
        f"--- gunicorn's log, errors only (the traceback of any 500):\n{server.errors()[-8000:] or '(none)'}"
    )
    assert result.operations >= 40, "the schema lost operations"
    assert result.operations_tested == result.operations, "some operations were never exercised"
    assert result.cases_by_phase.get("coverage", 0) > result.operations, result.cases_by_phase
    assert result.cases_by_phase.get("fuzzing", 0) > result.operations, result.cases_by_phase
