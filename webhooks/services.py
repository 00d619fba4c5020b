"""Writes of the webhooks app: register, change and delete a project's hooks (audited),
and redeliver one delivery (the same event id, audited).

A hook's URL must name a host the operator allows (WEBHOOK_ALLOWED_HOSTS): the server
never sends to a place a user alone chose. The URL is checked again before every
attempt, so a host the operator removed stops receiving at once.
"""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from labeling.models import Project
from webhooks.models import EventType, Webhook, WebhookDelivery
from webhooks.targets import url_problem

MAX_HOOKS_PER_PROJECT = 20


def _check(url: str, events: list[str]) -> None:
    problem = url_problem(url)
    if problem:
        raise DomainError(f"url: {problem}")
    unknown = sorted(set(events) - set(EventType.values))
    if not events or unknown:
        raise DomainError(f"events must be some of {', '.join(EventType.values)}"
                          + (f"; unknown: {', '.join(unknown)}" if unknown else ""))


def _described(hook: Webhook) -> dict:
    return {"url": hook.url, "events": hook.events, "active": hook.active, "description": hook.description}


@transaction.atomic
def webhook_create(*, project: Project, url: str, events: list[str], actor: AbstractBaseUser,
                   description: str = "", active: bool = True) -> Webhook:
    """A new hook with a fresh secret (returned on the row: show it once)."""
    _check(url, events)
    if Webhook.objects.filter(project=project).count() >= MAX_HOOKS_PER_PROJECT:
        raise DomainError(f"a project has at most {MAX_HOOKS_PER_PROJECT} webhooks")
    hook = Webhook.objects.create(
        project=project, url=url, events=sorted(set(events), key=EventType.values.index),
        secret=secrets.token_hex(32), active=active, description=description,
        created_by=actor if actor.is_authenticated else None)
    audit(actor=actor, project=project, action="webhook.create", target=hook, after=_described(hook))
    return hook


@transaction.atomic
def webhook_update(*, hook: Webhook, actor: AbstractBaseUser, url: str | None = None,
                   events: list[str] | None = None, active: bool | None = None,
                   description: str | None = None) -> Webhook:
    before = _described(hook)
    hook.url = hook.url if url is None else url
    hook.events = hook.events if events is None else sorted(set(events), key=EventType.values.index)
    hook.active = hook.active if active is None else active
    hook.description = hook.description if description is None else description
    _check(hook.url, hook.events)
    hook.save()
    audit(actor=actor, project=hook.project, action="webhook.update", target=hook, before=before,
          after=_described(hook))
    return hook


@transaction.atomic
def webhook_delete(*, hook: Webhook, actor: AbstractBaseUser) -> None:
    audit(actor=actor, project=hook.project, action="webhook.delete", target=hook, before=_described(hook))
    hook.delete()


@transaction.atomic
def delivery_redeliver(*, delivery: WebhookDelivery, actor: AbstractBaseUser) -> WebhookDelivery:
    """Send the delivery's event again, with its own event id (receivers dedupe on it),
    with a fresh set of attempts."""
    from webhooks.delivery import delivery_enqueue

    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), last_error="")
    delivery.refresh_from_db()
    audit(actor=actor, project=delivery.hook.project, action="webhook.redeliver", target=delivery,
          after={"event": str(delivery.event.event_id), "type": delivery.event.type})
    delivery_enqueue(delivery.pk)
    return delivery
