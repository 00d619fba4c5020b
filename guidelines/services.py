"""Guideline reads and writes used by the rest of the app."""

from __future__ import annotations

from guidelines.models import GuidelineVersion


def guideline_current_version(*, project: object) -> GuidelineVersion | None:
    """The latest published version of the project's guideline: the one a claim records."""
    guideline_id = getattr(project, "guideline_id", None)
    if guideline_id is None:
        return None
    return (
        GuidelineVersion.objects.filter(guideline_id=guideline_id, published_at__isnull=False)
        .order_by("-number")
        .first()
    )
