"""The console's home and a project's dashboard and stale labels. Every console page goes
through `core.console.console_view` and, for a project's pages, `console_project`."""

from __future__ import annotations

from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core import access
from core.console import console_project, console_view
from labeling.models import Item, Role


@console_view
def index(request: HttpRequest) -> HttpResponse:
    projects = (
        access.projects_for(request.user, min_role=Role.REVIEWER)
        .annotate(
            prompt_count=Count("prompts", distinct=True),
            item_count=Count("items", distinct=True),
            open_count=Count("items", filter=Q(items__status=Item.Status.OPEN), distinct=True),
        )
        .order_by("name")
    )
    return render(request, "console/index.html", {"projects": projects})


@console_view
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project dashboard: progress, throughput, agreement, annotators."""
    from core import charts
    from judges.metrics import judges_by_period
    from labeling.selectors import dashboard
    from labeling.selectors.dashboard import project_agreement_summary

    project = console_project(request, project_id)
    summary = project_agreement_summary(project=project)
    per_day = dashboard.agreement_per_day(project)
    throughput = dashboard.throughput_per_day(project)
    return render(request, "console/project.html", {
        "project": project,
        "summary": summary,
        "status_counts": list(summary["items"].items()),
        "prompt_count": project.prompts.count(),
        "imports": project.imports.order_by("-id")[:10],
        "per_version": dashboard.agreement_per_guideline_version(project),
        "annotators": dashboard.annotator_table(project),
        "judge_agreement": judges_by_period(project),
        "agreement_chart": charts.line_chart(
            "Agreement per day (95% bootstrap band)", [r["day"][5:] for r in per_day],
            [r["agreement"] for r in per_day],
            [tuple(r["ci"]) if r["ci"] else (r["agreement"], r["agreement"]) for r in per_day],
            reference=project.agreement_threshold),
        "throughput_chart": charts.bar_chart(
            "Rankings per day", [r["day"][5:] for r in throughput],
            [r["rankings"] for r in throughput]),
    })


@console_view
def stale_items(request: HttpRequest, project_id: int) -> HttpResponse:
    """Items ranked under a guideline older than its latest major version; an admin can
    re-open them so fresh rankings are collected under the current version."""
    from django.contrib import messages
    from django.shortcuts import redirect

    from labeling.selectors.review import stale_items_for
    from labeling.services.items import items_reopen

    project = console_project(request, project_id)
    if request.method == "POST":
        project = console_project(request, project_id, min_role=Role.ADMIN)
        ids = sorted({int(i) for i in request.POST.getlist("item") if i.isdigit()})
        reason = request.POST.get("reason", "").strip()[:500] or "stale guideline version"
        if not ids:
            messages.error(request, "Tick the items to re-open first: none was selected.")
            return redirect("console:stale", project_id=project.pk)
        if request.POST.get("confirm") != "yes":
            # Nothing is re-opened by one click: the count is confirmed first.
            return render(request, "console/stale_confirm.html", {
                "project": project, "ids": ids, "reason": reason})
        reopened = items_reopen(project=project, item_ids=ids, reason=reason, actor=request.user)
        messages.success(request, f"Re-opened {reopened} items for more rankings.")
        return redirect("console:stale", project_id=project.pk)
    items, major = stale_items_for(project=project)
    return render(request, "console/stale.html", {
        "project": project, "items": items[:500], "major": major,
        "can_admin": access.is_admin_of(request.user, project.pk),
    })
