"""Console page of the AI judges: each judge measured like a person (agreement with the
human consensus, judge-human next to human-human agreement with bootstrap intervals, per
guideline version, agreement with each annotator), its runs with progress; admins add a
judge, start a run or cancel one. Writes go through judges.services (audited there)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.console import console_project, console_view
from core.errors import DomainError
from judges.metrics import judge_figures
from judges.models import Judge, JudgeRun
from judges.services import judge_create, judge_run_cancel, judge_run_create, judge_update
from labeling.models import Project, Role
from training.endpoints import endpoints_configured
from training.models import ModelVersion


class JudgeForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Judge.Kind.choices)
    endpoint = forms.CharField(max_length=100, required=False,
                               help_text="Endpoint judges: a configured endpoint's name.")
    model = forms.CharField(max_length=500, required=False,
                            help_text="The model the endpoint serves, or an accepted local model.")
    reward_version = forms.ModelChoiceField(queryset=ModelVersion.objects.none(), required=False,
                                            label="Reward model (reward model judges)")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.0)
    max_tokens = forms.IntegerField(min_value=1, max_value=32768, initial=512)
    max_items_per_day = forms.IntegerField(min_value=1, required=False, label="Most items a day")
    trust_threshold = forms.FloatField(min_value=0, max_value=1, required=False,
                                       label="Trusted at agreement of at least")
    routes_disagreements = forms.BooleanField(required=False,
                                              label="Items it disputes go to people first")

    def __init__(self, *args: object, project: Project, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reward_version"].queryset = ModelVersion.objects.filter(
            project=project, kind=ModelVersion.Kind.REWARD)


@console_view
def judges_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id)
    form = JudgeForm(project=project)
    if request.method == "POST":
        project = console_project(request, project_id, min_role=Role.ADMIN)
        response, form = _action(request, project)
        if response is not None:
            return response
    judges = []
    usernames = dict(get_user_model().objects.filter(
        memberships__project=project).values_list("id", "username"))
    for judge in Judge.objects.filter(project=project).select_related("reward_version").order_by("id"):
        figures = judge_figures(judge)
        per_annotator = [(usernames.get(a, f"#{a}"), v) for a, v in figures["all"].per_annotator.items()]
        judges.append({"judge": judge, "periods": sorted(figures.items(), key=lambda p: p[0] != "all"),
                       "per_annotator": per_annotator,
                       "runs": JudgeRun.objects.filter(judge=judge).order_by("-id")[:10]})
    active = any(r.status in {"queued", "running"} for j in judges for r in j["runs"])
    return render(request, "console/judges.html", {
        "project": project, "judges": judges, "form": form, "active": active,
        "endpoints": sorted(endpoints_configured()),
        "can_admin": access.is_admin_of(request.user, project.pk),
    })


def _action(request: HttpRequest, project: Project) -> tuple[HttpResponse | None, JudgeForm]:
    form = JudgeForm(project=project)
    try:
        if request.POST.get("run"):
            judge = Judge.objects.get(project=project, pk=request.POST["run"])
            run = judge_run_create(judge=judge, actor=request.user)
            messages.success(request, f"Judge run {run.pk} queued ({len(run.item_ids)} items).")
        elif request.POST.get("pause") or request.POST.get("activate"):
            judge = Judge.objects.get(project=project, pk=request.POST.get("pause") or request.POST["activate"])
            judge = judge_update(judge=judge, actor=request.user, active=bool(request.POST.get("activate")))
            messages.success(request, f"Judge {judge.name} {'activated' if judge.active else 'paused'}.")
        elif request.POST.get("cancel"):
            run = JudgeRun.objects.get(judge__project=project, pk=request.POST["cancel"])
            if judge_run_cancel(run=run, actor=request.user):
                messages.success(request, f"Judge run {run.pk} will stop at its next chunk.")
        else:
            form = JudgeForm(request.POST, project=project)
            if not form.is_valid():
                return None, form
            data = {k: v for k, v in form.cleaned_data.items() if v not in (None, "")}
            judge = judge_create(project=project, actor=request.user, **data)
            messages.success(request, f"Judge {judge.name} added.")
    except (Judge.DoesNotExist, JudgeRun.DoesNotExist):
        messages.error(request, "No such judge or run in this project.")
    except DomainError as exc:
        form.add_error(None, str(exc))
        return None, form
    return redirect("console:judges", project_id=project.pk), form
