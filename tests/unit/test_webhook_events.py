"""Each event is emitted where the thing happens: an import or a run that a worker ended,
a snapshot built, a model promoted, an item disputed."""

from __future__ import annotations

import io

import pytest
from django.test import override_settings

from core.runs import run_claim
from labeling.blind import tiers_as_shown
from labeling.models import Role
from labeling.services.assignment import next_item
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import MembershipFactory, UserFactory, make_items
from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingRun
from webhooks.models import EventType, Webhook, WebhookEvent


@pytest.fixture
def hook(project, settings) -> Webhook:  # noqa: ANN001 - pytest-django
    settings.WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]
    # The target is never reached in these tests: deliveries are not sent (no commit).
    return Webhook.objects.create(project=project, url="https://hooks.example.com/h", events=list(EventType.values),
                                  secret="0" * 64)


def events(type: str) -> list[WebhookEvent]:
    return list(WebhookEvent.objects.filter(type=type))


def test_an_import_that_ends_sends_import_finished(project, project_admin, as_user, hook,  # noqa: ANN001
                                                   django_capture_on_commit_callbacks, monkeypatch) -> None:
    monkeypatch.setattr("webhooks.delivery._send_task", lambda *args: None)  # no delivery here
    upload = io.BytesIO(b'{"prompt": "Name a colour."}\n{"prompt": "Name a tree."}\n')
    upload.name = "prompts.jsonl"
    with django_capture_on_commit_callbacks(execute=True):  # the (eager) import runs at commit
        response = as_user(project_admin).post(f"/api/projects/{project.pk}/imports", {"file": upload},
                                               format="multipart")

    [event] = events("import.finished")
    assert event.payload["data"]["import"] == response.json()["id"]
    assert event.payload["data"]["status"] == "done" and event.payload["data"]["prompts_added"] == 2
    assert event.payload["link"] == f"/api/imports/{response.json()['id']}"


def test_a_built_snapshot_sends_snapshot_ready(project, hook) -> None:  # noqa: ANN001
    from training.tasks import build_snapshot

    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"])

    with override_settings(PUBLIC_BASE_URL="https://ordinal.example.com"):
        build_snapshot(snapshot.pk)

    [event] = events("snapshot.ready")
    assert event.payload["data"] == {"snapshot": snapshot.pk, "status": "done", "error": "",
                                     "counts": {"pairs-train": 0}}
    assert event.payload["link"] == f"https://ordinal.example.com/api/datasets/{snapshot.pk}"


def test_a_failed_snapshot_is_not_ready(project, hook, monkeypatch) -> None:  # noqa: ANN001
    from core.runs import Run, run_finish
    from training.tasks import build_snapshot

    monkeypatch.setattr("training.snapshots.snapshot_build",
                        lambda snapshot: run_finish(snapshot, status=Run.Status.FAILED, error="disk full"))
    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"])

    build_snapshot(snapshot.pk)

    assert events("snapshot.ready") == []


def test_a_generation_run_that_ends_sends_generation_finished(project, hook) -> None:  # noqa: ANN001
    from training.tasks import generate_candidates

    run = GenerationRun.objects.create(project=project, backend="openai", endpoint="gone", model="m",
                                       params={"k": 2}, prompt_ids=[])

    generate_candidates(run.pk)

    [event] = events("generation.finished")
    assert event.payload["data"]["generation_run"] == run.pk and event.payload["data"]["status"] == "failed"
    assert "no longer configured" in event.payload["data"]["error"]


def test_a_training_run_that_ends_sends_training_finished(project, hook) -> None:  # noqa: ANN001
    from training.tasks import train_run

    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"], status="done",
                                              files={"pairs-train.jsonl": {"rows": 1, "sha256": "", "bytes": 1}})
    run = TrainingRun.objects.create(project=project, kind="reward", base_model="builtin-tiny", snapshot=snapshot,
                                     config={"model": "nowhere"}, artifact_path="/nonexistent/run")

    train_run(run.pk)

    [event] = events("training.finished")
    assert event.payload["data"]["training_run"] == run.pk and event.payload["data"]["status"] == "failed"
    assert event.payload["data"]["kind"] == "reward" and event.payload["data"]["snapshot"] == snapshot.pk


def test_a_run_another_worker_holds_sends_nothing(project, hook) -> None:  # noqa: ANN001
    from training.tasks import train_run

    run = TrainingRun.objects.create(project=project, kind="reward", base_model="x", config={})
    run_claim(TrainingRun, run.pk)  # claimed elsewhere: this task's claim fails

    train_run(run.pk)

    assert events("training.finished") == []


def test_promoting_a_model_sends_model_promoted(project, project_admin, as_user, hook) -> None:  # noqa: ANN001
    old = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="b",
                                      is_current=True)
    new = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=2, base_model="b")

    assert as_user(project_admin).post(f"/api/models/{new.pk}/promote", {}, format="json").status_code == 200

    [event] = events("model.promoted")
    assert event.payload["data"] == {"model_version": new.pk, "kind": "reward", "name": "rm", "version": 2,
                                     "previous": old.pk}


def test_a_refused_promotion_sends_nothing(project, project_admin, as_user, hook) -> None:  # noqa: ANN001
    version = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="b",
                                          warnings=["accuracy at chance"])

    assert as_user(project_admin).post(f"/api/models/{version.pk}/promote", {}, format="json").status_code == 409
    assert events("model.promoted") == []


def test_an_item_the_annotators_split_on_sends_item_disputed(project, hook) -> None:  # noqa: ANN001
    item = make_items(project, 1)[0]
    orders = [lambda c: c, lambda c: -c, lambda c: (c % 2, c)]
    for n, order in enumerate(orders):
        user = UserFactory(username=f"ranker{n}")
        MembershipFactory(user=user, project=project, role=Role.ANNOTATOR)
        assignment = next_item(annotator=user, project=project)
        ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=f"r{n}",
                       data=RankingInput(tiers=tiers_as_shown(assignment, [
                           [c] for c in sorted(assignment.display_order, key=order)])))

    [event] = events("item.disputed")
    item.refresh_from_db()
    assert item.status == "disputed"
    assert event.payload["data"]["item"] == item.pk and event.payload["data"]["agreement"] == item.agreement
    assert event.payload["link"] == f"/api/items/{item.pk}/agreement"


def test_a_hook_gets_only_the_events_it_subscribed_to(project, project_admin, as_user, hook) -> None:  # noqa: ANN001
    Webhook.objects.filter(pk=hook.pk).update(events=["snapshot.ready"])
    version = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="b")

    as_user(project_admin).post(f"/api/models/{version.pk}/promote", {}, format="json")

    assert not WebhookEvent.objects.exists()
