"""Probes for orchestrators and monitoring: liveness, readiness (database, migrations,
broker) and the Prometheus exposition."""

from __future__ import annotations

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up (no dependency checks: a liveness probe)."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachable: 200 when both are, 503 naming what is not."""
    checks = {"database": _check_database(), "migrations": _check_migrations(),
              "broker": _check_broker()}
    ready = all(state == "ok" for state in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks},
                        status=200 if ready else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # any driver error means "not ready"
        return f"error: {type(exc).__name__}"


def _check_migrations() -> str:
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # no database means no answer
        return f"error: {type(exc).__name__}"
    return "ok" if not pending else f"error: {len(pending)} migrations not applied"


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, for `Authorization: Bearer <METRICS_TOKEN>` (compared in
    constant time) or a staff session. With METRICS_TOKEN unset it is closed: 404 to
    everyone but staff. The series name queues, run states and item counts."""
    import hmac

    from django.conf import settings
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    from config.observability import register_collector

    token = settings.METRICS_TOKEN or ""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    bearer_ok = bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
    if not (bearer_ok or (request.user.is_authenticated and request.user.is_staff)):
        if not token:
            raise Http404("Metrics are off: set METRICS_TOKEN.")
        return HttpResponse("metrics need Authorization: Bearer <METRICS_TOKEN>\n", status=403,
                            content_type="text/plain")
    register_collector()
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def _check_broker() -> str:
    from config.celery import app, ensure_broker_dirs

    try:
        ensure_broker_dirs()
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # kombu raises many kinds for an unreachable broker
        return f"error: {type(exc).__name__}"
