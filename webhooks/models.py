"""A project's webhooks, the events that happened, and one delivery per (hook, event).

An event is stored once, with the id receivers see in X-Ordinal-Event-Id; each hook that
subscribes to its type gets one delivery row (unique on hook and event), so retries and
redeliveries send that same event id again and never a new one. Every attempt leaves a
row in the delivery log: status code, latency and at most RESPONSE_EXCERPT_BYTES of the
answer (never the whole body).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class EventType(models.TextChoices):
    IMPORT_FINISHED = "import.finished"
    GENERATION_FINISHED = "generation.finished"
    SNAPSHOT_READY = "snapshot.ready"
    TRAINING_FINISHED = "training.finished"
    MODEL_PROMOTED = "model.promoted"
    ITEM_DISPUTED = "item.disputed"


class Webhook(models.Model):
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=500, help_text="On a host in WEBHOOK_ALLOWED_HOSTS.")
    events = models.JSONField(help_text="The event types sent to it.")
    secret = models.CharField(max_length=64, help_text="Signs every body (HMAC-SHA256); shown once.")
    active = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of project {self.project_id}"


class WebhookEvent(models.Model):
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=32, choices=EventType.choices)
    payload = models.JSONField(help_text="The JSON body sent, byte for byte the same on every attempt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"        # queued, or waiting for its next attempt
        SUCCEEDED = "succeeded"    # a 2xx answer
        FAILED = "failed"          # out of attempts, or the target is no longer allowed

    hook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Due time of the next attempt; while an attempt is in flight, the time its claim
    # lapses (a second task finds it in the future and does nothing).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_latency_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["hook", "event"], name="webhook_delivery_once_per_event"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_due")]


class WebhookAttempt(models.Model):
    """One POST of a delivery: the log the console shows."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    response_excerpt = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
