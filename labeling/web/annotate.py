"""The annotator workspace pages: the item on screen and the pre-loaded next one."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core import access
from core.rendering import render_markdown
from labeling.axes import asks_safety, axes_from_config
from labeling.blind import labels_as_shown, safety_as_shown, tiers_as_shown
from labeling.models import Assignment, Project, Ranking
from labeling.selectors.workspace import annotator_progress, shown_candidates
from labeling.services.assignment import GuidelineAckRequired, SubmissionConflict, next_item
from labeling.services.revisions import recent_rankings

SKIP_REASONS = [
    "needs expertise I don't have",
    "the prompt or answers are broken",
    "content I can't review",
    "other",
]


def workspace_axes(project: Project) -> dict | None:
    """The axes the page asks for, or None for the one-axis workspace as it always was: a
    project without axes, or whose only axis is a ranking axis with no safety bin (its
    `tiers` are that axis's labels, so the page need not change). The first axis is the
    primary one (its pairwise strength is the ranking's `strength`)."""
    axes = axes_from_config(project.axes)
    safety = asks_safety(axes)
    if len(axes) == 1 and not axes[0].is_rating and not safety:
        return None
    return {
        "list": [{**axis.as_dict(), "primary": n == 0, "scores": list(enumerate(axis.anchors))}
                 for n, axis in enumerate(axes)],
        "ask_safety": safety,
        "has_rating": any(axis.is_rating for axis in axes),
        "has_ranking": any(not axis.is_rating for axis in axes),
        # Llama 2's four bins, in pairwise mode: (key, label, safe A, safe B).
        "bins": [("1", "Both safe", True, True), ("2", "Only A safe", True, False),
                 ("3", "Only B safe", False, True), ("4", "Neither safe", False, False)],
    }


def sent_labels(assignment: Assignment, ranking: Ranking, project: Project) -> dict:
    """Go back on a project with axes: what was sent on every axis, in the ids this
    assignment shows, so the page places it all again and resends every axis."""
    labels = ranking.labels or {axes_from_config(project.axes)[0].key: {"tiers": ranking.tiers}}
    return {"axes": labels_as_shown(assignment, labels),
            "safety": safety_as_shown(assignment, ranking.safety),
            "strength": ranking.strength, "all_bad": ranking.all_bad}


def _item_context(assignment: Assignment) -> dict:
    """What the item template needs; `assignment` comes from next_item (loaded)."""
    version = assignment.guideline_version
    return {
        "assignment": assignment,
        "ids": f"a{assignment.pk}",  # the prefix of every control's id in the item
        "item": assignment.item,
        "project": assignment.item.project,
        "turns": assignment.item.prompt.turns,
        "candidates": shown_candidates(assignment),
        "guideline": version,
        "skip_reasons": SKIP_REASONS,
        "axes_ui": workspace_axes(assignment.item.project),
    }


@login_required
def workspace(request: HttpRequest, slug: str) -> HttpResponse:
    project = access.project_by_slug_for(request.user, slug)
    try:
        assignment = next_item(annotator=request.user, project=project)
    except GuidelineAckRequired:
        return redirect("annotate-guideline", slug=project.slug)
    except SubmissionConflict as exc:  # paused by an admin: say so (the API answers 409)
        return render(request, "annotator/paused.html", {"project": project, "reason": str(exc)},
                      status=409)
    context = {"project": project, "progress": annotator_progress(request.user, project),
               "axes_ui": workspace_axes(project)}
    if assignment is not None:
        context.update(_item_context(assignment))
    return render(request, "annotator/workspace.html", context)


@login_required
def prefetch(request: HttpRequest, slug: str) -> HttpResponse:
    """The item behind the current one, as a fragment the page swaps in on submit."""
    project = access.project_by_slug_for(request.user, slug)
    try:
        assignment = next_item(annotator=request.user, project=project, prefetch=True)
    except GuidelineAckRequired:
        assignment = None  # the page reloads into the acknowledgement gate
    except SubmissionConflict:
        # Paused: nothing is pre-loaded. The page learns why from its next submission
        # (409 "paused") and reloads into the paused page.
        return HttpResponse(status=409)
    if assignment is None:
        return HttpResponse(status=204)
    return render(request, "annotator/_item.html", _item_context(assignment))


@login_required
@require_POST
def preview(request: HttpRequest, slug: str) -> HttpResponse:
    """A demonstration's markdown as the same sanitized HTML every answer is shown in.
    Text longer than an answer may be is refused (413), not cut."""
    access.project_by_slug_for(request.user, slug)
    text = request.POST.get("text", "")
    if len(text) > settings.IMPORT_MAX_TEXT_CHARS:
        return HttpResponse(
            f"Too long to preview: answers are limited to {settings.IMPORT_MAX_TEXT_CHARS} "
            f"characters and this one has {len(text)}.",
            status=413, content_type="text/plain; charset=utf-8")
    return HttpResponse(render_markdown(text), content_type="text/html; charset=utf-8")


@login_required
def recent(request: HttpRequest, slug: str) -> HttpResponse:
    """Go back: the annotator's last few sent items, each with "Change" while it is open."""
    project = access.project_by_slug_for(request.user, slug)
    return render(request, "annotator/_recent.html", {
        "project": project, "sent": recent_rankings(annotator=request.user, project=project)})


@login_required
def revise(request: HttpRequest, slug: str, assignment_id: int) -> HttpResponse:
    """A sent item as a fragment to rank again, with the ranking they sent placed."""
    project = access.project_by_slug_for(request.user, slug)
    sent = next((s for s in recent_rankings(annotator=request.user, project=project)
                 if s.ranking.assignment_id == assignment_id and s.revisable), None)
    if sent is None:
        raise Http404("That item can't be changed any more.")
    assignment = sent.ranking.assignment
    assignment.item = sent.ranking.item
    assignment.item.project = project
    context = _item_context(assignment)
    initial = (sent_labels(assignment, sent.ranking, project) if context["axes_ui"]
               else tiers_as_shown(assignment, sent.ranking.tiers))
    context.update(revising=sent.ranking, initial=initial, revise_json_id=f"a{assignment.pk}-initial")
    return render(request, "annotator/_item.html", context)
