"""`{% project_axes project as axes %}`: a project's axes for the pages that show the
guideline, so each axis's description is read with it (issue #21). Empty for a project
without axes: its one implicit axis is what the guideline itself describes."""

from __future__ import annotations

from django import template

from labeling.axes import Axis, axes_from_config

register = template.Library()


@register.simple_tag
def project_axes(project: object) -> list[Axis]:
    config = getattr(project, "axes", None)
    return axes_from_config(config) if config else []
