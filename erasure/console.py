"""Console pages of erasure. A project's admins: find a prompt by id, see what erasing it
removes (counts, the snapshots that would be emptied, the models that would be flagged),
confirm by typing its id; rebuild the snapshots that held erased data. Staff: the same
for an account, choosing whether the person's free text is kept or removed."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from core import access
from core.console import console_project, console_view
from core.errors import DomainError
from erasure.access import account_for_erasure, prompt_for_erasure
from erasure.models import ErasureRecord
from erasure.services.prompts import prompt_erase, prompt_erasure_preview
from erasure.services.snapshots import snapshot_rebuild
from erasure.services.users import user_erase, user_erasure_preview
from labeling.models import Role
from training.models import DatasetSnapshot


def _lines(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Counts as the confirmation pages list them ("external_preferences" -> "External preferences")."""
    return [(name.replace("_", " ").capitalize(), count) for name, count in counts.items()]


class FindPromptForm(forms.Form):
    prompt = forms.IntegerField(min_value=1, label="Prompt id")


class ConfirmPromptForm(forms.Form):
    confirm = forms.IntegerField(label="Type the prompt's id to confirm")


class FindAccountForm(forms.Form):
    username = forms.CharField(max_length=150, label="Username")


class ConfirmAccountForm(forms.Form):
    TEXT_CHOICES = [("keep", "Keep it (their username and e-mail are taken out of it)"),
                    ("remove", "Remove it")]

    text = forms.ChoiceField(choices=TEXT_CHOICES, widget=forms.RadioSelect,
                             label="Rationales, notes and demonstrations they wrote")
    confirm = forms.CharField(max_length=150, label="Type the username to confirm")


@console_view
def project_erasure(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    if request.method == "POST" and request.POST.get("rebuild"):
        return _rebuild(request, project.pk)
    form = FindPromptForm(request.GET or None)
    if form.is_valid():
        prompt_id = form.cleaned_data["prompt"]
        if project.prompts.filter(pk=prompt_id).exists():
            return redirect("console:erase-prompt", prompt_id=prompt_id)
        form.add_error("prompt", f"Project {project.name} has no prompt {prompt_id}.")
    return render(request, "console/erasure.html", {
        "project": project, "form": form,
        "records": ErasureRecord.objects.filter(project=project)[:50],
        "marked": DatasetSnapshot.objects.filter(project=project, contains_erased=True).order_by("-id"),
        "is_staff": request.user.is_staff})


def _rebuild(request: HttpRequest, project_id: int) -> HttpResponse:
    try:
        snapshot = access.object_for(request.user, DatasetSnapshot, int(request.POST["rebuild"]),
                                     min_role=Role.ADMIN, what="dataset snapshot")
        if snapshot.project_id != project_id:
            raise DomainError("that snapshot is not one of this project's")
        rebuilt = snapshot_rebuild(snapshot=snapshot, user=request.user)
        messages.success(request, f"Snapshot {rebuilt.pk} is being built to replace snapshot {snapshot.pk}.")
    except (DomainError, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("console:erasure", project_id=project_id)


@console_view
def erase_prompt(request: HttpRequest, prompt_id: int) -> HttpResponse:
    prompt = prompt_for_erasure(request.user, prompt_id)
    form = ConfirmPromptForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if form.cleaned_data["confirm"] != prompt.pk:
            form.add_error("confirm", f"Type {prompt.pk}, the id of the prompt to erase.")
        else:
            project_id = prompt.project_id
            record = prompt_erase(prompt=prompt, actor=request.user)
            messages.success(request, f"Prompt {prompt_id} is erased (erasure {record.pk}); "
                             f"{len(record.snapshots)} snapshots emptied.")
            return redirect("console:erasure", project_id=project_id)
    return render(request, "console/erase_prompt.html", {
        "project": prompt.project, "prompt": prompt, "form": form,
        "preview": (preview := prompt_erasure_preview(prompt=prompt)), "lines": _lines(preview.counts)})


@console_view
def accounts_erasure(request: HttpRequest) -> HttpResponse:
    """Staff: find an account (?user=<id> is its confirmation; a POST erases it). Other
    console users see that this is for staff."""
    if not request.user.is_staff:
        if request.method == "POST":
            raise PermissionDenied("Erasing an account is for staff.")
        return render(request, "console/erasure_accounts.html", {"staff_only": True})
    if request.method == "POST" or "user" in request.GET:
        return _erase_account(request)
    form = FindAccountForm(request.GET or None)
    if form.is_valid():
        user = get_user_model().objects.filter(username=form.cleaned_data["username"]).first()
        if user is not None:
            return redirect(f"{reverse('console:erasure-accounts')}?user={user.pk}")
        form.add_error("username", "No account has that username.")
    return render(request, "console/erasure_accounts.html", {
        "form": form, "records": ErasureRecord.objects.filter(kind=ErasureRecord.Kind.USER)[:50]})


def _erase_account(request: HttpRequest) -> HttpResponse:
    user_id = (request.POST if request.method == "POST" else request.GET).get("user", "")
    if not user_id.isdigit():
        raise Http404("No such account.")
    account = account_for_erasure(request.user, int(user_id))
    form = ConfirmAccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if form.cleaned_data["confirm"] != account.get_username():
            form.add_error("confirm", "Type the account's username exactly.")
        else:
            try:
                record = user_erase(user=account, actor=request.user,
                                    remove_text=form.cleaned_data["text"] == "remove")
            except DomainError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Account {account.pk} is erased; it is now {record.pseudonym}.")
                return redirect("console:erasure-accounts")
    return render(request, "console/erase_account.html", {
        "account": account, "form": form, "preview": (preview := user_erasure_preview(user=account)),
        "lines": _lines(preview.counts)})
