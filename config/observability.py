"""Request ids, JSON logs and the Prometheus metrics Ordinal exports.

- `RequestIdMiddleware` takes X-Request-ID from the proxy (or makes one), returns it,
  and puts it on every log line written while the request runs.
- `JsonFormatter` writes one JSON object per line; secrets never reach it because
  nothing logs request bodies, headers or settings.
- `OrdinalCollector` reads gauges at scrape time from the database and the broker:
  queue depth per queue, runs by state, items by status, active annotators, the
  duration of recently finished runs. Request latency comes from django-prometheus.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.http import HttpRequest, HttpResponse

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        status = getattr(record, "status_code", None)
        if status is not None:
            entry["status"] = status
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class OrdinalCollector:
    """Prometheus collector evaluated on each scrape of /metrics."""

    def collect(self) -> Iterator[object]:
        from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F
        from django.utils import timezone
        from prometheus_client.core import GaugeMetricFamily

        from core.runs import run_models
        from labeling.models import Item, Ranking

        depth = GaugeMetricFamily("ordinal_queue_depth", "Messages waiting per Celery queue",
                                  labels=["queue"])
        for queue, size in queue_depths().items():
            depth.add_metric([queue], size)
        yield depth

        runs = GaugeMetricFamily("ordinal_runs", "Background runs by kind and status",
                                 labels=["kind", "status"])
        durations = GaugeMetricFamily(
            "ordinal_run_duration_seconds_avg",
            "Mean duration of runs finished in the last hour", labels=["kind"])
        hour_ago = timezone.now() - timedelta(hours=1)
        for model in run_models():
            kind = model._meta.model_name
            for row in model.objects.values("status").annotate(n=Count("id")):
                runs.add_metric([kind, row["status"]], row["n"])
            took = model.objects.filter(finished_at__gte=hour_ago, started_at__isnull=False).aggregate(
                avg=Avg(ExpressionWrapper(F("finished_at") - F("started_at"),
                                          output_field=DurationField())))["avg"]
            durations.add_metric([kind], took.total_seconds() if took else 0.0)
        yield runs
        yield durations

        items = GaugeMetricFamily("ordinal_items", "Items by status", labels=["status"])
        for row in Item.objects.values("status").annotate(n=Count("id")):
            items.add_metric([row["status"]], row["n"])
        yield items

        active = Ranking.objects.filter(created_at__gte=timezone.now() - timedelta(minutes=15)) \
            .values("annotator_id").distinct().count()
        yield GaugeMetricFamily("ordinal_active_annotators",
                                "Annotators who submitted in the last 15 minutes", value=active)


def queue_depths() -> dict[str, int]:
    """Waiting messages per queue: Redis list lengths, or files for the filesystem broker."""
    from django.conf import settings

    from config.celery import app

    queues = [queue.name for queue in app.conf.task_queues]
    try:
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
            import os

            names = os.listdir(folder) if os.path.isdir(folder) else []
            return {queue: sum(f".{queue}.msg" in name for name in names) for queue in queues}
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            return {queue: int(client.llen(queue)) for queue in queues}
    except Exception:  # an unreachable broker shows as no data, not a failed scrape
        return {}


_registered = False


def register_collector() -> None:
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(OrdinalCollector())
        _registered = True
