"""The console's reward models page: each registered reward model's held-out accuracy next
to the ceiling the labels allow (the human pairwise agreement of the snapshot's items, with
its 95% bootstrap interval), the calibration table the engine computed on the held-out
pairs, its win rate against the model that was current when it was trained (both scored its
held-out pairs: training/registry.py compare_with_current), and promotion (a model worse
than the current one asks for confirmation).

With several label axes (issue #21) each reward model learned one axis, and its ceiling is
that axis's agreement, computed from the rankings' labels on the axis; a table by axis puts
each axis's newest reward model beside it. A project with one axis sees the page as before."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.console import console_project, console_view
from core.errors import DomainError
from labeling.axes import axes_from_config, label_tiers
from labeling.models import Ranking, Role
from labeling.stats.agreement import AgreementUndefinedError, item_pairwise_agreement
from labeling.stats.bootstrap import mean_with_ci
from training.models import DatasetSnapshot, ModelVersion
from training.registry import PromotionNeedsConfirmation, model_version_promote
from training.snapshots import accepted_items


def agreement_ceiling(snapshot: DatasetSnapshot | None, axis: str | None = None) -> dict[str, Any]:
    """The mean pairwise agreement of the items the snapshot froze (accepted by then, as its
    filters chose them) and its 95% bootstrap interval: a reward model trained on them can't
    be expected to agree with a labeller more often than labellers agree with each other.
    For a project with axes, the agreement on `axis` (default: the primary one), from the
    live rankings' labels on that axis."""
    if snapshot is None:
        return {"n": 0, "mean": None, "ci": None}
    items = accepted_items(snapshot).filter(decided_at__lte=snapshot.created_at)
    project = snapshot.project
    if not project.axes:  # one implicit axis: the stored item agreement, as always
        return mean_with_ci(list(items.filter(agreement__isnull=False).values_list("agreement", flat=True)))
    primary = axes_from_config(project.axes)[0].key
    return mean_with_ci(axis_agreements(items, axis or primary, primary))


def axis_agreements(items: Any, axis: str, primary: str) -> list[float]:
    """Per item, the pairwise agreement of its live rankings on `axis` (labeling.axes.label_tiers);
    items with fewer than two rankings on the axis have no agreement to measure and are left out."""
    by_item: dict[int, list[list[list[int]]]] = {}
    rankings = (Ranking.objects.filter(item__in=items, superseded_by__isnull=True)
                .values_list("item_id", "tiers", "labels").order_by("item_id", "id"))
    for item_id, tiers, labels in rankings.iterator(chunk_size=2000):
        axis_tiers = label_tiers(labels, tiers, axis, primary)
        if axis_tiers is not None:
            by_item.setdefault(item_id, []).append(axis_tiers)
    values = []
    for tiers in by_item.values():
        try:
            values.append(item_pairwise_agreement(tiers))
        except AgreementUndefinedError:
            continue
    return values


def reward_rows(project: Any) -> list[dict[str, Any]]:
    versions = list(ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD)
                    .select_related("snapshot__project", "source_run").order_by("-id")[:20])
    axes = {axis.key: axis for axis in axes_from_config(project.axes)}
    primary = next(iter(axes))
    current = {}  # per axis: each axis has its own current reward model
    for version in versions:
        if version.is_current:
            current.setdefault(version.axis or primary, version)
    rows = []
    for version in versions:
        axis = version.axis or primary
        evaluation = (version.source_run.results.get("eval") or {}) if version.source_run else {}
        accuracy = version.metrics.get("eval_accuracy")
        baseline_version = current.get(axis)
        baseline = (baseline_version.metrics.get("eval_accuracy")
                    if baseline_version and baseline_version.pk != version.pk else None)
        rows.append({
            "version": version, "accuracy": accuracy, "pairs": version.metrics.get("eval_pairs"),
            "axis": axis, "axis_name": axes[axis].name if axis in axes else axis,
            "ceiling": agreement_ceiling(version.snapshot, axis if project.axes else None),
            "calibration": sorted((evaluation.get("calibration") or {}).items(),
                                  key=lambda kv: float(kv[0].split("-")[0])),
            "ece": evaluation.get("ece"),
            "delta": None if accuracy is None or baseline is None else accuracy - baseline,
            "worse": accuracy is not None and baseline is not None and accuracy < baseline,
            "vs_current": version.metrics.get("vs_current"),
        })
    return rows


def axis_rows(project: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With several axes: per axis, its newest reward model's accuracy and ceiling (none
    yet: the row says so). Empty for a project with one axis."""
    axes = axes_from_config(project.axes)
    if len(axes) < 2:
        return []
    newest = {}
    for row in rows:  # newest first
        newest.setdefault(row["axis"], row)
    return [{"axis": axis, "row": newest.get(axis.key)} for axis in axes]


@console_view
def reward_models(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    if request.method == "POST":
        project = console_project(request, project_id, min_role=Role.ADMIN)
        version = ModelVersion.objects.filter(project=project, pk=request.POST.get("promote") or 0).first()
        if version is not None:
            try:
                model_version_promote(version=version, actor=request.user,
                                      confirm=request.POST.get("confirm") == "1")
            except PromotionNeedsConfirmation as exc:
                return render(request, "console/promote_confirm.html",
                              {"project": project, "version": version, "reason": str(exc),
                               "back": "console:reward-models"})
            except DomainError as exc:
                messages.error(request, str(exc))
            else:
                primary = axes_from_config(project.axes)[0].key
                if version.kind == ModelVersion.Kind.REWARD and version.axis not in ("", primary):
                    messages.success(request, f"{version} is now the current reward model of the "
                                              f"{version.axis} axis (RL runs can combine it).")
                else:
                    messages.success(request, f"{version} is now the current {version.kind} model; "
                                              "open items are being re-scored with it.")
        return redirect("console:reward-models", project_id=project.pk)
    rows = reward_rows(project)
    return render(request, "console/reward_models.html", {
        "project": project, "rows": rows, "by_axis": axis_rows(project, rows),
        "can_admin": access.is_admin_of(request.user, project.pk),
        "policies": ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY).order_by("-id")[:20],
    })
