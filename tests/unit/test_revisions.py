"""Go back (issue 17): an annotator changes a ranking they sent while its item is open;
the new one supersedes the old, it is audited, and agreement is recomputed."""

from __future__ import annotations

import pytest

from labeling.blind import tiers_as_shown
from labeling.models import AuditEvent, Item, Ranking
from labeling.services.assignment import SubmissionConflict, next_item
from labeling.services.rankings import RankingInput, ranking_submit
from labeling.services.revisions import REVISABLE_LAST, ranking_revise
from tests.factories import make_items


def _send(user, project, key: str, reverse: bool = False):  # noqa: ANN001, ANN202
    assignment = next_item(annotator=user, project=project)
    order = sorted(assignment.display_order, reverse=reverse)
    ranking, _ = ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=key,
                                data=RankingInput(tiers=tiers_as_shown(assignment, [[c] for c in order])))
    return assignment, ranking


def _revise(user, assignment, key: str, reverse: bool = True):  # noqa: ANN001, ANN202
    order = sorted(assignment.display_order, reverse=reverse)
    return ranking_revise(annotator=user, assignment_id=assignment.pk, idempotency_key=key,
                          data=RankingInput(tiers=tiers_as_shown(assignment, [[c] for c in order])))


def test_a_new_ranking_supersedes_the_sent_one_and_is_audited(project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment, old = _send(annotator, project, "k1")

    new, created = _revise(annotator, assignment, "k2")
    again, created_again = _revise(annotator, assignment, "k2")

    assert created and not created_again and again.pk == new.pk
    old.refresh_from_db()
    assert old.superseded_by_id == new.pk
    live = Ranking.objects.get(item=assignment.item, annotator=annotator, superseded_by__isnull=True)
    assert live.pk == new.pk and live.tiers == [[c] for c in sorted(assignment.display_order, reverse=True)]
    assert Item.objects.get(pk=assignment.item_id).rankings_count == 1  # a change, not one more
    event = AuditEvent.objects.get(action="ranking.revise")
    assert event.actor == annotator and event.before["tiers"] == old.tiers and event.after["ranking"] == new.pk


def test_a_decided_item_or_an_old_one_cannot_be_changed(project, annotator, second_annotator) -> None:  # noqa: ANN001
    project.overlap = 1
    project.save()
    make_items(project, REVISABLE_LAST + 1)
    first, _ = _send(annotator, project, "first")  # overlap 1: decided at once
    assert Item.objects.get(pk=first.item_id).status != Item.Status.OPEN

    with pytest.raises(SubmissionConflict) as decided:
        _revise(annotator, first, "again")

    assert decided.value.code == "item_decided"


def test_only_the_last_few_can_be_changed(project, annotator) -> None:  # noqa: ANN001
    make_items(project, REVISABLE_LAST + 1)
    sent = [_send(annotator, project, f"k{n}")[0] for n in range(REVISABLE_LAST + 1)]

    with pytest.raises(SubmissionConflict) as old:
        _revise(annotator, sent[0], "late")
    _revise(annotator, sent[1], "recent")

    assert old.value.code == "too_old"


def test_agreement_is_recomputed_when_the_item_has_it(project, annotator, second_annotator) -> None:  # noqa: ANN001
    project.adaptive_overlap = True
    project.overlap = 3
    project.agreement_threshold = 0.0
    project.save()
    make_items(project, 1)
    mine, _ = _send(annotator, project, "a1")
    _send(second_annotator, project, "b1", reverse=True)  # they disagree: one more is asked
    item = Item.objects.get(pk=mine.item_id)
    assert item.status == Item.Status.OPEN and item.agreement == 0.0

    _revise(annotator, mine, "a2", reverse=True)  # now they agree

    assert Item.objects.get(pk=mine.item_id).agreement == 1.0


def test_the_api_changes_a_sent_ranking(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment, _ = _send(annotator, project, "k1")
    tiers = tiers_as_shown(assignment, [[c] for c in sorted(assignment.display_order, reverse=True)])
    url = f"/api/assignments/{assignment.pk}/revision"

    response = as_user(annotator).post(url, {"tiers": tiers}, format="json", HTTP_IDEMPOTENCY_KEY="k2")
    unknown = as_user(annotator).post(url, {"tiers": tiers, "colour": 1}, format="json",
                                      HTTP_IDEMPOTENCY_KEY="k3")

    assert response.status_code == 201 and response.json()["tiers"] == tiers
    assert unknown.status_code == 400


def test_a_revision_without_an_idempotency_key_is_a_bad_request_like_a_submit(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1)
    assignment, _ = _send(annotator, project, "k1")
    tiers = tiers_as_shown(assignment, [[c] for c in sorted(assignment.display_order, reverse=True)])

    response = as_user(annotator).post(f"/api/assignments/{assignment.pk}/revision", {"tiers": tiers},
                                       format="json")

    assert response.status_code == 400, response.content
    assert "Idempotency-Key" in response.json()["detail"]
    assert Ranking.objects.filter(annotator=annotator).count() == 1  # the sent one, unchanged
