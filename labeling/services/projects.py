"""Projects: creating them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.audit import audit
from labeling.models import Project


@transaction.atomic
def project_create(*, name: str, slug: str, actor: AbstractBaseUser | None = None, **fields: object) -> Project:
    """A new project with these settings (validated by the model); audited."""
    project = Project(name=name, slug=slug, **fields)
    project.full_clean()
    project.save()
    audit(actor=actor, project=project, action="project.create", target=project,
          after={"name": name, "slug": slug, **{k: str(v) for k, v in fields.items()}})
    return project


def project_get_or_create_default(*, slug: str) -> tuple[Project, bool]:
    """The CLI's project lookup: create it with default settings when it doesn't exist."""
    project = Project.objects.filter(slug=slug).first()
    if project:
        return project, False
    return project_create(name=slug.replace("-", " ").title(), slug=slug), True
