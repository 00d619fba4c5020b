"""Pages every app shares: the styled 403 (with a way back) and the favicon."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.templatetags.static import static

from core import access


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A refused page says why and offers a way back (the console for its users, the
    project list for everyone else). The API answers its own 403s (DRF)."""
    reason = str(exception or "") or "You don't have access to this page."
    user = request.user
    console = user.is_authenticated and access.is_console_user(user) and request.path != "/console/"
    back_url, back_label = ("/console/", "Back to the console") if console else ("/", "Back to your projects")
    return render(request, "403.html", {"reason": reason, "back_url": back_url, "back_label": back_label},
                  status=403)


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico for clients that ask for it whatever the page says."""
    return HttpResponseRedirect(static("favicon.svg"))
