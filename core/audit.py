"""The append-only audit log: every reviewer, admin and staff action writes one event, from
inside the service that makes the change (so the API, the console and the CLI record the
same thing), in the same transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from labeling.models import AuditEvent, Project

_origin: ContextVar[str] = ContextVar("audit_origin", default="")


@contextmanager
def audit_origin(origin: str) -> Iterator[None]:
    """Events written inside say where the action came from ("cli": a management
    command, which has no signed-in actor) in their note."""
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def audit(*, actor: AbstractBaseUser | None, project: Project | None, action: str, target: Any,
          before: Any = None, after: Any = None, note: str = "") -> AuditEvent:
    if _origin.get():
        note = f"origin: {_origin.get()}" + (f"; {note}" if note else "")
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        project=project, action=action, target_type=type(target).__name__.lower(),
        target_id=str(getattr(target, "pk", target)), before=before, after=after, note=note,
    )


def audit_events_for(*, projects: QuerySet[Project], action: str = "", actor: str = "") -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(Q(project__in=projects)).select_related("actor", "project")
    if action:
        events = events.filter(action__startswith=action)
    if actor:
        events = events.filter(actor__username=actor)
    return events.order_by("-id")
