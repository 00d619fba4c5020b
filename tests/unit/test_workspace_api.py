"""The annotator API and page: blind, scoped to the caller, idempotent."""

from __future__ import annotations

import pytest
from django.test import Client

from core.rendering import render_markdown
from labeling.models import Candidate, Ranking
from tests.factories import make_items

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


def test_next_item_is_blind(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1, model="secret-model-name")

    response = as_user(annotator).get(f"/api/projects/{project.pk}/next")

    body = response.json()
    assert response.status_code == 200
    assert [c["label"] for c in body["candidates"]] == ["A", "B", "C"]
    assert b"secret-model-name" not in response.content
    assert "rankings_count" not in body and "model_name" not in str(body)


def test_nothing_left_is_204(as_user, project, annotator) -> None:  # noqa: ANN001
    assert as_user(annotator).get(f"/api/projects/{project.pk}/next").status_code == 204


def test_outsider_gets_404_for_next_and_for_others_assignments(as_user, project, annotator,
                                                               outsider) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()

    assert as_user(outsider).get(f"/api/projects/{project.pk}/next").status_code == 404
    stolen = as_user(outsider).post(f"/api/assignments/{assignment['id']}/ranking",
                                    {"tiers": [[1]]}, format="json", HTTP_IDEMPOTENCY_KEY="x")
    assert stolen.status_code == 404


def test_second_annotator_cannot_submit_my_assignment(as_user, project, annotator,
                                                      second_annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()
    tiers = [[c["id"]] for c in assignment["candidates"]]

    response = as_user(second_annotator).post(f"/api/assignments/{assignment['id']}/ranking",
                                              {"tiers": tiers}, format="json",
                                              HTTP_IDEMPOTENCY_KEY="x")

    assert response.status_code == 404 and Ranking.objects.count() == 0


def test_a_member_removed_from_the_project_cannot_submit_their_lease(as_user, project,
                                                                     annotator) -> None:  # noqa: ANN001
    """The submit checks the membership in the statement that locks the assignment (#19),
    as the view's own read did."""
    from labeling.models import Membership

    make_items(project, 1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    Membership.objects.filter(user=annotator, project=project).delete()

    response = client.post(f"/api/assignments/{assignment['id']}/ranking",
                           {"tiers": [[c["id"]] for c in assignment["candidates"]]},
                           format="json", HTTP_IDEMPOTENCY_KEY="x")

    assert response.status_code == 404 and Ranking.objects.count() == 0


@pytest.mark.parametrize(("body", "headers"), [
    ({"tiers": "not a list"}, {"HTTP_IDEMPOTENCY_KEY": "x"}),  # a 400 for its owner
    ({"tiers": [["a"]]}, {}),  # no Idempotency-Key: a 400 for its owner
    ({"tiers": [["a"]]}, {"HTTP_IDEMPOTENCY_KEY": "x"}),
])
def test_someone_elses_assignment_is_404_before_any_400(as_user, project, annotator,
                                                        second_annotator, body, headers) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()

    theirs = as_user(second_annotator).post(f"/api/assignments/{assignment['id']}/ranking", body,
                                            format="json", **headers)
    unknown = as_user(annotator).post(f"/api/assignments/{assignment['id'] + 1000}/ranking", body,
                                      format="json", **headers)

    assert (theirs.status_code, unknown.status_code) == (404, 404)
    assert Ranking.objects.count() == 0


def test_submit_is_idempotent_over_http(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    tiers = [[c["id"]] for c in assignment["candidates"]]
    url = f"/api/assignments/{assignment['id']}/ranking"

    first = client.post(url, {"tiers": tiers}, format="json", HTTP_IDEMPOTENCY_KEY="abc")
    retry = client.post(url, {"tiers": tiers}, format="json", HTTP_IDEMPOTENCY_KEY="abc")

    assert (first.status_code, retry.status_code) == (201, 200)
    assert first.json()["id"] == retry.json()["id"] and Ranking.objects.count() == 1


def test_bad_ranking_is_a_400_naming_the_ids(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    first_id = assignment["candidates"][0]["id"]

    response = client.post(f"/api/assignments/{assignment['id']}/ranking",
                           {"tiers": [[first_id]]}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_ranking" and "missing" in response.json()["detail"]


def test_missing_idempotency_key_is_a_400(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()

    response = client.post(f"/api/assignments/{assignment['id']}/ranking",
                           {"tiers": [[c["id"]] for c in assignment["candidates"]]}, format="json")

    assert response.status_code == 400 and "Idempotency-Key" in response.json()["detail"]
    assert Ranking.objects.count() == 0


def test_skip_over_http(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()

    response = client.post(f"/api/assignments/{assignment['id']}/skip", {"reason": "broken"},
                           format="json")
    again = client.post(f"/api/assignments/{assignment['id']}/skip", {"reason": "broken"},
                        format="json")

    assert response.status_code == 200 and again.status_code == 409


def test_workspace_page_renders_answers_inert_and_blind(project, annotator) -> None:  # noqa: ANN001
    item = make_items(project, 1, model="secret-model-name")[0]
    Candidate.objects.filter(pk=item.item_candidates.first().candidate_id).update(
        text=XSS, text_html=str(render_markdown(XSS)))
    client = Client()
    client.force_login(annotator)

    html = client.get(f"/annotate/{project.slug}/").content.decode()

    assert 'class="answer card"' in html
    assert "<script>window.__xss" not in html and "onerror" not in html
    assert "secret-model-name" not in html


def test_workspace_prefetch_fragment(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 2)
    client = Client()
    client.force_login(annotator)
    page = client.get(f"/annotate/{project.slug}/")

    fragment = client.get(f"/annotate/{project.slug}/prefetch")

    assert page.status_code == 200 and fragment.status_code == 200
    assert fragment.content.decode().count('class="answer card"') == 3
    assert client.get(f"/annotate/{project.slug}/prefetch").content == fragment.content


def test_workspace_is_404_for_outsiders(project, outsider) -> None:  # noqa: ANN001
    client = Client()
    client.force_login(outsider)

    assert client.get(f"/annotate/{project.slug}/").status_code == 404
    assert client.get(f"/annotate/{project.slug}/prefetch").status_code == 404


def test_prefetch_must_be_a_boolean(as_user, project, annotator) -> None:  # noqa: ANN001
    """Found by Schemathesis: `?prefetch=null&prefetch=null` was taken as false (a 200)."""
    make_items(project, 2)
    client = as_user(annotator)
    url = f"/api/projects/{project.pk}/next"

    for bad in ("?prefetch=null", "?prefetch=null&prefetch=null", "?prefetch=yes", "?prefetch=true&prefetch=1"):
        response = client.get(url + bad)
        assert response.status_code == 400 and "prefetch" in response.json(), bad
    assert client.get(url + "?prefetch=false").status_code == 200
    assert client.get(url + "?prefetch=true").status_code == 200
