"""Delivering one (hook, event): sign, POST through the address-checked client, log the
attempt, and retry with exponential backoff.

Signature: X-Ordinal-Signature is "v1=" + hex HMAC-SHA256(hook secret, "<timestamp>.<body>")
with the X-Ordinal-Timestamp header (Unix seconds, set per attempt), so a receiver can
refuse a replay outside its window; X-Ordinal-Event-Id is the same on every attempt and
redelivery, so it can drop duplicates (ordinal_client.webhooks.verify_signature does both
checks). The body is the same bytes every time.

Idempotent: the task carries a delivery id, and an attempt starts with a conditional
UPDATE that claims the row until its lease lapses, so a duplicate or early task does
nothing. A delivery whose task was lost is sent again by `deliveries_resend_due` (beat).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEvent
from webhooks.targets import url_problem

logger = logging.getLogger(__name__)
RESPONSE_EXCERPT_BYTES = 200  # of a receiver's answer, kept for the log; never more
ERROR_CHARS = 300
USER_AGENT = "Ordinal-Webhooks/1"
RESEND_AFTER = timedelta(seconds=60)  # a due delivery untouched this long lost its task


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def event_body(event: WebhookEvent) -> bytes:
    return json.dumps(event.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_enqueue(delivery_id: int, *, countdown: float | None = None) -> None:
    """Send the delivery's task once the surrounding transaction commits."""
    transaction.on_commit(lambda: _send_task(delivery_id, countdown))


def _send_task(delivery_id: int, countdown: float | None) -> None:
    from kombu.exceptions import OperationalError

    from config.celery import app

    try:  # by name: the task module imports this one
        app.tasks["webhooks.tasks.deliver"].apply_async(args=[delivery_id], countdown=countdown)
    except OperationalError as exc:  # the broker is down: the resend sweep sends it later
        logger.warning("broker unavailable, webhook delivery %s left for the sweep: %s", delivery_id, exc)


def retry_delay(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed attempt: WEBHOOK_RETRY_SECONDS, doubled each time."""
    return timedelta(seconds=settings.WEBHOOK_RETRY_SECONDS * 2 ** max(0, attempts - 1))


def delivery_attempt(delivery_id: int) -> WebhookDelivery | None:
    """Make the delivery's next attempt if it is due; None when it is not (done, or
    another task holds it, or its time has not come)."""
    now = timezone.now()
    lease = now + timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    claimed = WebhookDelivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        pk=delivery_id, status=WebhookDelivery.Status.PENDING,
    ).update(next_attempt_at=lease, attempts=F("attempts") + 1)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("hook", "event").get(pk=delivery_id)
    outcome = _post(delivery)
    final = outcome.pop("final", False)
    WebhookAttempt.objects.create(delivery=delivery, number=delivery.log.count() + 1, **outcome)
    fields = {"last_status_code": outcome["status_code"], "last_latency_ms": outcome["latency_ms"],
              "last_error": outcome["error"]}
    code = outcome["status_code"]
    if code is not None and 200 <= code < 300:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, next_attempt_at=None)
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS or final:
        fields.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
    else:
        delay = retry_delay(delivery.attempts)
        fields.update(next_attempt_at=timezone.now() + delay)
        delivery_enqueue(delivery.pk, countdown=delay.total_seconds())
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    delivery.refresh_from_db()
    return delivery


def _post(delivery: WebhookDelivery) -> dict:
    """One POST; what the log keeps of it. `final` marks a failure no retry can fix."""
    hook = delivery.hook
    problem = "the webhook was turned off" if not hook.active else url_problem(hook.url)
    if problem:
        return {"status_code": None, "latency_ms": None, "error": problem[:ERROR_CHARS],
                "response_excerpt": "", "final": True}
    body = event_body(delivery.event)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-Ordinal-Event": delivery.event.type, "X-Ordinal-Event-Id": str(delivery.event.event_id),
        "X-Ordinal-Timestamp": str(timestamp), "X-Ordinal-Signature": signature(hook.secret, timestamp, body),
    }
    return send(hook.url, body, headers)


def send(url: str, body: bytes, headers: dict[str, str]) -> dict:
    """POST through the connect-time address check (training/engine/safe_http.py); reads
    at most RESPONSE_EXCERPT_BYTES of the answer."""
    import httpx

    from training.engine.safe_http import AddressRefused, checked_client

    started = time.monotonic()
    excerpt, code, error = b"", None, ""
    try:
        client = checked_client(allow_private=settings.WEBHOOK_ALLOW_PRIVATE, headers=headers,
                                timeout=httpx.Timeout(settings.WEBHOOK_TIMEOUT_SECONDS), max_connections=1)
        with client, client.stream("POST", url, content=body) as response:
            code = response.status_code
            for chunk in response.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= RESPONSE_EXCERPT_BYTES:
                    break
    except AddressRefused as exc:
        error = f"refused: the host {exc} (WEBHOOK_ALLOW_PRIVATE is off)"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    latency = round((time.monotonic() - started) * 1000)
    if code is not None and not 200 <= code < 300:
        error = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
    return {"status_code": code, "latency_ms": latency, "error": error[:ERROR_CHARS],
            "response_excerpt": excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", "replace")[:RESPONSE_EXCERPT_BYTES]}


def deliveries_resend_due(*, limit: int = 500) -> int:
    """Re-send the task of pending deliveries overdue by RESEND_AFTER (a lost message, a
    worker that died mid-attempt, a broker that was down); the claim makes extras harmless."""
    overdue = timezone.now() - RESEND_AFTER
    ids = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=overdue)
               .order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for delivery_id in ids:
        _send_task(delivery_id, None)
    return len(ids)
