"""The console's reward models page: each registered reward model's held-out accuracy next
to the ceiling the labels allow (the human pairwise agreement of the snapshot's items, with
its 95% bootstrap interval), the calibration table the engine computed on the held-out
pairs, its win rate against the model that was current when it was trained (both scored its
held-out pairs: training/registry.py compare_with_current), and promotion (a model worse
than the current one asks for confirmation)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.console import console_project, console_view
from core.errors import DomainError
from labeling.models import Role
from labeling.stats.bootstrap import mean_with_ci
from training.models import DatasetSnapshot, ModelVersion
from training.registry import PromotionNeedsConfirmation, model_version_promote
from training.snapshots import accepted_items


def agreement_ceiling(snapshot: DatasetSnapshot | None) -> dict[str, Any]:
    """The mean pairwise agreement of the items the snapshot froze (accepted by then, as its
    filters chose them) and its 95% bootstrap interval: a reward model trained on them can't
    be expected to agree with a labeller more often than labellers agree with each other."""
    if snapshot is None:
        return {"n": 0, "mean": None, "ci": None}
    values = list(accepted_items(snapshot).filter(decided_at__lte=snapshot.created_at, agreement__isnull=False)
                  .values_list("agreement", flat=True))
    return mean_with_ci(values)


def reward_rows(project: Any) -> list[dict[str, Any]]:
    versions = list(ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD)
                    .select_related("snapshot", "source_run").order_by("-id")[:20])
    current = next((v for v in versions if v.is_current), None)
    rows = []
    for version in versions:
        evaluation = (version.source_run.results.get("eval") or {}) if version.source_run else {}
        accuracy = version.metrics.get("eval_accuracy")
        baseline = current.metrics.get("eval_accuracy") if current and current.pk != version.pk else None
        rows.append({
            "version": version, "accuracy": accuracy, "pairs": version.metrics.get("eval_pairs"),
            "ceiling": agreement_ceiling(version.snapshot),
            "calibration": sorted((evaluation.get("calibration") or {}).items(),
                                  key=lambda kv: float(kv[0].split("-")[0])),
            "ece": evaluation.get("ece"),
            "delta": None if accuracy is None or baseline is None else accuracy - baseline,
            "worse": accuracy is not None and baseline is not None and accuracy < baseline,
            "vs_current": version.metrics.get("vs_current"),
        })
    return rows


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
                messages.success(request, f"{version} is now the current {version.kind} model; "
                                          "open items are being re-scored with it.")
        return redirect("console:reward-models", project_id=project.pk)
    return render(request, "console/reward_models.html", {
        "project": project, "rows": reward_rows(project),
        "can_admin": access.is_admin_of(request.user, project.pk),
        "policies": ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.POLICY).order_by("-id")[:20],
    })
