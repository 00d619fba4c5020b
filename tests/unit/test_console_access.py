"""The console is for reviewers and admins; a project's pages are for its members."""

from __future__ import annotations

from django.test import Client


def login(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)  # the login form itself is tested in test_auth.py
    return client


def test_annotator_gets_403_in_the_console(annotator, project) -> None:  # noqa: ANN001
    client = login(annotator)

    assert client.get("/console/").status_code == 403
    assert client.get(f"/console/projects/{project.pk}/").status_code == 403


def test_reviewer_sees_own_project_and_404_for_others(reviewer, project, other_project) -> None:  # noqa: ANN001, E501
    client = login(reviewer)

    index = client.get("/console/")
    assert index.status_code == 200 and b"Alpha" in index.content and b"Beta" not in index.content
    assert client.get(f"/console/projects/{project.pk}/").status_code == 200
    assert client.get(f"/console/projects/{other_project.pk}/").status_code == 404


def test_anonymous_is_sent_to_login(client: Client, project) -> None:  # noqa: ANN001
    response = client.get("/console/")

    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_login_page_has_no_sign_up(client: Client) -> None:
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert b"Sign in" in response.content and b"sign up" not in response.content.lower()
