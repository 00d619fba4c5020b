"""Agreement acted on: item decisions, adaptive overlap, annotator quality, simulated
annotators, model comparison, and who may see the figures."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from labeling.blind import tiers_as_shown
from labeling.models import AnnotatorQuality, Candidate, Item, Project
from labeling.selectors.dashboard import model_comparison, project_agreement_summary
from labeling.services.assignment import next_item
from labeling.services.quality import quality_refresh
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import UserFactory, make_items


def rank_as(user, project, order_key):  # noqa: ANN001, ANN201
    """Rank the user's next item by a key over candidate ids (lower = better)."""
    assignment = next_item(annotator=user, project=project)
    tiers = [[cid] for cid in sorted(assignment.display_order, key=order_key)]
    ranking, _ = ranking_submit(annotator=user, assignment_id=assignment.pk,
                                data=RankingInput(tiers=tiers_as_shown(assignment, tiers),
                                                  duration_ms=20_000),
                                idempotency_key=f"{user.pk}-{assignment.pk}")
    return ranking


def test_agreeing_rankings_are_accepted_with_a_consensus(project) -> None:  # noqa: ANN001
    item = make_items(project, 1)[0]
    for _ in range(3):
        rank_as(UserFactory(), project, order_key=lambda cid: cid)

    item.refresh_from_db()
    ids = sorted(item.item_candidates.values_list("candidate_id", flat=True))
    assert item.status == "accepted" and item.agreement == 1.0
    assert item.consensus == [[ids[0]], [ids[1]], [ids[2]]]


def test_disagreeing_rankings_are_disputed(project) -> None:  # noqa: ANN001
    item = make_items(project, 1)[0]
    rank_as(UserFactory(), project, order_key=lambda cid: cid)
    rank_as(UserFactory(), project, order_key=lambda cid: -cid)
    rank_as(UserFactory(), project, order_key=lambda cid: (cid % 2, cid))

    item.refresh_from_db()
    assert item.status == "disputed" and item.agreement < project.agreement_threshold


def test_adaptive_overlap_stops_at_two_when_they_agree(db: None) -> None:
    project = Project.objects.create(name="A", slug="adaptive", adaptive_overlap=True, overlap=3)
    agreed, split = make_items(project, 2)
    first, second, third = UserFactory(), UserFactory(), UserFactory()

    rank_as(first, project, order_key=lambda cid: cid)
    rank_as(first, project, order_key=lambda cid: cid)
    rank_as(second, project, order_key=lambda cid: cid)  # agrees on the first item
    rank_as(second, project, order_key=lambda cid: -cid)  # disagrees on the second

    agreed.refresh_from_db()
    split.refresh_from_db()
    assert (agreed.status, agreed.rankings_count, agreed.required_rankings) == ("accepted", 2, 2)
    assert (split.status, split.required_rankings) == ("open", 3)
    rank_as(third, project, order_key=lambda cid: cid)
    split.refresh_from_db()
    assert split.rankings_count == 3 and split.status in {"accepted", "disputed"}
    assert project_agreement_summary(project=project)["rankings_saved_by_adaptive_overlap"] == 1


def test_quality_figures_per_annotator_and_period(project) -> None:  # noqa: ANN001
    make_items(project, 6)
    good = [UserFactory(username=f"good{i}") for i in range(2)]
    contrarian = UserFactory(username="contrarian")
    for _ in range(6):
        for user in good:
            rank_as(user, project, order_key=lambda cid: cid)
        rank_as(contrarian, project, order_key=lambda cid: -cid)

    quality_refresh(project=project)

    rows = {q.annotator.username: q for q in AnnotatorQuality.objects.filter(period="all")}
    # good0 vs the consensus of good1 and the contrarian (a full tie): every pair half.
    assert rows["good0"].rankings == 6 and rows["good0"].loo_agreement == pytest.approx(0.5)
    assert rows["contrarian"].loo_agreement == pytest.approx(0.0)
    assert rows["contrarian"].loo_agreement < rows["good0"].loo_agreement
    assert rows["good0"].median_seconds == 20.0 and rows["good0"].tie_rate == 0.0
    assert "low_agreement" in rows["contrarian"].flags
    periods = set(AnnotatorQuality.objects.values_list("period", flat=True))
    assert "all" in periods and any(p.startswith("week:") for p in periods)


def test_gold_accuracy(project, annotator) -> None:  # noqa: ANN001
    project.gold_rate = 1.0
    project.save()
    item = make_items(project, 1)[0]
    ids = sorted(item.item_candidates.values_list("candidate_id", flat=True))
    Item.objects.filter(pk=item.pk).update(is_gold=True, gold_ranking=[[i] for i in ids])

    rank_as(annotator, project, order_key=lambda cid: -cid)  # exactly reversed
    quality_refresh(project=project)

    row = AnnotatorQuality.objects.get(annotator=annotator, period="all")
    assert row.gold_items == 1 and row.gold_accuracy == 0.0 and "gold_misses" in row.flags


def test_model_comparison_ranks_the_better_model_first(project) -> None:  # noqa: ANN001
    items = make_items(project, 8, k=2)
    for item in items:
        first, second = item.item_candidates.values_list("candidate_id", flat=True)
        Candidate.objects.filter(pk=first).update(model_name="strong")
        Candidate.objects.filter(pk=second).update(model_name="weak")
    strong = set(Candidate.objects.filter(model_name="strong").values_list("id", flat=True))
    users = [UserFactory() for _ in range(3)]
    for _ in range(8):
        for user in users:
            rank_as(user, project, order_key=lambda cid: cid not in strong)

    table = model_comparison(project=project)

    assert [row["model"] for row in table["models"]] == ["strong", "weak"]
    assert table["models"][0]["win_rate"]["weak"] == 1.0
    assert table["models"][0]["bt_score"] > table["models"][1]["bt_score"]


def test_simulate_refuses_a_real_project(project) -> None:  # noqa: ANN001
    with pytest.raises(CommandError, match="not a demo"):
        call_command("simulate_annotators", "--project", project.slug)


def test_simulate_ranks_every_item_through_the_services(db: None) -> None:
    project = Project.objects.create(name="Demo", slug="sim", is_demo=True, overlap=3)
    make_items(project, 5)

    call_command("simulate_annotators", "--project", "sim", "--create", "3")

    assert set(Item.objects.values_list("rankings_count", flat=True)) == {3}
    assert set(Item.objects.values_list("status", flat=True)) <= {"accepted", "disputed"}


def test_figures_are_for_reviewers_only(as_user, project, annotator, reviewer, outsider) -> None:  # noqa: ANN001, E501
    item = make_items(project, 1)[0]
    urls = [f"/api/projects/{project.pk}/agreement", f"/api/projects/{project.pk}/annotators",
            f"/api/projects/{project.pk}/models", f"/api/items/{item.pk}/agreement"]

    for url in urls:
        assert as_user(annotator).get(url).status_code == 403, url
        assert as_user(outsider).get(url).status_code == 404, url
        assert as_user(reviewer).get(url).status_code == 200, url
