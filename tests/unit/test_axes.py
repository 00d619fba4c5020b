"""Axes (issue #21): configured per project, labelled per axis over the API, decided per
axis; a project without axes works as it always did."""

from __future__ import annotations

import pytest

from core.errors import DomainError
from labeling.axes import DEFAULT_KEY, PRESETS, AxisError, axes_clean, axes_from_config
from labeling.models import Item, Membership, Ranking, Role
from labeling.services.projects import project_update
from tests.factories import UserFactory, make_items


def _members(project, count: int) -> list:  # noqa: ANN001
    users = [UserFactory(username=f"axes{n}") for n in range(count)]
    for user in users:
        Membership.objects.create(user=user, project=project, role=Role.ANNOTATOR)
    return users


def _rank(client, project, labels_for) -> dict:  # noqa: ANN001
    """Claim the next item and send the labels `labels_for(assignment)` builds."""
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    body = labels_for(assignment)
    response = client.post(f"/api/assignments/{assignment['id']}/ranking", body, format="json",
                           HTTP_IDEMPOTENCY_KEY=f"k{assignment['id']}")
    assert response.status_code == 201, response.json()
    return assignment


def _ids_by_text(assignment: dict) -> dict[str, str]:
    return {c["text"]: c["id"] for c in assignment["candidates"]}


def test_presets_validate_and_a_project_without_axes_has_overall() -> None:
    assert [a.key for a in axes_from_config([])] == [DEFAULT_KEY]
    for name in PRESETS:
        assert axes_from_config(axes_clean(name))
    with pytest.raises(AxisError, match="5 anchors"):
        axes_clean([{"key": "x", "kind": "rating"}])
    with pytest.raises(AxisError, match="differ"):
        axes_clean([{"key": "a"}, {"key": "a"}])
    with pytest.raises(AxisError, match="unknown fields"):
        axes_clean([{"key": "a", "colour": "red"}])


def test_axes_over_the_api_and_fixed_once_ranked(as_user, project, annotator, project_admin) -> None:  # noqa: ANN001
    admin = as_user(project_admin)
    bad = admin.patch(f"/api/projects/{project.pk}/", {"axes": "nonsense"}, format="json")
    assert bad.status_code == 400 and "preset" in str(bad.json())
    response = admin.patch(f"/api/projects/{project.pk}/", {"axes": "helpful_harmless"}, format="json")
    assert response.status_code == 200
    assert [a["key"] for a in response.json()["axes"]] == ["helpful", "harmless"]

    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()
    assert [a["key"] for a in assignment["axes"]] == ["helpful", "harmless"] and assignment["ask_safety"]
    ids = [c["id"] for c in assignment["candidates"]]
    url = f"/api/assignments/{assignment['id']}/ranking"
    client = as_user(annotator)
    missing = client.post(url, {"tiers": [[i] for i in ids]}, format="json", HTTP_IDEMPOTENCY_KEY="a")
    assert missing.status_code == 400 and "harmless" in missing.json()["detail"]
    no_safety = client.post(url, {"tiers": [[i] for i in ids],
                                  "axes": {"harmless": {"tiers": [ids]}}},
                            format="json", HTTP_IDEMPOTENCY_KEY="b")
    assert no_safety.status_code == 400 and "safe" in no_safety.json()["detail"]
    ok = client.post(url, {"tiers": [[i] for i in ids], "axes": {"harmless": {"tiers": [ids]}},
                           "safety": {i: n != 0 for n, i in enumerate(ids)}},
                     format="json", HTTP_IDEMPOTENCY_KEY="c")
    assert ok.status_code == 201, ok.json()
    assert ok.json()["axes"]["harmless"] == {"tiers": [ids]}
    assert Ranking.objects.get().safety == {str(k): v for k, v in Ranking.objects.get().safety.items()}
    assert sorted(Ranking.objects.get().safety.values()) == [False, True, True]

    with pytest.raises(DomainError, match="already has rankings"):
        project_update(project=project, actor=None, axes="overall")
    renamed = [{**a, "name": a["name"] + "!"} for a in axes_clean("helpful_harmless")]
    assert project_update(project=project, actor=None, axes=renamed).axes[0]["name"] == "Helpful!"


def test_agree_on_one_axis_disagree_on_the_other(as_user, project) -> None:  # noqa: ANN001
    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=2)
    make_items(project, 1)
    first, second = _members(project, 2)

    def labels(reverse_harmless: bool):  # noqa: ANN202
        def build(assignment: dict) -> dict:
            ids = _ids_by_text(assignment)
            order = sorted(ids)  # the same helpful order for both people
            harmless = list(reversed(order)) if reverse_harmless else order
            return {"axes": {"helpful": {"tiers": [[ids[t]] for t in order]},
                             "harmless": {"tiers": [[ids[t]] for t in harmless]}},
                    "safety": {i: True for i in ids.values()}}
        return build

    _rank(as_user(first), project, labels(False))
    _rank(as_user(second), project, labels(True))

    item = Item.objects.get()
    assert item.axes["helpful"]["status"] == "accepted" and item.axes["helpful"]["agreement"] == 1.0
    assert item.axes["harmless"]["status"] == "disputed" and item.axes["harmless"]["agreement"] < 0.6
    assert item.status == Item.Status.DISPUTED  # both axes are required
    assert item.agreement == 1.0 and item.consensus == item.axes["helpful"]["consensus"]


def test_an_optional_axis_does_not_block_acceptance_and_ratings_average(as_user, project) -> None:  # noqa: ANN001
    axes = [{"key": "overall"},
            {"key": "verbosity", "kind": "rating", "required": False, "anchors": list("01234")}]
    project = project_update(project=project, actor=None, axes=axes, overlap=2)
    make_items(project, 1)
    people = _members(project, 2)
    for n, person in enumerate(people):
        def build(assignment: dict, n: int = n) -> dict:
            ids = _ids_by_text(assignment)
            order = sorted(ids)
            scores = {ids[t]: (4 - i if n == 0 else i) for i, t in enumerate(order)}
            return {"tiers": [[ids[t]] for t in order], "axes": {"verbosity": {"scores": scores}}}
        _rank(as_user(person), project, build)

    item = Item.objects.get()
    assert item.axes["verbosity"]["status"] == "disputed"
    assert sorted(item.axes["verbosity"]["scores"].values()) == [2.0, 2.0, 2.0]
    assert item.status == Item.Status.ACCEPTED  # verbosity is not required
    ranking = Ranking.objects.order_by("id").first()
    assert sorted(ranking.labels["verbosity"]["scores"].values()) == [2, 3, 4]
    assert ranking.labels["verbosity"]["tiers"][0] == [int(k) for k, v in
                                                       ranking.labels["verbosity"]["scores"].items() if v == 4]


def test_rating_out_of_range_is_a_400(as_user, project, annotator) -> None:  # noqa: ANN001
    project = project_update(project=project, actor=None, axes="helpsteer")
    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()
    ids = [c["id"] for c in assignment["candidates"]]
    body = {"axes": {a["key"]: {"scores": {i: 5 for i in ids}} for a in assignment["axes"]}}
    response = as_user(annotator).post(f"/api/assignments/{assignment['id']}/ranking", body,
                                       format="json", HTTP_IDEMPOTENCY_KEY="r")
    assert response.status_code == 400 and "0 to 4" in response.json()["detail"]
    assert not Ranking.objects.exists()


def test_single_axis_project_refuses_axes_and_safety(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()
    ids = [c["id"] for c in assignment["candidates"]]
    assert assignment["axes"][0]["key"] == "overall" and not assignment["ask_safety"]
    response = as_user(annotator).post(
        f"/api/assignments/{assignment['id']}/ranking",
        {"tiers": [[i] for i in ids], "safety": {i: True for i in ids}},
        format="json", HTTP_IDEMPOTENCY_KEY="s")
    assert response.status_code == 400 and "safety" in response.json()["detail"]


def test_simulated_annotators_label_every_axis(project) -> None:  # noqa: ANN001
    from labeling.simulate import SimulatedAnnotator, simulate_annotator

    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=2, is_demo=True)
    make_items(project, 3)
    for n, user in enumerate(_members(project, 2)):
        assert simulate_annotator(user=user, project=project, profile=SimulatedAnnotator(noise=0.1),
                                  seed=n) == 3
    for ranking in Ranking.objects.all():
        assert set(ranking.labels) == {"helpful", "harmless"} and len(ranking.safety) == 3
        assert ranking.tiers == ranking.labels["helpful"]["tiers"]
    assert all(set(item.axes) == {"helpful", "harmless"} for item in Item.objects.all())
    assert not Item.objects.filter(status=Item.Status.OPEN).exists()


def test_a_trusted_judge_cannot_vouch_for_the_other_axes(as_user, project, monkeypatch) -> None:  # noqa: ANN001
    """Adaptive overlap may stop at one person a trusted judge agrees with; a judge ranks
    the primary axis only, so with two axes a second person is still asked for."""
    from labeling.services import quality

    monkeypatch.setattr(quality, "trusted_judge_agrees", lambda **kwargs: True)
    project = project_update(project=project, actor=None, axes="helpful_harmless", overlap=3,
                             adaptive_overlap=True)
    make_items(project, 1)
    (person,) = _members(project, 1)
    item = Item.objects.get()
    Item.objects.filter(pk=item.pk).update(required_rankings=1)  # as if one were enough

    def both(assignment: dict) -> dict:
        ids = [c["id"] for c in assignment["candidates"]]
        return {"axes": {"helpful": {"tiers": [ids]}, "harmless": {"tiers": [ids]}},
                "safety": {i: True for i in ids}}

    _rank(as_user(person), project, both)
    item.refresh_from_db()
    assert (item.status, item.required_rankings) == (Item.Status.OPEN, 2)
