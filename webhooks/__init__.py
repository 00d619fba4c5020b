"""Webhooks: a project's admins register HTTPS endpoints; events (an import finished, a
snapshot is ready, a model was promoted, ...) are POSTed to them, signed, by a Celery
task with retries. Destinations are limited to hosts the operator allows
(WEBHOOK_ALLOWED_HOSTS), and every connection goes through the same address check as
generation endpoints (training/engine/safe_http.py).
"""
