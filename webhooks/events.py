"""Emit an event: stored once with its id, one delivery per subscribed hook, each sent by
a task after the surrounding transaction commits. Called where the thing happens (no
signals): the services that finish imports and runs, promote models, dispute items."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from labeling.models import Project
from webhooks.models import EventType, Webhook, WebhookDelivery, WebhookEvent

logger = logging.getLogger(__name__)


def event_emit(*, project: Project, type: EventType | str, data: dict[str, Any], path: str) -> WebhookEvent | None:
    """Record `type` for the project's active hooks that subscribe to it and queue one
    delivery each; None (and no row) when no hook listens. `data` holds ids, `path` is
    the API path of the thing (the body's `link`). A failure here is logged and never
    undoes the caller's change: webhooks report what happened, they are not part of it."""
    try:
        with transaction.atomic():
            return _emit(project, str(type), data, path)
    except Exception:  # a notification must not fail an import, a run or a promotion
        logger.exception("webhook event %s of project %s was not recorded", type, project.pk)
        return None


def _emit(project: Project, type: str, data: dict[str, Any], path: str) -> WebhookEvent | None:
    from webhooks.delivery import delivery_enqueue

    hooks = [hook for hook in Webhook.objects.filter(project=project, active=True) if type in hook.events]
    if not hooks:
        return None
    event = WebhookEvent(project=project, type=type)
    event.payload = {
        "id": str(event.event_id), "type": type, "created_at": timezone.now().isoformat(),
        "project": {"id": project.pk, "slug": project.slug}, "data": data,
        "link": f"{settings.PUBLIC_BASE_URL}{path}",
    }
    event.save()
    for hook in hooks:
        delivery = WebhookDelivery.objects.create(hook=hook, event=event, next_attempt_at=timezone.now())
        delivery_enqueue(delivery.pk)
    return event


# Per kind of run: the event its end sends, the data key of its id, its API path, and
# whether only a run that ended done sends it (a snapshot is "ready" or nothing).
RUN_EVENTS = {
    "ImportJob": (EventType.IMPORT_FINISHED, "import", "/api/imports/{id}", False),
    "GenerationRun": (EventType.GENERATION_FINISHED, "generation_run", "/api/generation-runs/{id}", False),
    "DatasetSnapshot": (EventType.SNAPSHOT_READY, "snapshot", "/api/datasets/{id}", True),
    "TrainingRun": (EventType.TRAINING_FINISHED, "training_run", "/api/training-runs/{id}", False),
}


def run_finished_emit(run: Any) -> WebhookEvent | None:
    """The event of a run a worker just worked on, if it has ended (done, failed or
    cancelled): called by the run's task once the service returns."""
    kind = type(run).__name__
    event_type, key, path, done_only = RUN_EVENTS[kind]
    run.refresh_from_db()
    if not run.is_finished or (done_only and run.status != "done"):
        return None
    data: dict[str, Any] = {key: run.pk, "status": run.status, "error": run.error[:500]}
    if kind == "TrainingRun":
        data.update(kind=run.kind, snapshot=run.snapshot_id, model_version=run.progress.get("model_version"))
    elif kind == "DatasetSnapshot":
        data.update(counts=run.counts)
    elif kind == "ImportJob":
        data.update({name: run.report[name] for name in ("rows", "invalid", "prompts_added", "candidates_added",
                                                          "items_added") if name in run.report})
    return event_emit(project=run.project, type=event_type, data=data, path=path.format(id=run.pk))
