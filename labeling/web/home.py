"""Server-rendered pages outside the console: home and invite sign-up."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from core import access
from core.errors import DomainError
from labeling.models import Membership
from labeling.services.members import invite_accept, invite_lookup


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = access.projects_for(request.user).order_by("name")
    roles = dict(
        Membership.objects.filter(user=request.user).values_list("project_id", "role")
    )
    rows = [(project, "admin" if request.user.is_staff else roles.get(project.pk))
            for project in projects]
    return render(request, "labeling/home.html", {
        "rows": rows, "console": access.is_console_user(request.user),
    })


def invite_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    error = ""
    try:
        invite = invite_lookup(token=token)
    except DomainError as exc:
        return render(request, "registration/invite.html", {"error": str(exc)}, status=404)
    if request.method == "POST":
        try:
            user = invite_accept(
                token=token, username=request.POST.get("username", "").strip(),
                password=request.POST.get("password", ""),
            )
        except DomainError as exc:
            error = str(exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
    return render(request, "registration/invite.html", {"invite": invite, "error": error})
