"""Fetch and authorize in one call, so no endpoint can forget the check.

One rule everywhere: an object outside the user's projects answers 404 (its existence
is not revealed); an action the user's role may not take inside a project answers 403.
Staff users are admins of every project.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from core import rows
from labeling.models import ROLE_RANK, Candidate, ImportJob, Membership, Project, Prompt, Role

User = AbstractBaseUser | AnonymousUser


def role_in(user: User, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_staff:
        return Role.ADMIN
    return (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True)
        .first()
    )


def sees_prompt_metadata(user: User, project: Project) -> bool:
    """Prompt metadata is for reviewers and admins; annotators see the prompt only."""
    role = role_in(user, project)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role.REVIEWER]


def projects_for(user: User, *, min_role: str = Role.ANNOTATOR) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[min_role]]
    return Project.objects.filter(memberships__user=user, memberships__role__in=roles)


def project_for(user: User, project_id: int | str, *, min_role: str = Role.ANNOTATOR) -> Project:
    """The project if the user belongs to it (404 otherwise) with at least `min_role`
    (403 otherwise). One query (it is on the annotators' hot path): the caller's
    membership comes along as `member_paused` (None for staff who aren't members)."""
    if not str(project_id).isdigit():
        raise Http404("No such project.")
    return _project_with_membership(user, min_role, pk=project_id)


def project_by_slug_for(user: User, slug: str, *, min_role: str = Role.ANNOTATOR) -> Project:
    """`project_for` by slug, in the same one query (the workspace page and its prefetch)."""
    return _project_with_membership(user, min_role, slug=slug)


def _project_with_membership(user: User, min_role: str, **lookup: object) -> Project:
    if not user.is_authenticated:
        raise Http404("No such project.")
    if connection.vendor == "postgresql":
        project = _project_row(user, **lookup)
    else:
        mine = Membership.objects.filter(project=OuterRef("pk"), user=user)
        project = Project.objects.filter(**lookup).annotate(
            member_role=Subquery(mine.values("role")[:1]),
            member_paused=Subquery(mine.values("paused")[:1]),
        ).first()
    role = Role.ADMIN if project is not None and user.is_staff else getattr(project, "member_role", None)
    if project is None or role is None:
        raise Http404("No such project.")
    if ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise PermissionDenied(f"This needs the {min_role} role in this project.")
    return project


def _project_row(user: User, *, pk: int | str | None = None, slug: str | None = None
                 ) -> Project | None:
    """PostgreSQL: the ORM query's row (by id or by slug) as one hand-written statement:
    on the annotators' hot path its compilation cost more than anything else in `next`
    but the claim (#19)."""
    column, value = ("id", int(pk)) if pk is not None else ("slug", slug)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.role, m.paused, {rows.select_list(Project, 'p')} FROM labeling_project p"  # noqa: S608 - no input in the SQL text
            " LEFT JOIN labeling_membership m ON m.project_id = p.id AND m.user_id = %s"
            f" WHERE p.{column} = %s", [user.pk, value])
        row = cursor.fetchone()
    if row is None:
        return None
    project = rows.instance(Project, row[2:])
    project.member_role, project.member_paused = row[0], row[1]  # one membership per user and project
    return project


def object_for(user: User, model: type, pk: int, *, min_role: str = Role.ANNOTATOR,
               what: str = "object", project_field: str = "project_id"):  # noqa: ANN201
    """Any row that belongs to a project, fetched for `user`: 404 when it does not exist
    or its project is not theirs, 403 below `min_role`. One helper for every id route."""
    row = model.objects.filter(pk=pk).values_list(project_field, flat=True).first()
    if row is None:
        raise Http404(f"No such {what}.")
    project_for(user, row, min_role=min_role)
    return model.objects.get(pk=pk)


def prompt_for(user: User, prompt_id: int, *, min_role: str = Role.ANNOTATOR) -> Prompt:
    return object_for(user, Prompt, prompt_id, min_role=min_role, what="prompt")


def candidates_for(user: User, project: Project) -> QuerySet[Candidate]:
    """Candidates carry provenance (model names), which annotators never see."""
    project_for(user, project.pk, min_role=Role.REVIEWER)
    return Candidate.objects.filter(prompt__project=project)


def import_job_for(user: User, job_id: int) -> ImportJob:
    return object_for(user, ImportJob, job_id, min_role=Role.ADMIN, what="import")


def is_console_user(user: User) -> bool:
    """Reviewers and admins of at least one project (and staff) may open the console."""
    return bool(user.is_authenticated and user.is_staff) or projects_for(
        user, min_role=Role.REVIEWER).exists()


def is_admin_of(user: User, project_id: int) -> bool:
    """Whether the user may take admin actions in the project (pages use it to show or
    disable controls; the actions themselves check with `project_for`)."""
    return projects_for(user, min_role=Role.ADMIN).filter(pk=project_id).exists()
