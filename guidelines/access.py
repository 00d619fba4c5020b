"""Who may read and who may change a guideline (fetch and authorize in one call)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404

from core.access import User, projects_for
from guidelines.models import Guideline
from guidelines.services import guideline_projects
from labeling.models import Role


def guidelines_for(user: User) -> QuerySet[Guideline]:
    """Guidelines a console user may read: shared ones and those of their projects."""
    projects = projects_for(user, min_role=Role.REVIEWER)
    return Guideline.objects.filter(
        Q(project__isnull=True) | Q(project__in=projects) | Q(projects__in=projects)
    ).distinct()


def guideline_edit_problem(user: User, guideline: Guideline) -> str | None:
    """Why `user` may not change `guideline` (drafts, publishing), or None when they may.

    A guideline binds every project that uses it: a major version gates all their
    annotators. So changing it takes staff, or an admin of every project it binds (those
    that use it and the one that owns it); one no project uses yet, staff. The reason
    names no project the user cannot see, only how many."""
    if user.is_authenticated and user.is_staff:
        return None
    bound = set(guideline_projects(guideline=guideline).values_list("pk", flat=True))
    if not bound:
        return "Read-only: only staff can change a shared guideline that no project uses yet."
    admin_of = set(projects_for(user, min_role=Role.ADMIN).filter(pk__in=bound).values_list("pk", flat=True))
    others = len(bound - admin_of)
    if others:
        return (f"Read-only: you are not an admin of {others} of the {len(bound)} projects this guideline "
                "binds. Only staff, or an admin of every project that uses it, can change it.")
    return None


def guideline_for(user: User, guideline_id: int, *, edit: bool = False) -> Guideline:
    """A guideline the user may read (404 otherwise); with `edit`, one they may change
    (403 otherwise, with guideline_edit_problem's reason)."""
    guideline = guidelines_for(user).filter(pk=guideline_id).first()
    if guideline is None:
        raise Http404("No such guideline.")
    guideline = Guideline.objects.get(pk=guideline.pk)
    if edit and (problem := guideline_edit_problem(user, guideline)):
        raise PermissionDenied(problem)
    return guideline
