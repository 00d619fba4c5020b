"""Console pages of the training app: a project's runs and datasets (imports,
generation runs, snapshots, training runs with their loss curves, model versions and
promotion), and its training schedule (admins edit it, reviewers read it; both see
what every tick decided and why)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.console import console_project, console_view
from core.errors import DomainError
from labeling.models import Role
from training.models import TrainingSchedule
from training.schedules import new_comparisons, schedule_save


class ScheduleForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    min_new_comparisons = forms.IntegerField(min_value=1, max_value=100_000_000,
                                             label="New accepted comparisons needed")
    interval_minutes = forms.IntegerField(min_value=1, max_value=7 * 24 * 60,
                                          label="Check every (minutes)")
    then_dpo = forms.BooleanField(required=False, label="Then DPO on the same data")
    reward_config = forms.JSONField(required=False, initial=dict,
                                    label="Reward config overrides (JSON)")
    dpo_config = forms.JSONField(required=False, initial=dict, label="DPO config overrides (JSON)")


@console_view
def schedule_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    schedule = TrainingSchedule.objects.filter(project=project).first()
    can_admin = False
    if request.method == "POST":
        project = console_project(request, project_id, min_role=Role.ADMIN)
        form = ScheduleForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                schedule_save(project=project, actor=request.user, enabled=data["enabled"],
                              min_new_comparisons=data["min_new_comparisons"],
                              interval_minutes=data["interval_minutes"], then_dpo=data["then_dpo"],
                              reward_config=data["reward_config"] or {},
                              dpo_config=data["dpo_config"] or {})
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, "Schedule saved.")
                return redirect("console:schedule", project_id=project.pk)
        can_admin = True
    else:
        initial = ({"enabled": schedule.enabled, "min_new_comparisons": schedule.min_new_comparisons,
                    "interval_minutes": schedule.interval_minutes, "then_dpo": schedule.then_dpo,
                    "reward_config": schedule.reward_config, "dpo_config": schedule.dpo_config}
                   if schedule else {"enabled": True, "min_new_comparisons": 500,
                                     "interval_minutes": 60})
        form = ScheduleForm(initial=initial)
        can_admin = access.is_admin_of(request.user, project.pk)
    return render(request, "console/schedule.html", {
        "project": project, "schedule": schedule, "form": form, "can_admin": can_admin,
        "decisions": schedule.decisions.select_related("reward_run", "dpo_run")[:50] if schedule else [],
        "new": new_comparisons(project),
    })


@console_view
def runs(request: HttpRequest, project_id: int) -> HttpResponse:
    """Imports, generation runs and dataset snapshots with live progress (the page
    refreshes itself while any is queued or running)."""
    from core import charts
    from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingRun

    project = console_project(request, project_id)
    if request.method == "POST":
        return _runs_action(request, project_id)
    training = list(TrainingRun.objects.filter(project=project).order_by("-id")[:20])
    curves = []
    for run in training[:5]:
        points = list(run.metrics.order_by("step").values_list("step", "values"))
        losses = [(step, values["loss"]) for step, values in points if values.get("loss") is not None]
        if losses:
            high = max(loss for _, loss in losses) or 1.0
            curves.append((run, charts.line_chart(
                f"{run.kind} run {run.pk}: loss per step", [str(s) for s, _ in losses],
                [loss for _, loss in losses], low=0.0, high=round(high * 1.1, 3))))
    generation = GenerationRun.objects.filter(project=project).order_by("-id")[:50]
    snapshots = DatasetSnapshot.objects.filter(project=project).order_by("-id")[:50]
    imports = project.imports.order_by("-id")[:50]
    active = any(r.status in {"queued", "running"}
                 for r in [*generation, *snapshots, *imports, *training])
    can_admin = access.is_admin_of(request.user, project.pk)
    from training.launcher import launcher_forms

    return render(request, "console/runs.html", {
        **(launcher_forms(project) if can_admin else {}),
        "project": project, "generation": generation, "snapshots": snapshots,
        "imports": imports, "training": training, "curves": curves,
        "versions": ModelVersion.objects.filter(project=project),
        "active": active, "can_admin": can_admin,
    })


def _runs_action(request: HttpRequest, project_id: int) -> HttpResponse:
    """Cancel a generation, snapshot, import or training run, or promote a model version (admins); a version
    whose run may have learned nothing is promoted only from the confirmation page."""
    from training.models import GenerationRun, ModelVersion, TrainingRun
    from training.registry import PromotionNeedsConfirmation, model_version_promote
    from training.runs import run_stop

    project = console_project(request, project_id, min_role=Role.ADMIN)
    if request.POST.get("promote"):
        version = ModelVersion.objects.filter(project=project, pk=request.POST["promote"]).first()
        if version is not None:
            try:
                model_version_promote(version=version, actor=request.user,
                                      confirm=request.POST.get("confirm") == "1")
            except PromotionNeedsConfirmation as exc:
                return render(request, "console/promote_confirm.html",
                              {"project": project, "version": version, "reason": str(exc)})
            messages.success(request, f"{version} is now the current {version.kind} model.")
    from labeling.models import ImportJob
    from training.models import DatasetSnapshot

    for model, field in ((GenerationRun, "run"), (TrainingRun, "training_run"), (DatasetSnapshot, "snapshot"),
                         (ImportJob, "import_job")):
        run = model.objects.filter(project=project, pk=request.POST.get(field) or 0).first()
        if run is not None and run_stop(run=run, actor=request.user):
            messages.success(request, f"Run {run.pk} will stop at its next step.")
    return redirect("console:runs", project_id=project.pk)
