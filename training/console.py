"""Console page of a project's training schedule: admins edit it, reviewers read it; both
see what every tick decided and why."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.errors import DomainError
from labeling.console import console_project, console_view
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
