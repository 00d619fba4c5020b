"""IDOR matrix: every API route that takes an id, called by each role of project A with
project B's ids and every method, answers 404 (or 403/405) and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import ApiToken
from accounts.tokens import token_create
from judges.models import Judge, JudgeRun
from labeling.models import (
    Assignment,
    AuditEvent,
    Candidate,
    ImportJob,
    Invite,
    Item,
    Membership,
    Project,
    Prompt,
    Ranking,
    Role,
)
from labeling.services.assignment import next_item
from tests.factories import MembershipFactory, UserFactory, make_items
from training.models import DatasetSnapshot, GenerationRun, HubPush, ModelVersion
from webhooks.models import Webhook, WebhookDelivery, WebhookEvent

METHODS = ["get", "post", "put", "patch", "delete"]


def api_patterns() -> list[tuple[str, URLPattern]]:
    found = []

    def walk(patterns: list, prefix: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and entry.name:
                found.append((prefix + str(entry.pattern), entry))

    walk(get_resolver().url_patterns, "")
    return [(route, p) for route, p in found if route.startswith("api/") and p.pattern.converters]


@pytest.fixture
def other_ids(other_project: Project) -> dict[str, object]:
    stranger = UserFactory(username="b-annotator")
    MembershipFactory(user=stranger, project=other_project, role=Role.ANNOTATOR)
    item = make_items(other_project, 1)[0]
    assignment = next_item(annotator=stranger, project=other_project)
    prompt = Prompt.objects.filter(project=other_project).first()
    job = ImportJob.objects.create(project=other_project, file_path="/x", original_name="a.jsonl")
    run = GenerationRun.objects.create(project=other_project, backend="builtin-tiny", params={})
    snapshot = DatasetSnapshot.objects.create(project=other_project, kinds=["pairs"],
                                              formats=["jsonl"], files={"pairs-train.jsonl": {}})
    version = ModelVersion.objects.create(project=other_project, kind="reward", name="rm", version=1,
                                          base_model="m")
    token, _ = token_create(user=stranger, name="theirs")
    push = HubPush.objects.create(project=other_project, snapshot=snapshot, repo_id="b/x")
    hook = Webhook.objects.create(project=other_project, url="https://hooks.example.com/", events=["snapshot.ready"])
    event = WebhookEvent.objects.create(project=other_project, type="snapshot.ready", payload={})
    delivery = WebhookDelivery.objects.create(hook=hook, event=event, status="failed")
    invite = Invite.objects.create(project=other_project, role="annotator", token_hash="b" * 64,
                                   expires_at=timezone.now() + timedelta(days=1))
    judge = Judge.objects.create(project=other_project, name="theirs", kind="reward_model", reward_version=version)
    # Judge runs share the `run_id` converter: the other project's judge run gets the same id.
    JudgeRun.objects.create(pk=run.pk, judge=judge, judge_version=1)
    return {"judge_id": judge.pk, "invite_id": invite.pk, "job_id": job.pk, "what": "generate", "push_id": push.pk,
            "hook_id": hook.pk, "delivery_id": delivery.pk,
            "version_id": version.pk, "project_id": other_project.pk, "prompt_id": prompt.pk, "import_id": job.pk,
            "assignment_id": assignment.pk, "item_id": item.pk, "run_id": run.pk,
            "snapshot_id": snapshot.pk, "user_id": stranger.pk, "name": "pairs-train.jsonl",
            "token_id": token.pk}


def state() -> tuple:
    return (
        list(Project.objects.order_by("id").values_list("name", "overlap", "status")),
        Membership.objects.count(), Prompt.objects.count(), Candidate.objects.count(),
        list(Item.objects.order_by("id").values_list("status", "required_rankings")),
        list(Assignment.objects.order_by("id").values_list("status", flat=True)),
        Ranking.objects.count(), ImportJob.objects.count(), GenerationRun.objects.count(),
        DatasetSnapshot.objects.count(),
        list(ModelVersion.objects.order_by("id").values_list("is_current", flat=True)),
        ApiToken.objects.count(), HubPush.objects.count(),
        list(Webhook.objects.values_list("url", "active", "events")),
        list(WebhookDelivery.objects.values_list("status", "attempts")),
        list(Invite.objects.values_list("revoked_at", "used_at")),
        list(Project.objects.order_by("id").values_list("guideline", "lease_minutes", "k")),
        list(Judge.objects.values_list("name", "version", "active")),
        list(JudgeRun.objects.values_list("status", flat=True)),
    )


@pytest.mark.parametrize("role", ["annotator", "reviewer", "project_admin"])
def test_other_projects_ids_are_404_for_every_route_and_method(request, as_user, role,  # noqa: ANN001
                                                               other_ids) -> None:
    user = request.getfixturevalue(role)
    client = as_user(user)
    before = state()
    checked = 0

    for _route, pattern in api_patterns():
        url = reverse(pattern.name, kwargs={k: other_ids[k] for k in pattern.pattern.converters})
        for method in METHODS:
            response = getattr(client, method)(url, {}, format="json")
            assert response.status_code in {403, 404, 405}, (role, method, url, response.status_code)
            checked += 1

    assert state() == before
    assert AuditEvent.objects.exclude(action="token.create").count() == 0
    assert checked >= 5 * 15


def test_the_matrix_covers_every_id_route() -> None:
    names = {p.name for _, p in api_patterns()}

    assert {"project-detail", "prompt-list", "candidate-list", "import-detail", "next-item",
            "ranking-create", "assignment-skip", "item-agreement", "generation-run-detail",
            "snapshot-file", "member-remove", "training-run-detail", "training-run-cancel",
            "model-version-promote", "api-token-revoke", "judge-detail", "judge-run-list",
            "judge-run-cancel", "judge-figures"} <= names


def console_patterns() -> list[tuple[str, URLPattern]]:
    found = []

    def walk(patterns: list, prefix: str, namespace: str) -> None:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + str(entry.pattern), entry.namespace or namespace)
            elif isinstance(entry, URLPattern) and entry.name:
                found.append((prefix + str(entry.pattern), f"{namespace}:{entry.name}" if namespace else entry.name,
                              entry))

    walk(get_resolver().url_patterns, "", "")
    return [(name, p) for route, name, p in found if route.startswith("console/") and p.pattern.converters]


@pytest.mark.parametrize("role", ["annotator", "reviewer", "project_admin"])
def test_console_pages_of_other_projects_are_404_and_change_nothing(request, role, other_ids) -> None:  # noqa: ANN001
    """The console's pages and their forms (settings, upload, members, launcher, reward
    models...), GET and POST with the other project's ids: 403 or 404, nothing changes."""
    client = Client()
    client.force_login(request.getfixturevalue(role))
    before = state()
    checked = 0
    for name, pattern in console_patterns():
        kwargs = {k: other_ids.get(k, other_ids.get("project_id")) for k in pattern.pattern.converters}
        url = reverse(name, kwargs=kwargs)
        form = {"action": "remove", "user": other_ids["user_id"], "promote": other_ids["version_id"], "name": "x",
                "slug": "x", "invite": other_ids["invite_id"], "k": 2, "source": "builtin:builtin-tiny"}
        for method, data in (("get", {}), ("post", form)):
            response = getattr(client, method)(url, data)
            assert response.status_code in {403, 404, 405}, (role, method, url, response.status_code)
            checked += 1
    assert state() == before
    assert AuditEvent.objects.exclude(action="token.create").count() == 0
    names = {name for name, _ in console_patterns()}
    assert {"console:settings", "console:upload", "console:upload-job", "console:upload-status", "console:members",
            "console:runs-status", "console:launch", "console:reward-models"} <= names
    assert checked >= 2 * 20
