"""The judge's pure part: prompt, strict parsing, orders and reconciliation (no Django)."""

from __future__ import annotations

import pytest

from training.engine.judging import (
    DEFAULT_TEMPLATE,
    JudgeOutputError,
    TemplateError,
    first_shown_credit,
    judging_orders,
    net_position_preference,
    parse_judgement,
    reconcile,
    reconcile_scores,
    render_judge_prompt,
    tiers_in_candidates,
)


def test_prompt_labels_answers_in_the_order_given_and_never_expands_answer_text() -> None:
    [message] = render_judge_prompt(
        DEFAULT_TEMPLATE, guideline="Be honest.", messages=[{"role": "user", "content": "Hi?"}],
        answers=["first {guideline}", "second"])

    text = message["content"]
    assert "Be honest." in text and "[USER]\nHi?" in text
    assert text.index("## Answer A\nfirst {guideline}") < text.index("## Answer B\nsecond")
    assert "RANKING: A > B" in text


def test_template_needs_the_conversation_and_answers() -> None:
    with pytest.raises(TemplateError, match="answers"):
        render_judge_prompt("{conversation}", guideline="", messages=[], answers=["a", "b"])


@pytest.mark.parametrize(("text", "tiers"), [
    ("B is clearer.\nRANKING: B > A = C", [[1], [0, 2]]),
    ("RANKING: a>b>c.", [[0], [1], [2]]),
    ("**Ranking:** C = A = B", [[0, 1, 2]]),
])
def test_parses_a_ranking_line(text: str, tiers: list) -> None:
    assert parse_judgement(text, 3).tiers == tiers


def test_rationale_is_the_text_before_the_ranking() -> None:
    assert parse_judgement("A answers the question.\nRANKING: A > B", 2).rationale == "A answers the question."


@pytest.mark.parametrize(("text", "message"), [
    ("A is best", "no RANKING"),
    ("RANKING: A > B\nRANKING: B > A", "more than one"),
    ("RANKING: A > A", "twice"),
    ("RANKING: A > D", "not one of the labels"),
    ("RANKING: A", "missing"),
    ("RANKING: A, B", "not one of the labels"),
])
def test_malformed_output_is_refused(text: str, message: str) -> None:
    with pytest.raises(JudgeOutputError, match=message):
        parse_judgement(text, 2)


def test_orders_are_a_seeded_shuffle_and_its_reverse() -> None:
    orders = judging_orders([10, 11, 12, 13], n_orders=3, seed=5)

    assert orders == judging_orders([10, 11, 12, 13], n_orders=3, seed=5)
    assert orders[1] == orders[0][::-1] and sorted(orders[2]) == [10, 11, 12, 13]


def test_a_consistent_judge_keeps_its_ranking_with_full_confidence() -> None:
    result = reconcile([[[3], [1], [2]], [[3], [1], [2]]])

    assert result.tiers == [[3], [1], [2]] and result.confidence == 1.0 and result.consistent


@pytest.mark.parametrize("k", [2, 4])
def test_a_judge_that_always_prefers_the_first_answer_ends_with_no_net_preference(k: int) -> None:
    orders = judging_orders(list(range(100, 100 + k)), seed=1)
    # Always "A > B > ...": the answer shown first always wins.
    judgements = [tiers_in_candidates([[p] for p in range(k)], order) for order in orders]

    result = reconcile(judgements)

    assert result.tiers == [sorted(orders[0])]  # every pair the orders disagreed on is a tie
    assert result.confidence == 0.0 and not result.consistent
    assert net_position_preference(result.tiers, orders) == pytest.approx(0.0)
    # The judge itself is fully biased: each raw judgement puts the first answer shown on top.
    assert [first_shown_credit(t, o) for t, o in zip(judgements, orders, strict=True)] == [1.0, 1.0]


def test_partial_disagreement_ties_only_what_the_orders_disagree_on() -> None:
    result = reconcile([[[1], [2], [3]], [[2], [1], [3]]])

    assert result.tiers == [[1, 2], [3]]
    assert result.inconsistent_pairs == [(1, 2)]
    assert result.confidence == pytest.approx(2 / 3)


def test_reward_scores_rank_higher_first_with_margin_confidence() -> None:
    sure = reconcile_scores({1: 5.0, 2: -5.0})
    unsure = reconcile_scores({1: 0.01, 2: 0.0})

    assert sure.tiers == [[1], [2]] and sure.confidence > 0.98
    assert unsure.tiers == [[1], [2]] and unsure.confidence < 0.01
