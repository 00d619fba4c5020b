"""Demonstrations: people write (or rewrite) the answer they wish the model gave. Same
lease, blind and idempotency rules as rankings; stored as human candidates that feed SFT
and, when asked, get ranked against model answers."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from core.runs import run_claim
from labeling.blind import tiers_as_shown
from labeling.importing import prompts_import
from labeling.models import Assignment, Candidate, Demonstration, Item, Project
from labeling.services.assignment import InvalidRanking, SubmissionConflict, next_item
from labeling.services.demonstrations import DemonstrationInput, demonstration_items_create, demonstration_submit
from labeling.services.rankings import RankingInput, ranking_submit
from tests.factories import CandidateFactory, PromptFactory, UserFactory, make_items
from training.models import DatasetSnapshot
from training.snapshots import snapshot_build, snapshot_create, snapshot_dir

SOURCE = "Paris is the capital of France. It is known for the Eiffel Tower."


@pytest.fixture
def write_project(project: Project) -> Project:
    Project.objects.filter(pk=project.pk).update(demonstrations=Project.Demonstrations.ONLY,
                                                 demonstrations_per_prompt=2)
    project.refresh_from_db()
    return project


def demo_item(project: Project, *, source: str | None = None, required: int = 1) -> Item:
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "What is Paris?"}])
    item = Item.objects.create(project=project, prompt=prompt, kind=Item.Kind.DEMONSTRATION,
                               required_rankings=required)
    if source is not None:
        item.item_candidates.create(candidate=CandidateFactory(prompt=prompt, text=source,
                                                               model_name="secret-model"), position=0)
    return item


def write(user, project: Project, text: str, *, key: str = "k1", rewrite: bool = False):  # noqa: ANN001, ANN201
    assignment = next_item(annotator=user, project=project)
    return demonstration_submit(annotator=user, assignment_id=assignment.pk,
                                data=DemonstrationInput(text=text, rewrite=rewrite), idempotency_key=key)


def test_a_demonstration_is_stored_as_a_human_candidate_and_completes_the_item(project, annotator) -> None:  # noqa: ANN001
    item = demo_item(project)

    demonstration, created = write(annotator, project, "  Paris is France's capital.  ")

    assert created
    candidate = demonstration.candidate
    assert (candidate.origin, candidate.text, candidate.prompt_id) == ("human", "Paris is France's capital.",
                                                                       item.prompt_id)
    assert candidate.model_name == "" and demonstration.source_candidate is None
    assert demonstration.edit_distance is None
    item.refresh_from_db()
    assert (item.status, item.rankings_count, item.active_leases) == ("accepted", 1, 0)
    assert Assignment.objects.get().status == "submitted"


def test_a_rewrite_stores_its_edit_distance_to_the_source(project, annotator) -> None:  # noqa: ANN001
    demo_item(project, source=SOURCE)
    rewritten = SOURCE.replace("known for", "famous for")

    demonstration, _ = write(annotator, project, rewritten, rewrite=True)

    assert demonstration.source_candidate.text == SOURCE
    assert demonstration.edit_distance == 5  # "kn-o-wn" -> "fam-o-us": 4 substitutions, 1 insertion


def test_a_retry_with_the_same_key_stores_one_demonstration(project, annotator) -> None:  # noqa: ANN001
    demo_item(project, required=2)
    first, created = write(annotator, project, "An answer.", key="same")
    assignment = Assignment.objects.get()
    again, created_again = demonstration_submit(annotator=annotator, assignment_id=assignment.pk,
                                                data=DemonstrationInput(text="An answer."),
                                                idempotency_key="same")

    assert created and not created_again and again.pk == first.pk
    assert Demonstration.objects.count() == 1 and Candidate.objects.filter(origin="human").count() == 1
    assert Item.objects.get().rankings_count == 1


@pytest.mark.parametrize(("text", "message"), [("   ", "text is empty"), ("x" * 100_001, "limited to")])
def test_empty_or_huge_answers_are_refused(project, annotator, text: str, message: str) -> None:  # noqa: ANN001
    demo_item(project)
    with pytest.raises(InvalidRanking, match=message):
        write(annotator, project, text)
    assert not Demonstration.objects.exists()


def test_rewriting_needs_something_to_rewrite(project, annotator) -> None:  # noqa: ANN001
    demo_item(project)
    with pytest.raises(InvalidRanking, match="no answer to rewrite"):
        write(annotator, project, "text", rewrite=True)


def test_rankings_and_demonstrations_do_not_cross(project, annotator, second_annotator) -> None:  # noqa: ANN001
    demo_item(project, source=SOURCE)
    assignment = next_item(annotator=annotator, project=project)
    only = assignment.display_order
    with pytest.raises(InvalidRanking, match="asks for a written answer"):
        ranking_submit(annotator=annotator, assignment_id=assignment.pk,
                       data=RankingInput(tiers=tiers_as_shown(assignment, [only])), idempotency_key="r")
    Item.objects.all().delete()
    make_items(project, 1)
    ranking_assignment = next_item(annotator=second_annotator, project=project)
    with pytest.raises(InvalidRanking, match="asks for a ranking"):
        demonstration_submit(annotator=second_annotator, assignment_id=ranking_assignment.pk,
                             data=DemonstrationInput(text="mine"), idempotency_key="d")


def test_each_prompt_gets_its_required_writers_never_the_same_one_twice(write_project, annotator,
                                                                         second_annotator) -> None:  # noqa: ANN001
    demonstration_items_create(project=write_project, prompt_ids=[PromptFactory(project=write_project).pk])
    third = UserFactory()
    from labeling.models import Membership

    Membership.objects.create(user=third, project=write_project, role="annotator")
    write(annotator, write_project, "one", key="a")
    assert next_item(annotator=annotator, project=write_project) is None  # seen it already
    write(second_annotator, write_project, "two", key="b")

    assert next_item(annotator=third, project=write_project) is None  # the item is full
    item = Item.objects.get()
    assert (item.status, item.rankings_count) == ("accepted", 2)


def test_an_expired_lease_is_refused_when_someone_else_holds_the_slot(project, annotator,
                                                                      second_annotator) -> None:  # noqa: ANN001
    demo_item(project)
    late = next_item(annotator=annotator, project=project)
    Assignment.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    from labeling.services.assignment import assignments_expire

    assert assignments_expire() == 1
    assert next_item(annotator=second_annotator, project=project) is not None  # took the slot

    with pytest.raises(SubmissionConflict, match="ran out"):
        demonstration_submit(annotator=annotator, assignment_id=late.pk,
                             data=DemonstrationInput(text="late"), idempotency_key="a")
    assert not Demonstration.objects.exists()
    write(second_annotator, project, "on time", key="b")
    assert Demonstration.objects.count() == 1


def test_an_expired_lease_is_accepted_while_a_slot_is_free(project, annotator) -> None:  # noqa: ANN001
    demo_item(project)
    late = next_item(annotator=annotator, project=project)
    Assignment.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    demonstration, created = demonstration_submit(annotator=annotator, assignment_id=late.pk,
                                                  data=DemonstrationInput(text="late but fine"),
                                                  idempotency_key="a")
    assert created and Item.objects.get().status == "accepted"


def test_only_projects_get_a_demonstration_item_per_imported_prompt(write_project, tmp_path: Path) -> None:
    rows = [{"prompt": f"Question {n}?"} for n in range(3)]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))

    report = prompts_import(project=write_project, path=path, source="t")
    again = prompts_import(project=write_project, path=path, source="t")

    items = Item.objects.filter(project=write_project)
    assert report.items_added == 3 and again.items_added == 0
    assert {(i.kind, i.required_rankings, i.item_candidates.count()) for i in items} == {("demonstration", 2, 0)}


def test_after_projects_ask_to_rewrite_the_accepted_best_answer(project, annotator, second_annotator) -> None:  # noqa: ANN001
    Project.objects.filter(pk=project.pk).update(demonstrations="after", overlap=2)
    project.refresh_from_db()
    item = make_items(project, 1, k=3)[0]
    Item.objects.filter(pk=item.pk).update(required_rankings=2)
    for user, key in ((annotator, "a"), (second_annotator, "b")):
        assignment = next_item(annotator=user, project=project)
        ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=key,
                       data=RankingInput(tiers=tiers_as_shown(
                           assignment, [[c] for c in sorted(assignment.display_order)])))
    item.refresh_from_db()
    assert item.status == "accepted"

    demo = Item.objects.get(kind="demonstration")

    assert demo.prompt_id == item.prompt_id
    assert list(demo.item_candidates.values_list("candidate_id", flat=True)) == [item.consensus[0][0]]


def test_mixing_puts_the_human_answer_into_a_ranking_item_with_model_answers(project, annotator) -> None:  # noqa: ANN001
    Project.objects.filter(pk=project.pk).update(mix_demonstrations=True, k=3)
    project.refresh_from_db()
    item = demo_item(project)
    model_ids = [CandidateFactory(prompt=item.prompt, origin="model").pk for _ in range(3)]

    demonstration, _ = write(annotator, project, "A careful human answer.")

    mixed = Item.objects.get(kind="ranking")
    ids = list(mixed.item_candidates.values_list("candidate_id", flat=True))
    assert ids == [demonstration.candidate_id, *model_ids[:2]]


def test_demonstrations_feed_sft_snapshots(project, annotator) -> None:  # noqa: ANN001
    demo_item(project, source=SOURCE)
    write(annotator, project, "A **human** answer.", rewrite=True)

    snapshot = snapshot_create(project=project, kinds=["sft", "pairs"], formats=["jsonl"], enqueue=False)
    snapshot_build(run_claim(DatasetSnapshot, snapshot.pk))
    snapshot.refresh_from_db()

    rows = [json.loads(line) for line in (snapshot_dir(snapshot) / "sft-train.jsonl").read_text().splitlines()]
    assert snapshot.status == "done"
    # SFT rows are conversations by default: the prompt's messages, then the answer.
    assert [r["messages"][-1] for r in rows] == [{"role": "assistant", "content": "A **human** answer."}]
    assert rows[0]["messages"][0]["role"] == "user" and rows[0]["origin"] == "human"
    assert snapshot.counts["pairs-train"] == 0


# --------------------------------------------------------------------------- API and page


def test_api_next_says_it_is_a_demonstration_and_stays_blind(as_user, project, annotator) -> None:  # noqa: ANN001
    demo_item(project, source=SOURCE)

    response = as_user(annotator).get(f"/api/projects/{project.pk}/next")

    body = response.json()
    assert body["task"] == "demonstration" and [c["label"] for c in body["candidates"]] == ["A"]
    assert b"secret-model" not in response.content


def test_api_submit_is_idempotent_and_checks_ownership(as_user, project, annotator, second_annotator) -> None:  # noqa: ANN001
    demo_item(project, source=SOURCE, required=2)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    url = f"/api/assignments/{assignment['id']}/demonstration"
    body = {"text": SOURCE + " Extra.", "rewrite": True, "duration_ms": 5000}

    first = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    second = client.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    stolen = as_user(second_annotator).post(url, body, format="json", HTTP_IDEMPOTENCY_KEY="z")
    no_key = client.post(url, body, format="json")

    assert (first.status_code, second.status_code, stolen.status_code) == (201, 200, 404)
    assert first.json() == second.json() and first.json()["edit_distance"] == 7
    assert no_key.status_code == 400 and "Idempotency-Key" in no_key.json()["detail"]
    assert Demonstration.objects.count() == 1


def test_workspace_page_shows_the_editor_and_the_answer_to_rewrite_inert(project, annotator) -> None:  # noqa: ANN001
    demo_item(project, source='Fine <script>window.__xss=1</script><img src=x onerror="alert(1)">')
    client = Client()
    client.force_login(annotator)

    page = client.get(f"/annotate/{project.slug}/")

    html = page.content.decode()
    assert page.status_code == 200 and 'data-task="demonstration"' in html
    assert "Start from the answer above" in html and "<script>window.__xss" not in html
    assert "onerror" not in html.split('class="source-text"')[0].split('class="answer card source"')[1]
    assert "secret-model" not in html


def test_preview_renders_sanitized_markdown_for_members_only(project, annotator, outsider) -> None:  # noqa: ANN001
    client = Client()
    client.force_login(annotator)
    url = f"/annotate/{project.slug}/preview"

    response = client.post(url, {"text": "**bold** <script>alert(1)</script> [x](javascript:alert(1))"})

    assert response.status_code == 200
    assert b"<strong>bold</strong>" in response.content
    assert b"<script" not in response.content and b"javascript:" not in response.content
    outsider_client = Client()
    outsider_client.force_login(outsider)
    assert outsider_client.post(url, {"text": "x"}).status_code == 404
    assert client.get(url).status_code == 405


def test_progress_counts_demonstrations(project, annotator) -> None:  # noqa: ANN001
    from labeling.selectors.workspace import annotator_progress

    demo_item(project)
    write(annotator, project, "done")
    progress = annotator_progress(annotator, project)
    assert (progress.done_today, progress.done_total) == (1, 1)


def test_switching_a_project_to_demonstrations_only_over_the_api(as_user, project, project_admin) -> None:  # noqa: ANN001
    prompts = [PromptFactory(project=project) for _ in range(3)]
    client = as_user(project_admin)

    response = client.patch(f"/api/projects/{project.pk}/", {"demonstrations": "only",
                                                             "demonstrations_per_prompt": 2}, format="json")
    again = client.patch(f"/api/projects/{project.pk}/", {"demonstrations": "only"}, format="json")
    bad = client.patch(f"/api/projects/{project.pk}/", {"demonstrations": "sometimes"}, format="json")

    assert response.status_code == 200 and again.status_code == 200 and bad.status_code == 400
    assert response.json()["demonstrations"] == "only"
    items = Item.objects.filter(project=project, kind="demonstration")
    assert sorted(items.values_list("prompt_id", flat=True)) == [p.pk for p in prompts]
    assert set(items.values_list("required_rankings", flat=True)) == {2}
