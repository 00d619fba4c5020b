"""AI judges against a local OpenAI-compatible stub (tests/judge_stub.py): runs, strict
parsing with one retry, skips that keep the raw text, throttling and timeouts, budgets,
cancel/resume, position de-biasing, storage apart from human rankings, and audit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.management import call_command

from core.errors import DomainError
from core.runs import Run, run_claim
from guidelines.models import Guideline, GuidelineVersion
from judges.metrics import judge_figures
from judges.models import Judge, JudgeRanking, JudgeRun
from judges.services import judge_create, judge_run_cancel, judge_run_create, judge_run_execute, judge_update
from labeling.models import AuditEvent, Item, Project, Ranking
from labeling.services.items import items_create_for_prompt
from tests.factories import CandidateFactory, PromptFactory
from tests.judge_stub import JudgeStub, always_first, judge_stub

ANSWERS = ["Short.", "A somewhat longer answer.", "The longest answer of the three, by far, with detail."]


@pytest.fixture
def stub(settings) -> Iterator[JudgeStub]:  # noqa: ANN001
    with judge_stub() as running:
        settings.GENERATION_ENDPOINTS = {"stub": {"base_url": running.url, "allow_private": True,
                                                  "models": ["judge-model"]}}
        settings.JUDGE_REQUEST_TIMEOUT_SECONDS = 1
        settings.JUDGE_MAX_RETRIES = 2
        yield running


@pytest.fixture
def items(project: Project) -> list[Item]:
    guideline = Guideline.objects.create(slug="g", title="G")
    GuidelineVersion.objects.create(guideline=guideline, number=1, body="Prefer complete answers.",
                                    sha256="x", published_at="2026-01-01T00:00:00Z")
    Project.objects.filter(pk=project.pk).update(guideline=guideline)
    project.refresh_from_db()
    for n in range(6):
        prompt = PromptFactory(project=project)
        ids = [CandidateFactory(prompt=prompt, text=f"{text} ({n})", model_name="secret-model-x").pk
               for text in ANSWERS]
        items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    return list(Item.objects.filter(project=project).order_by("id"))


def endpoint_judge(project: Project, **options: object) -> Judge:
    return judge_create(project=project, actor=None, name=str(options.pop("name", "stub-judge")),
                        kind="endpoint", endpoint="stub", model="judge-model", **options)


def execute(run: JudgeRun, **options: object) -> JudgeRun:
    judge_run_execute(run_claim(JudgeRun, run.pk), **options)
    run.refresh_from_db()
    return run


def test_a_judge_ranks_each_item_in_two_orders_blind_and_apart_from_people(stub, items, project) -> None:  # noqa: ANN001
    judge = endpoint_judge(project)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    assert run.status == Run.Status.DONE, run.error
    rows = list(JudgeRanking.objects.filter(judge=judge).order_by("item_id"))
    assert len(rows) == len(items) and len(stub.requests) == 2 * len(items)
    for row, item in zip(rows, items, strict=True):
        by_length = sorted(item.candidates.values_list("id", "text"), key=lambda c: -len(c[1]))
        assert row.tiers == [[c] for c, _ in by_length]
        assert row.confidence == 1.0 and row.consistent
        first, second = (j["order"] for j in row.judgements)
        assert second == first[::-1]
        assert row.rationale == "The first listed is most complete."
        assert row.guideline_version.number == 1
    prompt = stub.requests[0]["messages"][-1]["content"]
    assert "Prefer complete answers." in prompt and "secret-model-x" not in prompt
    assert stub.requests[0]["temperature"] == 0.0 and stub.requests[0]["max_tokens"] == 512
    # People's tables are untouched: no ranking, no overlap slot taken, nothing decided.
    assert not Ranking.objects.exists()
    assert all(i.rankings_count == 0 and i.status == "open" for i in Item.objects.filter(project=project))
    assert run.stats["ranked"] == len(items) and run.progress["items_done"] == len(items)
    assert {"judge.create", "judge.run_start"} <= set(AuditEvent.objects.values_list("action", flat=True))


def test_a_judge_that_always_prefers_the_first_answer_has_no_net_position_preference(stub, items, project) -> None:  # noqa: ANN001
    stub.prefer = always_first
    judge = endpoint_judge(project)

    execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    rows = JudgeRanking.objects.filter(judge=judge)
    assert all(row.tiers == [sorted(c for t in row.tiers for c in t)] for row in rows)  # all tied
    assert all(row.confidence == 0.0 and not row.consistent for row in rows)
    figures = judge_figures(judge)["all"]
    assert figures.position_bias == 1.0 and figures.position_expected == pytest.approx(1 / 3)
    assert figures.net_position_preference == pytest.approx(0.0)
    assert figures.mean_confidence == 0.0 and figures.tie_rate == 1.0


def test_bad_output_is_asked_once_more(stub, items, project) -> None:  # noqa: ANN001
    stub.script = [("malformed", "I like B best.")]
    judge = endpoint_judge(project)

    execute(judge_run_create(judge=judge, actor=None, enqueue=False, item_ids=[items[0].pk]))

    row = JudgeRanking.objects.get(judge=judge)
    assert row.status == "ranked" and row.judgements[0]["attempts"] == 2
    assert row.judgements[0]["errors"] == ["no RANKING line"]


def test_output_bad_twice_is_a_skip_that_keeps_the_raw_text(stub, items, project) -> None:  # noqa: ANN001
    stub.script = [("malformed", "RANKING: A > A > B"), ("malformed", "Both fine, honestly.")]
    judge = endpoint_judge(project)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False, item_ids=[items[0].pk]))

    row = JudgeRanking.objects.get(judge=judge)
    assert row.status == "skipped" and row.tiers is None
    assert row.judgements[0]["texts"] == ["RANKING: A > A > B", "Both fine, honestly."]
    assert "no RANKING line" in row.skip_reason
    assert run.status == Run.Status.DONE and run.progress["skipped"] == 1


def test_throttling_is_retried(stub, items, project) -> None:  # noqa: ANN001
    stub.script = [("status", 429), ("status", 429)]
    judge = endpoint_judge(project)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False, item_ids=[items[0].pk]))

    assert run.status == Run.Status.DONE and JudgeRanking.objects.get(judge=judge).status == "ranked"
    assert len(stub.requests) == 4


def test_an_endpoint_that_times_out_fails_the_run_and_a_new_run_resumes(stub, items, project, settings) -> None:  # noqa: ANN001
    settings.JUDGE_MAX_RETRIES = 0
    # The first chunk (4 items, 8 requests) is answered; then the endpoint hangs.
    stub.script = [("ok", None)] * 8 + [("sleep", 1.5)]
    judge = endpoint_judge(project)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    assert run.status == Run.Status.FAILED and "timeout" in run.error and "resume" in run.error
    assert JudgeRanking.objects.filter(judge=judge).count() == 4
    again = execute(judge_run_create(judge=judge, actor=None, enqueue=False))
    assert again.status == Run.Status.DONE and again.item_ids == [i.pk for i in items[4:]]
    assert JudgeRanking.objects.filter(judge=judge).count() == len(items)


def test_a_cancelled_run_stops_at_the_next_chunk(stub, items, project) -> None:  # noqa: ANN001
    judge = endpoint_judge(project)
    run = judge_run_create(judge=judge, actor=None, enqueue=False)

    execute(run, progress=lambda done, total: judge_run_cancel(run=run, actor=None))

    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED
    assert JudgeRanking.objects.filter(judge=judge).count() == 4
    assert AuditEvent.objects.filter(action="judge.run_cancel").count() == 1


def test_the_daily_item_budget_stops_the_run(stub, items, project) -> None:  # noqa: ANN001
    judge = endpoint_judge(project, max_items_per_day=3)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    assert run.status == Run.Status.DONE and "budget 3" in run.progress["budget_exhausted"]
    assert JudgeRanking.objects.filter(judge=judge).count() == 3


def test_a_redelivered_run_writes_nothing_twice(stub, items, project) -> None:  # noqa: ANN001
    judge = endpoint_judge(project)
    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))
    sent = len(stub.requests)

    JudgeRun.objects.filter(pk=run.pk).update(status=Run.Status.QUEUED)
    execute(run)

    assert JudgeRanking.objects.filter(judge=judge).count() == len(items) and len(stub.requests) == sent


@pytest.mark.parametrize(("options", "message"), [
    ({"kind": "endpoint", "endpoint": "http://169.254.169.254/v1", "model": "judge-model"}, "unknown endpoint"),
    ({"kind": "endpoint", "endpoint": "stub", "model": "other"}, "serves judge-model"),
    ({"kind": "local", "model": "/etc"}, "hub id"),
    ({"kind": "reward_model"}, "registered reward model"),
    ({"kind": "endpoint", "endpoint": "stub", "model": "judge-model", "prompt_template": "{answers}"},
     "{conversation}"),
    ({"kind": "endpoint", "endpoint": "stub", "model": "judge-model", "orders": 1}, "orders"),
])
def test_a_judge_only_uses_what_the_operator_allows(stub, project, options, message) -> None:  # noqa: ANN001
    with pytest.raises(DomainError, match=message):
        judge_create(project=project, actor=None, name="j", **options)


def test_changing_how_it_judges_makes_a_new_version_and_is_audited(stub, items, project) -> None:  # noqa: ANN001
    judge = endpoint_judge(project)
    judge_update(judge=judge, actor=None, max_items_per_day=10)
    assert Judge.objects.get(pk=judge.pk).version == 1
    execute(judge_run_create(judge=judge, actor=None, enqueue=False, item_ids=[items[0].pk]))

    judge = judge_update(judge=judge, actor=None, temperature=0.7)

    assert judge.version == 2
    run = judge_run_create(judge=judge, actor=None, enqueue=False)
    assert items[0].pk in run.item_ids  # the new version judges it again
    assert AuditEvent.objects.filter(action="judge.update").count() == 2


def test_cli_runs_a_judge_and_prints_its_agreement(stub, items, project, capsys) -> None:  # noqa: ANN001
    endpoint_judge(project)

    call_command("judge", "--project", project.slug, "--judge", "stub-judge")

    out = capsys.readouterr().out
    assert "6/6 items" in out and "agreement with the human consensus" in out
    assert JudgeRanking.objects.filter(status="ranked").count() == len(items)
    assert AuditEvent.objects.get(action="judge.run_start").note == "origin: cli"


def test_snapshots_leave_ai_rankings_out_unless_asked_and_mark_every_row(stub, items, project, annotator) -> None:  # noqa: ANN001
    import json

    from guidelines.services import acknowledge, acknowledgement_needed
    from labeling.blind import tiers_as_shown
    from labeling.services.assignment import next_item
    from labeling.services.rankings import RankingInput, ranking_submit
    from training.models import DatasetSnapshot
    from training.snapshots import snapshot_build, snapshot_create, snapshot_dir

    acknowledge(user=annotator, version=acknowledgement_needed(user=annotator, project=project))
    assignment = next_item(annotator=annotator, project=project)
    ranking_submit(annotator=annotator, assignment_id=assignment.pk, idempotency_key="h1",
                   data=RankingInput(tiers=tiers_as_shown(assignment, [[c] for c in assignment.display_order])))
    judge = endpoint_judge(project)
    execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    def raw_rows(**filters: object) -> list[dict]:
        snapshot = snapshot_create(project=project, kinds=["raw"], formats=["jsonl", "parquet"],
                                   filters=filters, enqueue=False)
        snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
        snapshot.refresh_from_db()
        assert snapshot.status == "done", snapshot.error
        return [json.loads(line) for line in (snapshot_dir(snapshot) / "raw-train.jsonl").read_text().splitlines()]

    default = raw_rows()
    assert [(r["source"], r["judge"]) for r in default] == [("human", None)]
    included = raw_rows(include_ai=True)
    ai = [r for r in included if r["source"] == "ai"]
    assert len(ai) == len(items) and all(r["judge"] == judge.pk and r["annotator"] == f"ai:{judge.pk}" for r in ai)
    assert [r["source"] for r in included].count("human") == 1
    # Pairs: people's consensus only by default; with include_ai the judge's pairs too, marked.
    def pair_rows(**filters: object) -> list[dict]:
        snapshot = snapshot_create(project=project, kinds=["pairs"], formats=["jsonl", "parquet"],
                                   filters=filters, enqueue=False)
        snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
        return [json.loads(line) for line in (snapshot_dir(snapshot) / "pairs-train.jsonl").read_text().splitlines()]

    assert pair_rows() == []  # no item is accepted by people yet (overlap 3)
    ai_pairs = pair_rows(include_ai=True)
    assert len(ai_pairs) == 3 * len(items)  # C(3,2) pairs of each judged item
    assert {(r["source"], r["judge"]) for r in ai_pairs} == {("ai", judge.pk)}
    assert all(len(r["chosen"]) > len(r["rejected"]) for r in ai_pairs)  # the stub prefers longer answers
    with pytest.raises(DomainError, match="include_ai"):
        snapshot_create(project=project, kinds=["raw"], formats=["jsonl"], filters={"judges": [judge.pk]})
    with pytest.raises(DomainError, match="not in this project"):
        snapshot_create(project=project, kinds=["raw"], formats=["jsonl"],
                        filters={"include_ai": True, "judges": [judge.pk + 99]})


def _rank_next(user, order_key) -> Item:  # noqa: ANN001
    """`user` ranks their next item, best first by `order_key(candidate text)`."""
    from guidelines.services import acknowledge, acknowledgement_needed
    from labeling.blind import tiers_as_shown
    from labeling.models import Candidate
    from labeling.services.assignment import next_item
    from labeling.services.rankings import RankingInput, ranking_submit

    pending = acknowledgement_needed(user=user, project=Item.objects.first().project)
    if pending is not None:
        acknowledge(user=user, version=pending)
    assignment = next_item(annotator=user, project=Item.objects.first().project)
    texts = dict(Candidate.objects.filter(pk__in=assignment.display_order).values_list("id", "text"))
    ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=f"k{assignment.pk}",
                   data=RankingInput(tiers=tiers_as_shown(
                       assignment, [[c] for c in sorted(assignment.display_order, key=lambda c: order_key(texts[c]))])))
    return Item.objects.get(pk=assignment.item_id)


def test_items_the_judge_disputes_go_to_people_first(stub, items, project, annotator) -> None:  # noqa: ANN001
    from labeling.services.assignment import next_item
    from training.models import CandidateScore, ModelVersion

    Project.objects.filter(pk=project.pk).update(assignment_strategy="uncertain_first")
    Item.objects.filter(project=project).update(uncertainty=0.5)  # the RM is fairly sure everywhere
    # The judge is unsure about item 0 (it always picks the first answer shown there) ...
    stub.prefer = lambda texts: (always_first(texts) if "(0)" in texts[0]
                                 else [[i] for i in sorted(range(len(texts)), key=lambda i: -len(texts[i]))])
    # ... and disagrees with the reward model on item 1 (which prefers short answers there).
    reward = ModelVersion.objects.create(project=project, kind="reward", name="rm", version=1, base_model="m",
                                         is_current=True)
    for item in items[1:]:
        for candidate_id, text in item.candidates.values_list("id", "text"):
            score = -len(text) if item == items[1] else len(text)
            CandidateScore.objects.create(candidate_id=candidate_id, model_version=reward, score=score)
    judge = endpoint_judge(project, routes_disagreements=True)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    assert run.stats["routed_first"] == 2
    uncertainty = dict(Item.objects.filter(project=project).values_list("id", "uncertainty"))
    assert uncertainty[items[0].pk] == -1.0 and uncertainty[items[1].pk] == -1.0
    assert all(uncertainty[i.pk] == 0.5 for i in items[2:])
    from guidelines.services import acknowledge, acknowledgement_needed

    acknowledge(user=annotator, version=acknowledgement_needed(user=annotator, project=project))
    first = next_item(annotator=annotator, project=project)
    assert first.item_id in {items[0].pk, items[1].pk}


def test_adaptive_overlap_stops_at_one_person_who_agrees_with_a_trusted_judge(stub, items, project) -> None:  # noqa: ANN001
    from tests.factories import MembershipFactory, UserFactory

    Project.objects.filter(pk=project.pk).update(adaptive_overlap=True, overlap=3)
    Item.objects.filter(project=project).update(required_rankings=2)
    people = [UserFactory(username=f"p{n}") for n in range(2)]
    for person in people:
        MembershipFactory(user=person, project=project)
    for person in people:  # people agree with each other on the first item: a human consensus to measure against
        _rank_next(person, lambda text: -len(text))
    assert Item.objects.get(pk=items[0].pk).status == "accepted"
    judge = endpoint_judge(project, trust_threshold=0.9)

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    judge.refresh_from_db()
    assert judge.measured_agreement == 1.0 and run.stats["single_ranking_items"] == len(items) - 1
    agreeing = _rank_next(people[0], lambda text: -len(text))
    assert agreeing.status == "accepted" and agreeing.rankings_count == 1
    disagreeing = _rank_next(people[0], len)
    assert disagreeing.status == "open" and disagreeing.required_rankings == 2
    assert not Ranking.objects.filter(annotator__username__startswith="ai").exists()


def test_an_untrusted_judge_changes_nothing_in_adaptive_overlap(stub, items, project) -> None:  # noqa: ANN001
    Project.objects.filter(pk=project.pk).update(adaptive_overlap=True, overlap=3)
    Item.objects.filter(project=project).update(required_rankings=2)
    judge = endpoint_judge(project, trust_threshold=0.9)  # never measured against people: not trusted

    run = execute(judge_run_create(judge=judge, actor=None, enqueue=False))

    assert run.stats["single_ranking_items"] == 0
    assert set(Item.objects.filter(project=project).values_list("required_rankings", flat=True)) == {2}


def test_a_judge_whose_endpoint_was_removed_can_be_paused_but_not_run(stub, items, project, settings) -> None:  # noqa: ANN001
    judge = endpoint_judge(project)
    run = judge_run_create(judge=judge, actor=None, enqueue=False)
    settings.GENERATION_ENDPOINTS = {}

    paused = judge_update(judge=judge, actor=None, active=False)

    assert not paused.active and paused.version == 1
    run = execute(run)
    assert run.status == Run.Status.FAILED and "no longer configured" in run.error
    with pytest.raises(DomainError, match="paused"):
        judge_run_create(judge=paused, actor=None, enqueue=False)
