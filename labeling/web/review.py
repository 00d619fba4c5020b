"""Console pages for reviewing: the dispute queue, adjudication, annotators, models, the
audit log; and the annotator's own feedback page."""

from __future__ import annotations

import json
from itertools import combinations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from core import access
from core.audit import audit_events_for
from core.console import console_project, console_view
from core.errors import DomainError
from judges.metrics import judges_table
from labeling.axes import label_scores, label_tiers
from labeling.models import AnnotatorQuality, Assignment, Item, Membership, Ranking, Role
from labeling.selectors.dashboard import annotator_axis_quality, model_comparison, project_axes
from labeling.selectors.review import disputes_for, live_rankings
from labeling.services.members import invite_create, leases_release, member_remove, membership_pause, user_deactivate
from labeling.services.review import Adjudication, item_adjudicate
from labeling.stats.consensus import tier_ranks


@console_view
def disputes(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    page = Paginator(disputes_for(project=project), 50).get_page(request.GET.get("page"))
    axes = project_axes(project)
    for item in page:  # which axes disagree, so a reviewer opens the right one
        figures = item.axes or {}
        item.axis_rows = [{"key": a.key, "name": a.name, **figures.get(a.key, {})} for a in axes]
        item.first_disputed = next((r["key"] for r in item.axis_rows if r.get("status") == "disputed"), "")
    return render(request, "console/disputes.html", {"project": project, "page": page, "axes": axes})


def _item_for(request: HttpRequest, item_id: int) -> Item:
    item = access.object_for(request.user, Item, item_id, min_role=Role.REVIEWER, what="item")
    return Item.objects.select_related("project", "prompt", "decided_by").get(pk=item.pk)


def adjudication_context(item: Item, axis_key: str | None = None) -> dict:
    """Everything the adjudication view shows: candidates with provenance, every ranking
    as rank-per-candidate columns, and the pairs annotators split on. In a project with
    axes, all of it is one axis's (`axis_key`, else the first disputed one), with every
    axis's agreement and status above it."""
    candidates = [ic.candidate for ic in item.item_candidates.select_related("candidate")]
    rankings = live_rankings(item)
    axes = project_axes(item.project)
    axis = _chosen_axis(item, axes, axis_key)
    primary = axes[0].key if axes else None
    entry = (item.axes or {}).get(axis.key, {}) if axis else {}
    if axis:
        axis_tiers = [label_tiers(r.labels, r.tiers, axis.key, primary) for r in rankings]
        consensus_tiers = entry.get("consensus")
    else:
        axis_tiers, consensus_tiers = [r.tiers for r in rankings], item.consensus
    ranks = [tier_ranks(t) if t else {} for t in axis_tiers]
    scores = [label_scores(r.labels, axis.key) or {} for r in rankings] if axis and axis.is_rating else []
    consensus = tier_ranks(consensus_tiers) if consensus_tiers else {}
    disputed_pairs = []
    for a, b in combinations([c.pk for c in candidates], 2):
        signs = {(r[a] > r[b]) - (r[a] < r[b]) for r in ranks if a in r and b in r}
        if len(signs) > 1:
            disputed_pairs.append((a, b))
    disputed_ids = {cid for pair in disputed_pairs for cid in pair}
    rows = [{
        "candidate": c, "label": chr(ord("A") + i),
        "ranks": [s.get(c.pk) for s in scores] if scores else [r.get(c.pk) for r in ranks],
        "consensus": consensus.get(c.pk), "disputed": c.pk in disputed_ids,
        "mean_score": entry.get("scores", {}).get(str(c.pk)),
    } for i, c in enumerate(candidates)]
    from training.models import CandidateScore, ModelVersion
    from training.registry import current_model

    scorer = current_model(item.project, ModelVersion.Kind.REWARD)  # the primary axis's
    rm_scores = dict(CandidateScore.objects.filter(
        candidate__in=candidates, model_version=scorer).values_list("candidate_id", "score")) if scorer else {}
    for row in rows:
        row["rm_score"] = rm_scores.get(row["candidate"].pk)
    labels = {c.pk: chr(ord("A") + i) for i, c in enumerate(candidates)}
    on_primary = axis is None or axis.key == primary
    return {
        "item": item, "rows": rows, "rankings": rankings,
        "verdicts": [_verdict(r, labels, item.project.mode) for r in rankings],
        "show_verdicts": on_primary and (item.project.mode == "pairwise" or any(r.all_bad for r in rankings)),
        "disputed_pairs": [(labels[a], labels[b]) for a, b in disputed_pairs],
        "board": [{"id": c.pk, "label": labels[c.pk]} for c in sorted(
            candidates, key=lambda c: consensus.get(c.pk, 99))],
        "axis": axis, "axis_entry": entry, "axis_has_consensus": bool(consensus_tiers),
        "axis_tabs": _axis_tabs(item, axes, axis),
        "safety": [_safety_marks(r, labels) for r in rankings] if axis and axis.purpose == "harmlessness" else [],
    }


def _chosen_axis(item: Item, axes: list, key: str | None):  # noqa: ANN202 - Axis | None
    """The axis the page decides: the one asked for, else the first disputed, else the first."""
    if not axes:
        return None
    by_key = {a.key: a for a in axes}
    if key in by_key:
        return by_key[key]
    figures = item.axes or {}
    return next((a for a in axes if figures.get(a.key, {}).get("status") == "disputed"), axes[0])


def _axis_tabs(item: Item, axes: list, chosen) -> list[dict]:  # noqa: ANN001
    figures = item.axes or {}
    return [{"axis": a, "agreement": figures.get(a.key, {}).get("agreement"),
             "status": figures.get(a.key, {}).get("status"),
             "adjudicated": figures.get(a.key, {}).get("adjudicated", False),
             "current": chosen is not None and a.key == chosen.key} for a in axes]


def _safety_marks(ranking: Ranking, labels: dict[int, str]) -> dict:
    """Who marked which answers safe (Llama 2's safety bin), in the page's letters."""
    marks = {int(k): v for k, v in (ranking.safety or {}).items()}
    return {"annotator": ranking.annotator.username,
            "safe": [labels[c] for c in sorted(marks) if marks[c] and c in labels],
            "unsafe": [labels[c] for c in sorted(marks) if not marks[c] and c in labels]}


STRENGTH = {1: "barely / unsure", 2: "slightly better", 3: "better", 4: "much better"}


def _verdict(ranking: Ranking, labels: dict[int, str], mode: str) -> dict:
    """What one annotator said, in words: pairwise strength, and a tie kept apart from
    "both bad" (their ranks look the same)."""
    if len(ranking.tiers) == 1:
        if ranking.all_bad:
            return {"text": "Both bad", "kind": "bad"}
        return {"text": "Tie: equally good", "kind": "tie"}
    if ranking.all_bad:
        return {"text": "All bad", "kind": "bad"}
    if mode == "pairwise":
        winner = labels.get(ranking.tiers[0][0], "?")
        strength = STRENGTH.get(ranking.strength, "strength not given")
        return {"text": f"{winner} {strength} ({ranking.strength or '–'} of 4)", "kind": "win"}
    return {"text": "–", "kind": "plain"}


@console_view
def adjudicate(request: HttpRequest, item_id: int) -> HttpResponse:
    item = _item_for(request, item_id)
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            tiers = json.loads(request.POST.get("tiers") or "null")
            extra = int(request.POST.get("extra_rankings") or 1)
            axis = request.POST.get("axis") or None
            if axis is not None and action not in (Adjudication.SET_RANKING, Adjudication.ACCEPT_CONSENSUS):
                axis = None  # discard and send back act on the whole item
            decided = item_adjudicate(item_id=item.pk, reviewer=request.user, action=action, tiers=tiers,
                                      note=request.POST.get("note", "")[:5000], extra_rankings=extra,
                                      axis=axis)
        except (DomainError, ValueError, TypeError) as exc:
            messages.error(request, f"Not saved: {exc}")
            return _back_to(item, request.POST.get("axis"))
        on = f" on {axis}" if axis else ""
        messages.success(request, f"Item #{item.pk}: {action.replace('_', ' ')}{on} saved.")
        if decided.status == Item.Status.DISPUTED:
            return redirect("console:adjudicate", item_id=item.pk)  # another axis still disagrees
        following = disputes_for(project=item.project).exclude(pk=item.pk).first()
        if following:
            return redirect("console:adjudicate", item_id=following.pk)
        return redirect("console:disputes", project_id=item.project_id)
    context = adjudication_context(item, request.GET.get("axis"))
    context.update(project=item.project, actions=Adjudication)
    return render(request, "console/adjudicate.html", context)


def _back_to(item: Item, axis: str | None) -> HttpResponse:
    url = reverse("console:adjudicate", kwargs={"item_id": item.pk})
    return redirect(f"{url}?{urlencode({'axis': axis})}" if axis else url)


@console_view
def annotators(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    period = request.GET.get("period", "all")[:32]
    quality = {q.annotator_id: q for q in AnnotatorQuality.objects.filter(
        project=project, period=period)}
    members = (Membership.objects.filter(project=project).select_related("user")
               .order_by("role", "user__username"))
    periods = sorted(set(AnnotatorQuality.objects.filter(project=project)
                         .values_list("period", flat=True)) | {"all"})
    # Rankings counted from the rankings themselves (the quality figures come only once
    # items are decided, and then only for the chosen period).
    sent = dict(Ranking.objects.filter(item__project=project, superseded_by__isnull=True)
                .values("annotator_id").annotate(n=Count("id")).values_list("annotator_id", "n"))
    axes = project_axes(project)
    per_axis = annotator_axis_quality(project)
    return render(request, "console/annotators.html", {
        "project": project, "period": period, "periods": periods, "axes": axes,
        # Each member's agreement on every axis beside the period's figures (issue #21).
        "members": [(m, quality.get(m.user_id), sent.get(m.user_id, 0),
                     [per_axis.get(m.user_id, {}).get(a.key) for a in axes]) for m in members],
        # AI judges beside the people, measured the same way (judges/metrics.py).
        "judges": judges_table(project, period),
        "roles": Role.choices, "can_admin": access.is_admin_of(request.user, project.pk),
    })


@console_view
def annotator_detail(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    membership = get_object_or_404(Membership, project=project, user_id=user_id)
    rankings = (Ranking.objects.filter(item__project=project, annotator_id=user_id)
                .select_related("item").order_by("-id")[:50])
    weekly = AnnotatorQuality.objects.filter(project=project, annotator_id=user_id,
                                             period__startswith="week:").order_by("period")
    from core import charts

    per_axis = annotator_axis_quality(project).get(user_id, {})
    return render(request, "console/annotator.html", {
        "project": project, "membership": membership, "rankings": rankings,
        "axis_quality": [(a, per_axis.get(a.key)) for a in project_axes(project)],
        "quality": AnnotatorQuality.objects.filter(project=project, annotator_id=user_id,
                                                   period="all").first(),
        "weekly": weekly, "can_admin": access.is_admin_of(request.user, project.pk),
        "active_leases": Assignment.objects.filter(annotator_id=user_id, item__project=project,
                                                   status=Assignment.Status.ACTIVE).count(),
        "trend": charts.line_chart(
            "Agreement with the others, per week", [q.period[-3:] for q in weekly],
            [q.loo_agreement or 0.0 for q in weekly]),
    })


@console_view
@require_POST
def annotator_action(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    membership = get_object_or_404(Membership, project=project, user_id=user_id)
    action, note = request.POST.get("action"), request.POST.get("note", "")[:2000]
    try:
        if action in {"pause", "resume"}:
            membership_pause(project=project, user=membership.user, paused=action == "pause",
                             actor=request.user, note=note)
        elif action == "release":
            leases_release(project=project, user=membership.user, actor=request.user, note=note)
        elif action == "remove":
            member_remove(project=project, user=membership.user, actor=request.user, note=note)
            messages.success(request, f"Removed {membership.user.username} from the project.")
            return redirect("console:annotators", project_id=project.pk)
        elif action == "deactivate":
            user_deactivate(user=membership.user, actor=request.user)
        else:
            raise DomainError(f"unknown action {action!r}")
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{action} done for {membership.user.username}.")
    return redirect("console:annotator", project_id=project.pk, user_id=user_id)


@console_view
@require_POST
def invite(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    try:
        created, token = invite_create(project=project, role=request.POST.get("role", ""),
                                       created_by=request.user)
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        url = request.build_absolute_uri(reverse("invite-accept", args=[token]))
        messages.success(request, f"One-time {created.role} invite (expires "
                                  f"{created.expires_at:%Y-%m-%d %H:%M} UTC): {url}")
    return redirect("console:annotators", project_id=project.pk)


@console_view
def models_page(request: HttpRequest, project_id: int) -> HttpResponse:
    from training.models import ModelVersion

    project = console_project(request, project_id)
    return render(request, "console/models.html", {
        "project": project, "comparison": model_comparison(project=project),
        "versions": ModelVersion.objects.filter(project=project),
    })


@console_view
def audit_log(request: HttpRequest) -> HttpResponse:
    projects = access.projects_for(request.user, min_role=Role.REVIEWER)
    project_id = request.GET.get("project", "")
    project = None
    if project_id.isdigit():
        projects = projects.filter(pk=int(project_id))
        project = projects.first()  # keeps the project's sidebar on its audit log
    events = audit_events_for(projects=projects, action=request.GET.get("action", "")[:64],
                              actor=request.GET.get("actor", "")[:150])
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(request, "console/audit.html", {"page": page, "filters": request.GET,
                                                  "project": project})


