"""Projects: creating them and changing their settings (the API, the console and the CLI
all come here, so every change is validated and audited alike)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from core.audit import audit
from core.errors import DomainError
from labeling.axes import AxisError, axes_clean, structure
from labeling.models import Project, Ranking

# What project_create and project_update accept; anything else is refused, never ignored.
SETTINGS = (
    "name", "slug", "description", "k", "overlap", "agreement_threshold", "mode", "allow_ties",
    "gold_rate", "assignment_strategy", "generation_settings", "status", "lease_minutes",
    "adaptive_overlap", "demonstrations", "demonstrations_per_prompt", "mix_demonstrations",
    "guideline", "top_k", "unsafe_daily_cap", "is_demo", "axes",
)


def guideline_check(guideline: object, project: Project | None) -> None:
    """A project may follow a shared guideline or one it owns; another project's guideline
    is refused (its owners change it, and a major version would gate this project)."""
    if guideline is None:
        return
    owner = getattr(guideline, "project_id", None)
    if owner is not None and (project is None or owner != project.pk):
        raise DomainError("that guideline belongs to another project; use a shared one or this project's own")


def _shown(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    return str(getattr(value, "pk", value))


def _axes(value: object, project: Project | None) -> list[dict[str, Any]]:
    """Axes as sent (a preset name or a list) made into what is stored. Once a project has
    rankings its axes' keys and kinds are fixed (the rankings cover exactly those); names,
    descriptions, anchors and which are required may still change."""
    try:
        axes = axes_clean(value)
    except AxisError as exc:
        raise DomainError(f"axes: {exc}") from None
    if project is not None and structure(axes) != structure(project.axes) and (
            Ranking.objects.filter(item__project=project).exists()):
        raise DomainError("axes: this project already has rankings, so its axes' keys and "
                          "kinds can't change (names, descriptions, anchors and required can); "
                          "start a new project for other axes")
    return axes


def _clean(project: Project) -> None:
    try:
        project.full_clean()
    except ValidationError as exc:
        raise DomainError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in
                                    exc.message_dict.items())) from None


@transaction.atomic
def project_create(*, name: str, slug: str, actor: AbstractBaseUser | None = None, **fields: Any) -> Project:
    """A new project with these settings (validated by the model); audited."""
    unknown = sorted(set(fields) - set(SETTINGS))
    if unknown:
        raise DomainError(f"unknown project settings: {', '.join(unknown)}")
    guideline_check(fields.get("guideline"), None)
    if "axes" in fields:
        fields["axes"] = _axes(fields["axes"], None)
    project = Project(name=name, slug=slug, **fields)
    _clean(project)
    project.save()
    audit(actor=actor, project=project, action="project.create", target=project,
          after={"name": name, "slug": slug, **{k: _shown(v) for k, v in fields.items()}})
    return project


@transaction.atomic
def project_update(*, project: Project, actor: AbstractBaseUser | None, **fields: Any) -> Project:
    """Change a project's settings; the fields that changed are audited (before and after).
    Switching to demonstrations "only" gives every prompt without one a demonstration item."""
    unknown = sorted(set(fields) - set(SETTINGS))
    if unknown:
        raise DomainError(f"unknown project settings: {', '.join(unknown)}")
    project = Project.objects.select_for_update().get(pk=project.pk)
    if "guideline" in fields:
        guideline_check(fields["guideline"], project)
    if "axes" in fields:
        fields["axes"] = _axes(fields["axes"], project)
    before, after = {}, {}
    for name, value in fields.items():
        old = getattr(project, name)
        if old != value:
            before[name], after[name] = _shown(old), _shown(value)
            setattr(project, name, value)
    if not after:
        return project
    _clean(project)
    project.save(update_fields=list(after))
    action = "project.guideline" if set(after) == {"guideline"} else "project.update"
    audit(actor=actor, project=project, action=action, target=project, before=before, after=after)
    if project.demonstrations == Project.Demonstrations.ONLY:
        from labeling.services.demonstrations import demonstration_items_create

        demonstration_items_create(project=project)
    return project


def project_get_or_create_default(*, slug: str) -> tuple[Project, bool]:
    """The CLI's project lookup: create it with default settings when it doesn't exist."""
    project = Project.objects.filter(slug=slug).first()
    if project:
        return project, False
    return project_create(name=slug.replace("-", " ").title(), slug=slug), True
