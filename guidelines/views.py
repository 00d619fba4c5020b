"""Guideline pages: the console (list, versions, draft editor, publish, diff) and the
annotator's acknowledgement gate."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from core import access
from core.console import console_view
from core.rendering import render_markdown
from guidelines import access as guideline_access
from guidelines.diff import versions_diff_html
from guidelines.models import GuidelineVersion
from guidelines.services import (
    GuidelineError,
    acknowledge,
    acknowledgement_needed,
    draft_create,
    draft_update,
    last_acknowledged,
    version_publish,
)


@console_view
def guideline_list(request: HttpRequest) -> HttpResponse:
    guidelines = guideline_access.guidelines_for(request.user).annotate(n_versions=Count("versions", distinct=True))
    return render(request, "guidelines/list.html", {"guidelines": guidelines.order_by("slug")})


@console_view
def guideline_detail(request: HttpRequest, guideline_id: int) -> HttpResponse:
    guideline = guideline_access.guideline_for(request.user, guideline_id)
    versions = guideline.versions.annotate(n_rankings=Count("rankings")).order_by("-number")
    edit_problem = guideline_access.guideline_edit_problem(request.user, guideline)
    from labeling.models import Role

    return render(request, "guidelines/detail.html", {
        "guideline": guideline, "versions": versions,
        # Each axis's description is read with the guideline; only projects this person sees.
        "axes_projects": access.projects_for(request.user, min_role=Role.REVIEWER).filter(
            guideline=guideline).exclude(axes=[]).order_by("name"),
        "can_edit": edit_problem is None, "edit_problem": edit_problem,
    })


@console_view
@require_POST
def draft_new(request: HttpRequest, guideline_id: int) -> HttpResponse:
    guideline = guideline_access.guideline_for(request.user, guideline_id, edit=True)
    try:
        draft = draft_create(guideline=guideline, actor=request.user)
    except GuidelineError as exc:
        messages.error(request, str(exc))
        return redirect("console:guideline", guideline_id=guideline.pk)
    return redirect("console:guideline-edit", version_id=draft.pk)


def _version_for(request: HttpRequest, version_id: int, *, edit: bool = False) -> GuidelineVersion:
    version = get_object_or_404(GuidelineVersion, pk=version_id)
    guideline_access.guideline_for(request.user, version.guideline_id, edit=edit)
    return version


@console_view
def draft_edit(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _version_for(request, version_id, edit=True)
    if request.method == "POST":
        try:
            version = draft_update(
                version=version, body=request.POST.get("body", ""),
                changelog=request.POST.get("changelog", ""),
                change=request.POST.get("change", "major"), actor=request.user,
            )
            if "publish" in request.POST:
                version_publish(version=version, user=request.user)
                messages.success(request, f"Published v{version.number} ({version.change}).")
                return redirect("console:guideline", guideline_id=version.guideline_id)
            messages.success(request, "Draft saved.")
        except GuidelineError as exc:
            messages.error(request, str(exc))
        return redirect("console:guideline-edit", version_id=version.pk)
    return render(request, "guidelines/edit.html", {"version": version})


@console_view
@require_POST
def preview(request: HttpRequest) -> JsonResponse:
    """Live preview for the draft editor: the same sanitizer as every page."""
    return JsonResponse({"html": str(render_markdown(request.POST.get("body", "")[:200_000]))})


@console_view
def version_detail(request: HttpRequest, version_id: int) -> HttpResponse:
    version = _version_for(request, version_id)
    return render(request, "guidelines/version.html", {"version": version})


@console_view
def versions_diff(request: HttpRequest, guideline_id: int) -> HttpResponse:
    guideline = guideline_access.guideline_for(request.user, guideline_id)
    versions = list(guideline.versions.order_by("number"))
    by_number = {v.number: v for v in versions}
    try:
        old = by_number.get(int(request.GET.get("a", versions[-2].number if len(versions) > 1 else 0)))
        new = by_number[int(request.GET.get("b", versions[-1].number))]
    except (KeyError, ValueError, IndexError):
        return render(request, "guidelines/diff.html", {"guideline": guideline, "versions": versions,
                                                         "error": "Pick two existing versions."},
                      status=400)
    return render(request, "guidelines/diff.html", {
        "guideline": guideline, "versions": versions, "old": old, "new": new,
        "table": versions_diff_html(old, new),
    })


@login_required
def acknowledge_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The gate before a first item and after each major version: read, then confirm."""
    project = access.project_by_slug_for(request.user, slug)
    pending = acknowledgement_needed(user=request.user, project=project)
    if pending is None:
        return redirect("annotate", slug=project.slug)
    if request.method == "POST":
        acknowledge(user=request.user, version=pending)
        return redirect("annotate", slug=project.slug)
    previous = last_acknowledged(user=request.user, guideline_id=pending.guideline_id)
    return render(request, "guidelines/acknowledge.html", {
        "project": project, "version": pending, "previous": previous,
        "diff": versions_diff_html(previous, pending) if previous else None,
    })
