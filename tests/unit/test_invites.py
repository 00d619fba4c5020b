"""Invite links: one-time, expiring, they give a role in one project."""

from __future__ import annotations

from datetime import timedelta

from django.test import Client
from django.utils import timezone

from labeling.models import Invite, Membership


def create_invite(as_user, project, admin, role: str = "annotator") -> str:  # noqa: ANN001
    response = as_user(admin).post(f"/api/projects/{project.pk}/invites", {"role": role},
                                   format="json")
    assert response.status_code == 201
    return response.json()["url"].split("/accounts/invite/")[1].rstrip("/")


def test_invite_creates_an_account_once(as_user, project, project_admin) -> None:  # noqa: ANN001
    token = create_invite(as_user, project, project_admin, role="reviewer")
    client = Client()

    response = client.post(f"/accounts/invite/{token}/",
                           {"username": "newbie", "password": "correct-horse-battery"})
    again = Client().get(f"/accounts/invite/{token}/")

    assert response.status_code == 302
    assert Membership.objects.get(user__username="newbie").role == "reviewer"
    assert again.status_code == 404


def test_expired_invite_is_refused(as_user, project, project_admin) -> None:  # noqa: ANN001
    token = create_invite(as_user, project, project_admin)
    Invite.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    response = Client().post(f"/accounts/invite/{token}/",
                             {"username": "late", "password": "correct-horse-battery"})

    assert response.status_code == 404
    assert not Membership.objects.filter(user__username="late").exists()


def test_weak_password_is_explained(as_user, project, project_admin) -> None:  # noqa: ANN001
    token = create_invite(as_user, project, project_admin)

    response = Client().post(f"/accounts/invite/{token}/", {"username": "weak", "password": "123"})

    assert response.status_code == 200 and b"too short" in response.content
    assert Invite.objects.get().used_at is None


def test_annotator_cannot_invite(as_user, project, annotator) -> None:  # noqa: ANN001
    response = as_user(annotator).post(f"/api/projects/{project.pk}/invites",
                                       {"role": "admin"}, format="json")

    assert response.status_code == 403
