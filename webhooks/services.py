"""Writes of the webhooks app: register, change and delete a project's hooks (audited),
and redeliver one delivery (the same event id, audited).

A hook's URL must name a host the operator allows (WEBHOOK_ALLOWED_HOSTS): the server
never sends to a place a user alone chose. The URL is checked again before every
attempt, so a host the operator removed stops receiving at once.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from core.audit import audit
from core.errors import DomainError
from labeling.models import Project
from webhooks.models import EventType, Webhook, WebhookDelivery

MAX_HOOKS_PER_PROJECT = 20


def host_allowed(host: str) -> bool:
    """Whether WEBHOOK_ALLOWED_HOSTS lets a webhook name `host` (".example.com" allows
    example.com and its sub-domains, as Django's ALLOWED_HOSTS does)."""
    host = host.lower().rstrip(".")
    for entry in settings.WEBHOOK_ALLOWED_HOSTS:
        entry = entry.lower()
        if entry.startswith("."):
            if host == entry[1:] or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def url_problem(url: str) -> str | None:
    """Why a webhook may not send to `url`, or None."""
    if not settings.WEBHOOK_ALLOWED_HOSTS:
        return "webhooks are off: the operator lists the hosts they may reach in WEBHOOK_ALLOWED_HOSTS"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "use an http(s) URL with a host"
    if parts.username or parts.password or parts.fragment:
        return "a webhook URL carries no credentials or fragment (the signature authenticates it)"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "a URL has no spaces or control characters"
    if not host_allowed(parts.hostname):
        return (f"{parts.hostname} is not among the hosts webhooks may reach "
                f"({', '.join(settings.WEBHOOK_ALLOWED_HOSTS)}); the operator sets WEBHOOK_ALLOWED_HOSTS")
    return None


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
