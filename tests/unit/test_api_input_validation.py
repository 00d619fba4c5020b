"""Bad API input is a 4xx that says what is wrong, never a 500 and never silently
ignored: wrong JSON types, unknown keys, NUL characters, bad pages and orderings, taken
slugs, blank names. Most cases are requests the API fuzzer sent
(tests/integration/test_api_fuzz.py), kept here as the answer each should get."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.tokens import token_authenticate
from labeling.models import Project
from tests.factories import PASSWORD, PromptFactory


def test_a_non_ascii_digit_prompt_filter_is_a_400_not_a_500(as_user, project, reviewer) -> None:  # noqa: ANN001
    # "²".isdigit() is true and int("²") raises: this was a 500.
    response = as_user(reviewer).get(f"/api/projects/{project.pk}/candidates/", {"prompt": "²"})

    assert response.status_code == 400
    assert "prompt" in response.json()


@pytest.mark.parametrize("settings_value", [{"duplicates": {}}, {"duplicates": "sometimes"},
                                            {"pairs_per_prompt": 0}, {"pairs_per_prompt": None},
                                            [], "drop"])
def test_bad_generation_settings_are_a_400(as_user, project, project_admin, settings_value) -> None:  # noqa: ANN001
    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/",
                                            {"generation_settings": settings_value}, format="json")

    assert response.status_code == 400
    assert "generation_settings" in response.json()


def test_good_generation_settings_are_saved(as_user, project, project_admin) -> None:  # noqa: ANN001
    value = {"pairs_per_prompt": 2, "duplicates": "drop"}

    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/", {"generation_settings": value},
                                            format="json")

    assert response.status_code == 200
    assert Project.objects.get(pk=project.pk).generation_settings == value


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "limit=1001", "limit=-5", "offset=-1", "offset=1.5",
                                   "limit=", "limit=5&limit=6", "limit=%C2%B2"])
def test_a_bad_page_is_a_400_not_the_first_page(as_user, project, annotator, query: str) -> None:  # noqa: ANN001
    PromptFactory(project=project)

    response = as_user(annotator).get(f"/api/projects/{project.pk}/prompts/?{query}")

    assert response.status_code == 400, response.content


def test_a_good_page_is_served(as_user, project, annotator) -> None:  # noqa: ANN001
    prompts = [PromptFactory(project=project) for _ in range(3)]

    response = as_user(annotator).get(f"/api/projects/{project.pk}/prompts/", {"limit": 1, "offset": 1})

    assert response.status_code == 200
    assert [p["id"] for p in response.json()["results"]] == [prompts[1].pk]


def test_an_unknown_prompt_ordering_is_a_400(as_user, project, annotator) -> None:  # noqa: ANN001
    PromptFactory(project=project)
    url = f"/api/projects/{project.pk}/prompts/"

    unknown = as_user(annotator).get(url, {"ordering": "project__memberships__user__password"})
    known = as_user(annotator).get(url, {"ordering": "-id"})

    assert unknown.status_code == 400 and "ordering" in unknown.json()
    assert known.status_code == 200


def test_token_sign_in_ignores_a_stale_token_header(api, annotator) -> None:  # noqa: ANN001
    # A client whose token was revoked sends it along when it signs in again: DRF's own
    # view read it first and answered 403 "Invalid token.".
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = api.post("/api/auth/token", {"username": annotator.username, "password": PASSWORD},
                        format="json")

    assert response.status_code == 200
    assert token_authenticate(key=response.json()["token"]).user == annotator


def test_an_unknown_api_url_answers_json(client: Client, db: None) -> None:
    api_miss = client.get("/api/projects/not-a-number/")
    page_miss = client.get("/no-such-page/")

    assert api_miss.status_code == 404 and api_miss["Content-Type"] == "application/json"
    assert api_miss.json()["code"] == "not_found"
    assert page_miss.status_code == 404 and "text/html" in page_miss["Content-Type"]


@pytest.mark.parametrize(("field", "value"), [("name", 5), ("allow_ties", "yes"), ("allow_ties", 1),
                                              ("k", "4"), ("k", 4.5), ("agreement_threshold", "0.5"),
                                              ("status", 0), ("description", ["x"])])
def test_a_json_value_of_the_wrong_type_is_a_400(as_user, project, project_admin, field: str,  # noqa: ANN001
                                                 value: object) -> None:
    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/", {field: value}, format="json")

    assert response.status_code == 400
    assert field in response.json()


def test_a_whole_float_is_an_integer_as_in_json_schema(as_user, project, project_admin) -> None:  # noqa: ANN001
    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/", {"k": 5.0}, format="json")

    assert response.status_code == 200
    assert Project.objects.get(pk=project.pk).k == 5


def test_a_number_is_not_a_system_prompt(as_user, project, project_admin) -> None:  # noqa: ANN001
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/generation-runs",
                                           {"backend": "builtin-tiny", "system_prompt": 0}, format="json")

    assert response.status_code == 400
    assert "system_prompt" in response.json()


def test_form_encoded_bodies_are_refused(as_user, project, project_admin) -> None:  # noqa: ANN001
    # A form cannot say "false" or "0" as a boolean or an integer, so DRF guessed.
    response = as_user(project_admin).post(f"/api/projects/{project.pk}/datasets",
                                           {"kinds": "pairs", "conversational": "0"}, format="multipart")

    assert response.status_code == 415


def test_the_schema_documents_the_errors(client: Client, db: None) -> None:
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]

    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if path == "/api/auth/token":
                assert operation["security"] == [{}] and "400" in codes
                continue
            assert "403" in codes, (method, path)
            assert ("404" in codes) == ("{" in path), (method, path)
            assert ("400" in codes) == (method != "delete"), (method, path)
            if (method, path) in {("post", "/api/projects/"), ("patch", "/api/projects/{project_id}/")}:
                assert "409" in codes, (method, path)  # a taken slug
            if any(parameter["in"] == "query" for parameter in operation.get("parameters", [])):
                assert "414" in codes, (method, path)  # gunicorn's limit on the request line
            bad = operation["responses"].get("400", {}).get("content", {}).get("application/json", {})
            assert not bad or bad["schema"].get("additionalProperties") == {}, (method, path)
            body = operation.get("requestBody", {}).get("content", {})
            assert set(body) <= {"application/json", "multipart/form-data"}, (method, path)


@pytest.mark.parametrize("path", ["prompts/?source=a%00b", "annotators?period=a%00b"])
def test_a_nul_in_a_text_filter_is_a_400_not_a_500(as_user, project, project_admin, path: str) -> None:  # noqa: ANN001
    # PostgreSQL refuses a text literal with NUL in it; SQLite takes it, so the 500 only
    # showed on PostgreSQL: the assertion that matters here is the 400.
    response = as_user(project_admin).get(f"/api/projects/{project.pk}/{path}")

    assert response.status_code == 400


@pytest.mark.parametrize("settings_value", [{"x\u0000": 1}, {"note": "a\u0000"}, {"notes": ["\u0000"]},
                                            {"pairs_per_prompt": 2, "extra": 1}])
def test_a_nul_or_an_unknown_key_in_stored_json_is_a_400_not_a_500(as_user, project, project_admin,  # noqa: ANN001
                                                                    settings_value) -> None:
    # jsonb has no NUL character: PostgreSQL answered "unsupported Unicode escape" (a 500).
    # Unknown keys are refused too, as the schema now says (additionalProperties: false).
    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/",
                                            {"generation_settings": settings_value}, format="json")

    assert response.status_code == 400
    assert "generation_settings" in response.json()


def test_a_taken_slug_is_a_409_conflict(as_user, project, other_project, staff) -> None:  # noqa: ANN001
    response = as_user(staff).patch(f"/api/projects/{project.pk}/", {"slug": other_project.slug}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "unique" and "slug" in body and body["detail"]


def test_a_taken_slug_and_a_bad_field_stay_a_400(as_user, project, other_project, staff) -> None:  # noqa: ANN001
    response = as_user(staff).patch(f"/api/projects/{project.pk}/", {"slug": other_project.slug, "k": 99},
                                    format="json")

    assert response.status_code == 400


@pytest.mark.parametrize("username", ["has space", "semi;colon", "quote'"])
def test_a_username_outside_djangos_rule_is_a_400(as_user, staff, username: str) -> None:  # noqa: ANN001
    response = as_user(staff).post("/api/users/", {"username": username, "password": PASSWORD}, format="json")

    assert response.status_code == 400
    assert "username" in response.json()


def test_the_schema_refuses_the_blank_strings_drf_refuses(client: Client, db: None) -> None:
    # DRF strips "\x1d" (str.strip() counts it as white space) and then answers "may not be
    # blank"; with only minLength 1 the schema had called it a valid name.
    name = client.get("/api/schema/", {"format": "json"}).json()[
        "components"]["schemas"]["ProjectInputRequest"]["properties"]["name"]

    assert not re.search(name["pattern"], "\x1d") and not re.search(name["pattern"], " \ufeff")
    assert re.search(name["pattern"], " a ")


@pytest.mark.parametrize("name", ["\x1d", " \u3000 ", "\ufeff"])
def test_a_blank_project_name_is_a_400(as_user, project, project_admin, name: str) -> None:  # noqa: ANN001
    response = as_user(project_admin).patch(f"/api/projects/{project.pk}/", {"name": name}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()


def test_deleting_a_project_with_labels_is_a_409_not_a_500(as_user, project, project_admin,  # noqa: ANN001
                                                         annotator) -> None:
    # Rankings, items and runs are on protected foreign keys: project.delete() raised
    # ProtectedError, a 500.
    from labeling.blind import tiers_as_shown
    from labeling.services.assignment import next_item
    from labeling.services.rankings import RankingInput, ranking_submit
    from tests.factories import make_items

    make_items(project, 1, k=2)
    assignment = next_item(annotator=annotator, project=project)
    ranking_submit(annotator=annotator, assignment_id=assignment.pk, idempotency_key="k",
                   data=RankingInput(tiers=tiers_as_shown(assignment, [[c] for c in assignment.display_order])))

    response = as_user(project_admin).delete(f"/api/projects/{project.pk}/")

    assert response.status_code == 409 and response.json()["code"] == "protected"
    assert Project.objects.filter(pk=project.pk).exists()


def test_deleting_an_empty_project_still_works(as_user, project, project_admin) -> None:  # noqa: ANN001
    response = as_user(project_admin).delete(f"/api/projects/{project.pk}/")

    assert response.status_code == 204
    assert not Project.objects.filter(pk=project.pk).exists()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/api/projects/", {"name": "N", "slug": "n", "colour": "red"}),
    ("patch", "/api/projects/{project}/", {"overlapp": 3}),
    ("put", "/api/projects/{project}/members/", {"username": "x", "role": "annotator", "admin": True}),
    ("post", "/api/projects/{project}/datasets", {"kinds": ["pairs"], "filter": {"all": True}}),
    ("post", "/api/projects/{project}/invites", {"role": "annotator", "expires": "never"}),
])
def test_an_unknown_field_in_any_write_is_a_400_naming_it(as_user, project, staff, method: str, path: str,  # noqa: ANN001
                                                           body: dict) -> None:
    response = getattr(as_user(staff), method)(path.format(project=project.pk), body, format="json")

    unknown = next(key for key in body if key not in {"name", "slug", "username", "role", "kinds"})
    assert response.status_code == 400, response.content
    assert "unknown field" in str(response.json()[unknown])


def test_the_schema_says_request_bodies_are_closed(client: Client, db: None) -> None:
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    requests = {name: body for name, body in schema["components"]["schemas"].items() if name.endswith("Request")}

    assert requests and all(body.get("additionalProperties") is False
                            for body in requests.values() if body.get("type") == "object" and body.get("properties"))
