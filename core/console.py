"""What every console page shares, whichever app it belongs to: `console_view` (signed
in, and a reviewer or admin somewhere, else 403) and `console_project` (the project for
this user: 404 outside their projects, 403 below the role)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from core import access
from labeling.models import Project, Role

View = Callable[..., HttpResponse]


def console_view(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if not access.is_console_user(request.user):
            raise PermissionDenied("The console is for reviewers and admins.")
        return view(request, *args, **kwargs)

    return wrapper


def console_project(request: HttpRequest, project_id: int, *, min_role: str = Role.REVIEWER
                    ) -> Project:
    return access.project_for(request.user, project_id, min_role=min_role)
