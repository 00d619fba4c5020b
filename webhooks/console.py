"""Console pages of a project's webhooks (admins only): register one (its secret shown
once), turn it on or off, delete it, and read its delivery log (status, latency,
response code) with a button to redeliver an event under the same event id."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core.console import console_project, console_view
from core.errors import DomainError
from labeling.models import Role
from webhooks.api import delivery_for, hook_for
from webhooks.models import EventType
from webhooks.services import delivery_redeliver, webhook_create, webhook_delete, webhook_update

NEW_SECRET = "webhooks.new_secret"  # noqa: S105 - a session key: the new hook's id and secret, until shown


class WebhookForm(forms.Form):
    url = forms.CharField(max_length=500, label="URL")
    events = forms.MultipleChoiceField(choices=EventType.choices, widget=forms.CheckboxSelectMultiple)
    description = forms.CharField(max_length=200, required=False)


@console_view
def webhooks_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = console_project(request, project_id, min_role=Role.ADMIN)
    form = WebhookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            hook = webhook_create(project=project, actor=request.user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, str(exc))
        else:
            request.session[NEW_SECRET] = [hook.pk, hook.secret]
            return redirect("console:webhook", hook_id=hook.pk)
    return render(request, "console/webhooks.html", {
        "project": project, "hooks": project.webhooks.order_by("id"), "form": form})


@console_view
def webhook_page(request: HttpRequest, hook_id: int) -> HttpResponse:
    hook = hook_for(request.user, hook_id)
    if request.method == "POST":
        return _action(request, hook)
    new_id, secret = request.session.pop(NEW_SECRET, [None, None])
    deliveries = hook.deliveries.select_related("event").prefetch_related("log").order_by("-id")[:50]
    return render(request, "console/webhook.html", {
        "project": hook.project, "hook": hook, "deliveries": deliveries,
        "secret": secret if new_id == hook.pk else None})


def _action(request: HttpRequest, hook: object) -> HttpResponse:
    try:
        if request.POST.get("redeliver"):
            delivery = delivery_for(request.user, int(request.POST["redeliver"]))
            if delivery.hook_id != hook.pk:
                raise DomainError("that delivery is not one of this webhook's")
            delivery_redeliver(delivery=delivery, actor=request.user)
            messages.success(request, f"Event {delivery.event.event_id} queued again.")
        elif request.POST.get("delete"):
            project_id = hook.project_id
            webhook_delete(hook=hook, actor=request.user)
            messages.success(request, "Webhook deleted.")
            return redirect("console:webhooks", project_id=project_id)
        elif request.POST.get("active") in {"0", "1"}:
            webhook_update(hook=hook, actor=request.user, active=request.POST["active"] == "1")
            messages.success(request, "Webhook turned " + ("on." if hook.active else "off."))
    except (DomainError, ValueError) as exc:
        messages.error(request, str(exc))
    return redirect("console:webhook", hook_id=hook.pk)
