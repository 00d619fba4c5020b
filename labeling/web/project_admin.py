"""Console pages that run a project rather than watch it: create one (staff), its settings,
uploading prompts (dry run first, then the import, with progress) and its members and
invites (admins). Each action calls the same service as the API, which audits it."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from core.console import console_project, console_view
from core.errors import DomainError
from guidelines.models import Guideline
from labeling.axes import PRESETS, AxisError, axes_clean
from labeling.models import ImportJob, Invite, Membership, Project, Ranking, Role
from labeling.services import imports, members
from labeling.services.projects import project_create, project_update

SETTINGS_FIELDS = ["name", "slug", "description", "mode", "k", "overlap", "adaptive_overlap",
                   "agreement_threshold", "assignment_strategy", "gold_rate", "lease_minutes",
                   "allow_ties", "demonstrations", "guideline", "status"]


class ProjectForm(forms.ModelForm):
    """The settings an admin sets; the model's validators and help texts, bounded like the API."""

    k = forms.IntegerField(min_value=2, max_value=16, initial=4, label="K (answers per item)",
                           help_text="Answers sampled per prompt and ranked together.")
    overlap = forms.IntegerField(min_value=1, max_value=50, initial=3, label="Overlap",
                                 help_text="Rankings collected per item.")
    agreement_threshold = forms.FloatField(
        min_value=0.0, max_value=1.0, initial=0.6,
        help_text="An item whose rankings agree at least this much (pairwise) is accepted; below, disputed.")
    gold_rate = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.0,
                                 help_text="Share of items served that are gold (known answer) items.")
    lease_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=30, label="Lease (minutes)",
                                       help_text="A claimed item returns to the pool after this long.")

    axes = forms.ChoiceField(
        label="Axes", required=False,
        choices=[("overall", "Overall: one ranking (the default)"),
                 ("helpful_harmless", "Helpful + harmless: two rankings and a safety mark per answer (Llama 2)"),
                 ("helpsteer", "HelpSteer attributes: five 0–4 ratings per answer"),
                 ("custom", "Custom: the list below")],
        help_text="What annotators judge each answer on; each axis's description is shown with the guideline.")
    axes_custom = forms.CharField(
        label="Custom axes (JSON)", required=False, widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text='A list of axes, e.g. [{"key": "helpful", "name": "Helpful", "description": "…"}, '
                  '{"key": "verbosity", "kind": "rating", "required": false, "anchors": ["0 …", "1 …", "2 …", '
                  '"3 …", "4 …"]}]. Kinds: ranking or rating; purpose: general, helpfulness or harmlessness.')

    class Meta:
        model = Project
        fields = SETTINGS_FIELDS

    def __init__(self, *args: object, project: Project | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._init_axes(project)
        owned = Q(project__isnull=True) | (Q(project=project) if project is not None else Q(pk__in=[]))
        self.fields["guideline"].queryset = Guideline.objects.filter(owned).order_by("title")
        self.fields["guideline"].help_text = "A shared guideline or one this project owns."
        self.fields["guideline"].label_from_instance = lambda g: f"{g.title} ({g.slug})"
        self.fields["description"].widget.attrs["rows"] = 3
        if project is None:
            del self.fields["status"]

    def _init_axes(self, project: Project | None) -> None:
        """The current axes as the initial choice: a preset when they are one, else custom
        with the stored list to edit (names, descriptions and anchors stay editable)."""
        self.fields["axes"].initial = "overall"
        if project is None or not project.axes:
            return
        preset = next((name for name in PRESETS if axes_clean(name) == project.axes), None)
        self.fields["axes"].initial = preset or "custom"
        self.fields["axes_custom"].initial = json.dumps(project.axes, indent=1, ensure_ascii=False)
        if Ranking.objects.filter(item__project=project).exists():
            self.fields["axes"].help_text += (
                " This project has rankings, so its axes' keys and kinds are fixed: rename them, "
                "edit descriptions, anchors or which are required, or start a new project.")

    def clean(self) -> dict[str, Any]:
        """`axes` becomes what the service takes (a preset name or a list) or is left out
        when unchanged; a malformed list is an inline error on the field that holds it."""
        data = super().clean()
        choice = data.pop("axes", "")
        custom = data.pop("axes_custom", "").strip()
        if not choice:  # not sent (a form posted without it): the axes stay as they are
            return data
        if choice == "custom":
            try:
                value: Any = json.loads(custom)
                axes_clean(value)
            except json.JSONDecodeError as exc:
                self.add_error("axes_custom", f"Not valid JSON: {exc.msg} (line {exc.lineno}).")
                return data
            except AxisError as exc:
                self.add_error("axes_custom", str(exc))
                return data
        elif "axes_custom" in self.changed_data and custom:
            self.add_error("axes", "You edited the custom list: choose Custom to use it.")
            return data
        else:
            value = choice
        implicit = choice == "overall" and not self.instance.axes  # what it already is
        if ("axes" in self.changed_data or "axes_custom" in self.changed_data) and not implicit:
            data["axes"] = value
        return data


@console_view
def project_new(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can create projects.")
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = project_create(actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(_axes_field(form, exc), str(exc))
        else:
            messages.success(request, f"Project {project.name} created. Next: upload prompts.")
            return redirect("console:upload", project_id=project.pk)
    return render(request, "console/project_form.html", {"form": form, "project": None})


@console_view
def project_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    # The form validates a copy (inline errors); the service saves and audits the change.
    form = ProjectForm(request.POST or None, instance=Project.objects.get(pk=project.pk), project=project)
    if request.method == "POST" and form.is_valid():
        changed = {name: form.cleaned_data[name] for name in form.changed_data if name in form.cleaned_data}
        if "axes" in form.cleaned_data:
            changed["axes"] = form.cleaned_data["axes"]
        try:
            project_update(project=project, actor=request.user, **changed)
        except DomainError as exc:
            form.add_error(_axes_field(form, exc), str(exc))
        else:
            messages.success(request, "Settings saved." if changed else "Nothing changed.")
            return redirect("console:settings", project_id=project.pk)
    return render(request, "console/project_form.html", {"form": form, "project": project})


def _axes_field(form: ProjectForm, exc: DomainError) -> str | None:
    """The service's axes errors ("axes: ...") belong beside the axes fields."""
    if not str(exc).startswith("axes:"):
        return None
    return "axes_custom" if form.data.get("axes") == "custom" else "axes"


class UploadForm(forms.Form):
    file = forms.FileField(
        label="Prompts file", help_text="JSONL, CSV or Parquet, optionally gzipped (.gz). The dry run "
                                        "checks every row before anything is written.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.ndjson,.json,.csv,.parquet,.gz"}))


def _job_for(project: Project, job_id: int) -> ImportJob:
    job = ImportJob.objects.filter(project=project, pk=job_id).first()
    if job is None:
        raise Http404("No such upload.")
    return job


@console_view
def upload(request: HttpRequest, project_id: int) -> HttpResponse:
    """Pick a file: a dry run validates it (a job, with progress); its result lists every
    invalid line; the admin then imports it, skipping invalid rows only if they choose."""
    project = console_project(request, project_id, min_role=Role.ADMIN)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        file = form.cleaned_data["file"]
        try:
            job = imports.import_upload(project=project, name=file.name, size=file.size,
                                        chunks=file.chunks(), actor=request.user, dry_run=True)
        except DomainError as exc:
            form.add_error("file", str(exc))
        else:
            return redirect("console:upload-job", project_id=project.pk, job_id=job.pk)
    return render(request, "console/upload.html", {
        "project": project, "form": form, "jobs": project.imports.order_by("-id")[:20]})


@console_view
def upload_job(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    job = _job_for(project, job_id)
    if request.method == "POST":
        try:
            started = imports.import_after_dry_run(
                dry_run=job, skip_invalid=request.POST.get("skip_invalid") == "1", actor=request.user)
        except DomainError as exc:
            messages.error(request, str(exc))
        else:
            return redirect("console:upload-job", project_id=project.pk, job_id=started.pk)
        return redirect("console:upload-job", project_id=project.pk, job_id=job.pk)
    return render(request, "console/upload_job.html", {
        "project": project, "job": job, "imported": job.imports.order_by("-id").first(),
        "status_url": reverse("console:upload-status", args=[project.pk, job.pk])})


@console_view
def upload_status(request: HttpRequest, project_id: int, job_id: int) -> JsonResponse:
    """The job's status and progress, for the page's polling."""
    project = console_project(request, project_id, min_role=Role.ADMIN)
    job = _job_for(project, job_id)
    progress = job.progress or {}
    done, total = progress.get("bytes_done") or 0, progress.get("bytes_total") or 0
    return JsonResponse({"status": job.status, "percent": round(100 * done / total) if total else 0,
                         "finished": job.status in ("done", "failed", "cancelled")})


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="An existing account.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR, label="Invite role")


@console_view
def members_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Add an existing user with a role, change a role, remove (their leases go back to the
    pool); invite links with their state, revoke an open one. Admins only."""
    project = console_project(request, project_id, min_role=Role.ADMIN)
    form, invite_url = MemberForm(prefix="add"), None
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "add":
                form = MemberForm(request.POST, prefix="add")
                if form.is_valid():
                    membership = members.member_add(project=project, actor=request.user, **form.cleaned_data)
                    messages.success(request, f"{membership.user.username} is now {membership.role}.")
                    return redirect("console:members", project_id=project.pk)
            elif action in ("role", "remove"):
                membership = Membership.objects.filter(project=project,
                                                       user_id=_int(request.POST.get("user"))).first()
                if membership is None:
                    raise Http404("No such member.")
                if action == "role":
                    role = request.POST.get("role", "")
                    members.membership_set(project=project, user=membership.user, role=role, actor=request.user)
                    messages.success(request, f"{membership.user.username} is now {role}.")
                else:
                    members.member_remove(project=project, user=membership.user, actor=request.user)
                    messages.success(request, f"{membership.user.username} was removed; their leases "
                                              "went back to the pool.")
                return redirect("console:members", project_id=project.pk)
            elif action == "invite":
                invite_form = InviteForm(request.POST)
                if invite_form.is_valid():
                    _invite, token = members.invite_create(project=project, role=invite_form.cleaned_data["role"],
                                                           created_by=request.user)
                    invite_url = request.build_absolute_uri(reverse("invite-accept", args=[token]))
            elif action == "revoke":
                invite = Invite.objects.filter(project=project, pk=_int(request.POST.get("invite"))).first()
                if invite is None:
                    raise Http404("No such invite.")
                members.invite_revoke(invite=invite, actor=request.user)
                messages.success(request, "Invite revoked: the link no longer works.")
                return redirect("console:members", project_id=project.pk)
        except DomainError as exc:
            messages.error(request, str(exc))
    return render(request, "console/members.html", {
        "project": project, "form": form, "invite_form": InviteForm(), "invite_url": invite_url,
        "memberships": project.memberships.select_related("user").order_by("user__username"),
        "invites": project.invites.select_related("created_by", "used_by").order_by("-id")[:100],
        "roles": Role.choices,
    }, status=200)


def _int(value: str | None) -> int:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 18 else 0
