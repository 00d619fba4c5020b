"""Who may erase what: an account, staff only (a project admin could otherwise erase a
colleague who works in other projects too); a prompt, its project's admins."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from core import access
from labeling.models import Prompt, Role


def account_for_erasure(user: access.User, user_id: int) -> AbstractBaseUser:
    if not user.is_authenticated or not user.is_staff:
        raise PermissionDenied("Erasing an account is for staff.")
    account = get_user_model().objects.filter(pk=user_id).first()
    if account is None:
        raise Http404("No such account.")
    return account


def prompt_for_erasure(user: access.User, prompt_id: int) -> Prompt:
    return access.prompt_for(user, prompt_id, min_role=Role.ADMIN)
