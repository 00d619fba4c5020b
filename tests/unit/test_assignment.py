"""next_item / ranking_submit / assignment_skip: the hot path's rules."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from guidelines.models import Guideline, GuidelineVersion
from guidelines.services import acknowledge
from labeling.blind import tiers_as_shown
from labeling.models import Assignment, Item, Project, Ranking
from labeling.services.assignment import InvalidRanking, SubmissionConflict, assignments_expire, next_item
from labeling.services.rankings import RankingInput, ranking_submit
from labeling.services.submission import assignment_skip
from tests.factories import UserFactory, make_items


def rank(user, assignment, key: str = "k1", **kwargs) -> tuple[Ranking, bool]:  # noqa: ANN001
    tiers = kwargs.pop("tiers", [[cid] for cid in assignment.display_order])
    return ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=key,
                          data=RankingInput(tiers=tiers_as_shown(assignment, tiers), **kwargs))


def test_refresh_returns_the_same_item_and_prefetch_the_next(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 3)

    current = next_item(annotator=annotator, project=project)
    again = next_item(annotator=annotator, project=project)
    ahead = next_item(annotator=annotator, project=project, prefetch=True)
    ahead_again = next_item(annotator=annotator, project=project, prefetch=True)

    assert current.pk == again.pk
    assert ahead.pk == ahead_again.pk and ahead.item_id != current.item_id
    assert Assignment.objects.filter(annotator=annotator, status="active").count() == 2


def test_display_order_is_a_recorded_permutation(project, annotator) -> None:  # noqa: ANN001
    item = make_items(project, 1, k=4)[0]

    assignment = next_item(annotator=annotator, project=project)

    assert sorted(assignment.display_order) == sorted(
        item.item_candidates.values_list("candidate_id", flat=True))


def test_an_item_is_never_shown_twice_to_one_person(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 2)
    first = next_item(annotator=annotator, project=project)
    rank(annotator, first)

    second = next_item(annotator=annotator, project=project)
    rank(annotator, second, key="k2")

    assert second.item_id != first.item_id
    assert next_item(annotator=annotator, project=project) is None


def test_leases_count_against_the_overlap(project) -> None:  # noqa: ANN001
    project.overlap = 2
    project.save()
    make_items(project, 1)
    users = [UserFactory() for _ in range(3)]

    claims = [next_item(annotator=user, project=project) for user in users]

    assert claims[0] and claims[1] and claims[2] is None
    assert Item.objects.get().active_leases == 2


def test_expired_lease_returns_the_slot_to_the_pool(project) -> None:  # noqa: ANN001
    project.overlap = 1
    project.save()
    make_items(project, 1)
    first, second = UserFactory(), UserFactory()
    lease = next_item(annotator=first, project=project)
    assert next_item(annotator=second, project=project) is None

    expired = assignments_expire(now=lease.expires_at + timedelta(seconds=1))

    assert expired == 1
    assert next_item(annotator=second, project=project) is not None


def test_item_completes_at_its_required_rankings(project) -> None:  # noqa: ANN001
    item = make_items(project, 1)[0]
    users = [UserFactory() for _ in range(project.overlap)]

    for user in users:
        rank(user, next_item(annotator=user, project=project))

    item.refresh_from_db()
    assert (item.rankings_count, item.active_leases) == (3, 0)
    assert item.status in {"accepted", "disputed"}  # decided by the agreement step


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (lambda ids: [[ids[0]], [ids[1]]], "missing"),
        (lambda ids: [[i] for i in ids] + [[999999]], "not in this item"),
        (lambda ids: [[i] for i in ids] + [[ids[0]]], "duplicated"),
        (lambda ids: [], "non-empty"),
    ],
)
def test_ranking_must_cover_the_candidates_exactly(project, annotator, tiers, message) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = next_item(annotator=annotator, project=project)

    with pytest.raises(InvalidRanking, match=message):
        rank(annotator, assignment, tiers=tiers(assignment.display_order))
    assert Ranking.objects.count() == 0


def test_same_idempotency_key_stores_one_ranking(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = next_item(annotator=annotator, project=project)

    first, created = rank(annotator, assignment, key="same")
    second, created_again = rank(annotator, assignment, key="same")

    assert created and not created_again and first.pk == second.pk
    assert Ranking.objects.count() == 1 and Item.objects.get().rankings_count == 1


def test_key_reused_for_another_item_is_a_conflict(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 2)
    rank(annotator, next_item(annotator=annotator, project=project), key="once")

    second = next_item(annotator=annotator, project=project)
    with pytest.raises(SubmissionConflict) as error:
        rank(annotator, second, key="once")
    assert error.value.code == "idempotency_key_reused"
    # The leased assignment's key is not looked up first: the insert's unique constraint
    # refuses it, and its transaction (nothing stored, the lease kept) is rolled back.
    second.refresh_from_db()
    assert Ranking.objects.count() == 1 and second.status == Assignment.Status.ACTIVE
    assert Item.objects.get(pk=second.item_id).active_leases == 1
    assert Item.objects.get(pk=second.item_id).rankings_count == 0


def test_late_submission_is_accepted_while_a_slot_is_free(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = next_item(annotator=annotator, project=project)
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(1))

    ranking, created = rank(annotator, assignment)

    assert created and ranking.item.active_leases == 0


def test_late_submission_on_a_filled_item_is_a_409(project, annotator) -> None:  # noqa: ANN001
    project.overlap = 1
    project.save()
    make_items(project, 1)
    late = next_item(annotator=annotator, project=project)
    assignments_expire(now=late.expires_at + timedelta(seconds=1))
    other = UserFactory()
    rank(other, next_item(annotator=other, project=project))

    with pytest.raises(SubmissionConflict) as error:
        rank(annotator, late, key="late")

    assert error.value.code in {"lease_expired", "item_closed"}
    assert Ranking.objects.filter(annotator=annotator).count() == 0


def test_ties_only_where_the_project_allows_them(project, annotator) -> None:  # noqa: ANN001
    project.allow_ties = False
    project.save()
    make_items(project, 1)
    assignment = next_item(annotator=annotator, project=project)

    with pytest.raises(InvalidRanking, match="does not allow ties"):
        rank(annotator, assignment, tiers=[assignment.display_order])


def test_pairwise_needs_a_strength_and_both_bad_is_a_tie(db: None) -> None:
    project = Project.objects.create(name="P", slug="pw", mode=Project.Mode.PAIRWISE)
    make_items(project, 1, k=2)
    user = UserFactory()
    assignment = next_item(annotator=user, project=project)
    a, b = assignment.display_order

    with pytest.raises(InvalidRanking, match="strength"):
        rank(user, assignment, tiers=[[a], [b]])
    with pytest.raises(InvalidRanking, match="both bad"):
        rank(user, assignment, tiers=[[a], [b]], strength=2, all_bad=True)
    ranking, _ = rank(user, assignment, tiers=[[a, b]], all_bad=True)

    assert ranking.all_bad and ranking.tiers == [[a, b]]


def test_skip_needs_a_reason_and_frees_the_slot(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment = next_item(annotator=annotator, project=project)

    with pytest.raises(InvalidRanking):
        assignment_skip(annotator=annotator, assignment_id=assignment.pk, reason=" ")
    skipped = assignment_skip(annotator=annotator, assignment_id=assignment.pk, reason="broken")

    assert skipped.status == "skipped" and skipped.skip_reason == "broken"
    assert Item.objects.get().active_leases == 0
    assert next_item(annotator=annotator, project=project) is None


def test_gold_items_are_exempt_from_the_overlap(project) -> None:  # noqa: ANN001
    project.overlap, project.gold_rate = 1, 1.0
    project.save()
    gold = make_items(project, 1)[0]
    Item.objects.filter(pk=gold.pk).update(is_gold=True)
    users = [UserFactory() for _ in range(3)]

    for index, user in enumerate(users):
        rank(user, next_item(annotator=user, project=project), key=f"g{index}")

    gold.refresh_from_db()
    assert gold.rankings_count == 3 and gold.status == "open"


def test_complete_first_prefers_items_closer_to_done(project) -> None:  # noqa: ANN001
    project.assignment_strategy = Project.Strategy.COMPLETE_FIRST
    project.save()
    older, newer = make_items(project, 2)
    first = UserFactory()
    Item.objects.filter(pk=older.pk).update(is_gold=False)
    # Someone ranks the newer item: it is now closer to complete.
    assignment = Assignment.objects.create(item=newer, annotator=first, leased_at=timezone.now(),
                                           expires_at=timezone.now() + timedelta(hours=1),
                                           display_order=list(newer.item_candidates.values_list(
                                               "candidate_id", flat=True)))
    Item.objects.filter(pk=newer.pk).update(active_leases=1)
    rank(first, assignment)

    claimed = next_item(annotator=UserFactory(), project=project)

    assert claimed.item_id == newer.pk


def test_unsafe_items_are_capped_per_day(project) -> None:  # noqa: ANN001
    project.unsafe_daily_cap = 1
    project.save()
    items = make_items(project, 3)
    Item.objects.filter(pk__in=[i.pk for i in items]).update(flagged_unsafe=True)
    user = UserFactory()

    rank(user, next_item(annotator=user, project=project))

    assert next_item(annotator=user, project=project) is None


def test_ranking_records_the_guideline_version_at_claim(project, annotator) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="g", title="G")
    v1 = GuidelineVersion.objects.create(guideline=guideline, number=1, body="one", sha256="x",
                                         published_at=timezone.now())
    project.guideline = guideline
    project.save()
    make_items(project, 1)
    acknowledge(user=annotator, version=v1)
    assignment = next_item(annotator=annotator, project=project)
    GuidelineVersion.objects.create(guideline=guideline, number=2, body="two", sha256="y",
                                    published_at=timezone.now(), change="minor")

    ranking, _ = rank(annotator, assignment)

    assert ranking.guideline_version == v1


def test_a_double_claim_by_one_annotator_answers_with_the_lease_they_hold(project, annotator) -> None:  # noqa: ANN001
    """Two requests of one annotator racing (two tabs): the loser's INSERT hits the
    one-assignment-per-item constraint; it gets the winner's lease, not a 500."""
    from unittest import mock

    from django.db import IntegrityError

    from labeling.services import assignment as hot_path

    make_items(project, 2)
    winner = next_item(annotator=annotator, project=project)
    # The loser's claim (its snapshot saw nothing held, #19 reads it in the claim's
    # statement) fails on the constraint.
    with mock.patch.object(hot_path, "_claim", side_effect=IntegrityError("assignment_once_per_item")):
        loser = next_item(annotator=annotator, project=project)

    assert loser.pk == winner.pk
    assert Assignment.objects.filter(annotator=annotator).count() == 1
