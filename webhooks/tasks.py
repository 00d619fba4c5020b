"""Webhook tasks (default queue): one delivery attempt per message, and the beat-driven
re-send of deliveries whose message was lost. Both carry ids only."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="webhooks.tasks.deliver", ignore_result=True)
def deliver(delivery_id: int) -> None:
    from webhooks.delivery import delivery_attempt

    delivery_attempt(delivery_id)


@shared_task(name="webhooks.tasks.resend_due_deliveries", ignore_result=True)
def resend_due_deliveries() -> int:
    from webhooks.delivery import deliveries_resend_due

    return deliveries_resend_due()
