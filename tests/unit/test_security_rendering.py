"""Red-team findings of issue #15 on rendering and the blind payload.

- [x] 3. Markdown rendering was super-linear ("[" * 8000 took 23 s) and ran on every page
      view: pathological inputs at the largest allowed length render in well under a
      second (measured here, with a ceiling that stops a runaway render), time grows
      linearly, the preview refuses longer text with a 413, and pages show the HTML
      stored when the text was written (no markdown per view).
- [x] 14. The sanitizer kept `class` on div/span/pre/code, so answer text could carry
      `class="submit"`: only the highlighter's classes survive (the workspace script
      finds its controls by ids: tests/browser/test_annotate.py).
- [x] 9. Candidate ids in the blind payload were global and sequential (a rewrite was the
      highest id of a mixed item): annotators see opaque per-assignment ids everywhere
      and rank with them; real ids never reach them.
"""

from __future__ import annotations

import importlib
import json
import re
import resource
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.rendering import render_markdown
from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, draft_update, version_publish
from labeling.importing import prompts_import
from labeling.models import Candidate, Item, ItemCandidate, Project, Prompt, Ranking
from labeling.services.demonstrations import DemonstrationInput, demonstration_submit
from labeling.services.items import items_create_for_prompt
from tests.factories import CandidateFactory, PromptFactory, make_items

# --------------------------------------------------------------------------- 3: time

CEILING_S = 5.0  # a render still running then is stopped: the old renderer took hours
BOUND_S = 1.0
PATHOLOGICAL: dict[str, Callable[[int], str]] = {
    "brackets": lambda n: "[" * n,
    "images": lambda n: "![" * (n // 2),
    "stars": lambda n: "*" * n,
    "emphasis mix": lambda n: "*_" * (n // 2),
    "strong nesting": lambda n: "*" * (n // 2) + "a" + "*" * (n // 2),
    "backticks": lambda n: "`" * n,
    "angle brackets": lambda n: "<" * n,
    "open tags": lambda n: "<a " * (n // 3),
    "nested quotes": lambda n: "> " * (n // 2),
    "quote markers": lambda n: ">" * n,
    "nested lists": lambda n: "".join("  " * i + "- x\n" for i in range(n // 600)),
    "list markers": lambda n: "- " * (n // 2),
    "pipes": lambda n: "|" * n,
    "table rows": lambda n: "|a|b|\n|-|-|\n" + "|x|y|\n" * (n // 6),
    "unclosed links": lambda n: "[a](" * (n // 4),
    "entities": lambda n: "&#" * (n // 2),
    "fake fenced html": lambda n: '<pre><code class="language-python">' * (n // 35),
    "quadratic lexer": lambda n: "```js\n" + '"\\' * (n // 2) + "\n```\n",
    "many code blocks": lambda n: ("```go\n" + '"\\' * 1500 + "\n```\n") * (n // 3010),
}


@contextmanager
def ceiling(seconds: float) -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        raise TimeoutError(f"still rendering after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def best_of_3(text: str) -> float:
    with ceiling(CEILING_S):
        render_markdown(text)  # untimed: the first render of a kind warms caches
    times = []
    for _ in range(3):
        # This process's CPU time, not the wall clock: on a shared machine (CI runs the
        # suite beside other jobs) the wall clock of a 30 ms render varied 4x between runs.
        start = time.process_time()
        with ceiling(CEILING_S):
            render_markdown(text)
        times.append(time.process_time() - start)
    return min(times)


# Most of these took seconds to hours with Python-Markdown; the rest (the lexer and
# fenced-code cases) guard the highlighting and nesting limits of the new pipeline.
@pytest.mark.parametrize("make", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_markdown_renders_fast_and_linearly(make: Callable[[int], str]) -> None:
    longest = settings.IMPORT_MAX_TEXT_CHARS  # the longest text anyone can store or preview
    full, half = make(longest)[:longest], make(longest // 2)[:longest // 2]

    full_s, half_s = best_of_3(full), best_of_3(half)

    assert full_s < BOUND_S, f"{full_s:.3f} s for {len(full)} characters"
    # Doubling the text at most about doubles the time. Below 0.2 s the ratio is mostly
    # noise on a shared machine (0.034 -> 0.140 s was seen under load), and such a render
    # is no threat at the longest storable text; the quadratic renders were seconds here.
    assert full_s < 4 * half_s or full_s < 0.2, f"{half_s:.4f} s -> {full_s:.4f} s"


def test_rendering_does_not_leak_memory() -> None:
    # cmarkgfm's own wrapper lost ~60 KB per call (core/rendering.py frees it).
    text = "Some **bold** text with a table:\n\n|a|b|\n|-|-|\n|1|2|\n\n~~old~~ https://x.org\n" * 20
    render_markdown(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    for _ in range(3000):
        render_markdown(text)

    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 30, f"{grown_mb:.0f} MB more after 3000 renders"


def test_preview_refuses_text_longer_than_an_answer_with_413(project, annotator) -> None:  # noqa: ANN001
    client = Client()
    client.force_login(annotator)
    url = f"/annotate/{project.slug}/preview"
    longest = settings.IMPORT_MAX_TEXT_CHARS

    start = time.perf_counter()
    with ceiling(CEILING_S):
        at_limit = client.post(url, {"text": "[" * longest})
    elapsed = time.perf_counter() - start
    over = client.post(url, {"text": "x" * (longest + 1)})

    assert at_limit.status_code == 200 and elapsed < BOUND_S, f"{elapsed:.3f} s"
    assert over.status_code == 413
    assert f"limited to {longest} characters" in over.content.decode()


# --------------------------------------------------------------------------- 3: stored


@pytest.fixture
def rendered_item(project: Project) -> Item:
    """An item whose prompt, answers and guideline all hold markdown."""
    prompt = PromptFactory(project=project, messages=[
        {"role": "system", "content": "Be *brief*."},
        {"role": "user", "content": "What is **water**?"}])
    ids = [CandidateFactory(prompt=prompt, text=f"It is **answer {n}**.").pk for n in range(3)]
    items_create_for_prompt(project=project, prompt_id=prompt.pk, candidate_ids=ids)
    guideline = Guideline.objects.create(slug="g-render", title="G", project=project)
    version_publish(version=draft_create(guideline=guideline, body="# Rules\n\n**Be kind.**"),
                    user=None)
    Project.objects.filter(pk=project.pk).update(guideline=guideline)
    return Item.objects.get(prompt=prompt)


def no_markdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any markdown rendering or sanitizing from now on raises."""
    import nh3

    from core import rendering

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("markdown rendered during a page view")

    monkeypatch.setattr(nh3, "clean", boom)  # every render ends in the sanitizer
    monkeypatch.setattr(rendering, "_cleaner", boom)  # (built once, core.rendering._cleaner)
    monkeypatch.setattr(rendering, "_cmark_html", boom, raising=False)  # and starts here


def test_pages_show_stored_html_and_run_no_markdown(monkeypatch, project, annotator,
                                                    second_annotator, reviewer,
                                                    rendered_item) -> None:  # noqa: ANN001
    version = Guideline.objects.get(slug="g-render").versions.get()
    acknowledge(user=annotator, version=version)
    make_items(project, 1)  # something to pre-load
    annotating, gated, reviewing = Client(), Client(), Client()
    annotating.force_login(annotator)
    gated.force_login(second_annotator)
    reviewing.force_login(reviewer)
    no_markdown(monkeypatch)

    workspace = annotating.get(f"/annotate/{project.slug}/").content.decode()
    prefetch = annotating.get(f"/annotate/{project.slug}/prefetch")
    gate = gated.get(f"/annotate/{project.slug}/guideline").content.decode()
    adjudication = reviewing.get(f"/console/items/{rendered_item.pk}").content.decode()
    guideline_page = reviewing.get(f"/console/guidelines/versions/{version.pk}/")

    assert "<strong>answer 0</strong>" in workspace and "<em>brief</em>" in workspace
    assert "<strong>water</strong>" in workspace and "<strong>Be kind.</strong>" in workspace
    assert prefetch.status_code == 200
    assert "<strong>Be kind.</strong>" in gate
    assert "<strong>answer 1</strong>" in adjudication and "<strong>water</strong>" in adjudication
    assert b"<strong>Be kind.</strong>" in guideline_page.content


def test_every_write_path_stores_the_sanitized_html(project, annotator, tmp_path) -> None:  # noqa: ANN001
    from training.generation import _Counters, _write_chunk, generation_run_create

    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"prompt": "Say **hi**", "candidates": ["*one*", "`two`"]}) + "\n")
    prompts_import(project=project, path=source)
    imported = Prompt.objects.get(project=project)
    run = generation_run_create(project=project, backend="builtin-tiny", enqueue=False,
                                params={"k": 2, "max_new_tokens": 4, "seed": 1})
    samples = [SimpleNamespace(text=text, index=n, completion_tokens=2, prompt_tokens=2,
                               finish_reason="stop", seed=1)
               for n, text in enumerate(["~~gone~~ **new**", "plain"])]
    _write_chunk(run, [imported], [SimpleNamespace(ok=True, samples=samples)], _Counters())
    demo = Item.objects.create(project=project, prompt=imported, kind=Item.Kind.DEMONSTRATION,
                               required_rankings=1)
    from labeling.services.assignment import next_item

    Item.objects.exclude(pk=demo.pk).update(status=Item.Status.DISCARDED)
    assignment = next_item(annotator=annotator, project=project)
    written, _ = demonstration_submit(annotator=annotator, assignment_id=assignment.pk,
                                      data=DemonstrationInput(text="# Mine"), idempotency_key="d")
    guideline = Guideline.objects.create(slug="g-write", title="G", project=project)
    draft = draft_update(version=draft_create(guideline=guideline, body="a"), body="*edited*",
                         changelog="", change="major")

    html = dict(Candidate.objects.filter(prompt=imported).values_list("text", "text_html"))
    assert imported.messages_html == ["<p>Say <strong>hi</strong></p>\n"]
    assert html["*one*"] == "<p><em>one</em></p>\n" and html["`two`"] == "<p><code>two</code></p>\n"
    assert html["~~gone~~ **new**"] == "<p><del>gone</del> <strong>new</strong></p>\n"
    assert written.candidate.text_html == "<h1>Mine</h1>\n"
    assert draft.body_html == "<p><em>edited</em></p>\n"


def test_the_migration_backfills_existing_rows(project) -> None:  # noqa: ANN001
    migration = importlib.import_module("labeling.migrations.0008_rendered_html")
    prompts = [PromptFactory(project=project) for _ in range(3)]
    for n, prompt in enumerate(prompts):
        CandidateFactory(prompt=prompt, text=f"**{n}**")
    Candidate.objects.update(text_html="")
    Prompt.objects.update(messages_html=[])

    migration.BATCH = 2  # several batches
    migration.backfill(django_apps, None)

    assert sorted(Candidate.objects.values_list("text_html", flat=True)) == [
        f"<p><strong>{n}</strong></p>\n" for n in range(3)]
    assert all(len(p.messages_html) == 1 for p in Prompt.objects.all())


# --------------------------------------------------------------------------- 14: classes


def test_sanitizer_keeps_only_the_highlighters_classes() -> None:
    hostile = render_markdown('<div class="submit">Send</div>\n\nok <span class="submit skip-open">x</span>')
    code = render_markdown("```python\ndef f():\n    return 1\n```")

    assert 'class="submit' not in hostile and "skip-open" not in hostile
    assert '<div class="highlight">' in code and '<span class="k">def</span>' in code
    classes = set(re.findall(r'class="([^"]*)"', code))
    from core.rendering import ALLOWED_CLASSES

    assert classes <= ALLOWED_CLASSES["div"] | ALLOWED_CLASSES["span"]


# --------------------------------------------------------------------------- 9: opaque ids


def test_annotators_see_opaque_per_assignment_ids(as_user, project, annotator, second_annotator) -> None:  # noqa: ANN001
    item = make_items(project, 1, k=3)[0]
    real = set(item.item_candidates.values_list("candidate_id", flat=True))

    first = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()
    second = as_user(second_annotator).get(f"/api/projects/{project.pk}/next").json()
    page = Client()
    page.force_login(annotator)
    html = page.get(f"/annotate/{project.slug}/").content.decode()

    ids_first = [c["id"] for c in first["candidates"]]
    ids_second = [c["id"] for c in second["candidates"]]
    assert all(isinstance(i, str) and re.fullmatch(r"[0-9a-f]{16}", i) for i in ids_first)
    assert not set(ids_first) & set(ids_second)  # per assignment, not per candidate
    assert set(re.findall(r'data-id="([^"]*)"', html)) == set(ids_first)
    for cid in real:
        assert f'data-id="{cid}"' not in html and cid not in [c["id"] for c in first["candidates"]]


def test_a_ranking_is_submitted_in_shown_ids_and_stored_in_real_ones(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 1, k=3)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()
    shown = [c["id"] for c in assignment["candidates"]]
    url = f"/api/assignments/{assignment['id']}/ranking"
    from labeling.blind import shown_ids
    from labeling.models import Assignment

    real_of = shown_ids(Assignment.objects.get(pk=assignment["id"]))

    real_ids = client.post(url, {"tiers": [[str(real_of[s])] for s in shown]}, format="json",
                           HTTP_IDEMPOTENCY_KEY="real")
    integers = client.post(url, {"tiers": [[real_of[s]] for s in shown]}, format="json",
                           HTTP_IDEMPOTENCY_KEY="integers")
    response = client.post(url, {"tiers": [[shown[2]], [shown[0], shown[1]]]}, format="json",
                           HTTP_IDEMPOTENCY_KEY="shown")

    # Refused, and what is missing is named in the ids the annotator was shown.
    assert real_ids.status_code == 400
    assert all(s in real_ids.json()["detail"] for s in shown)
    assert integers.status_code == 400 and "tiers" in integers.json()
    assert response.status_code == 201
    assert response.json()["tiers"] == [[shown[2]], [shown[0], shown[1]]]
    assert Ranking.objects.get().tiers == [[real_of[shown[2]]], [real_of[shown[0]], real_of[shown[1]]]]


def test_a_mixed_rewrite_is_not_the_highest_id(as_user, project, annotator) -> None:  # noqa: ANN001
    from labeling.blind import shown_id

    # The human answer is the newest candidate; over many assignments its shown id must
    # be the largest no more often than chance (1 in 3) would make it.
    prompt = PromptFactory(project=project)
    models = [CandidateFactory(prompt=prompt, text=f"model {n}").pk for n in range(2)]
    human = CandidateFactory(prompt=prompt, text="person", origin=Candidate.Origin.HUMAN).pk
    item = Item.objects.create(project=project, prompt=prompt, required_rankings=1)
    ItemCandidate.objects.bulk_create(ItemCandidate(item=item, candidate_id=cid, position=n)
                                      for n, cid in enumerate([*models, human]))
    ids = [shown_id(assignment_id, cid) for assignment_id in range(1, 301)
           for cid in [*models, human]]
    largest_is_human = sum(
        max(ids[3 * n:3 * n + 3]) == ids[3 * n + 2] for n in range(300))

    payload = as_user(annotator).get(f"/api/projects/{project.pk}/next").json()

    assert 60 < largest_is_human < 140  # 100 expected
    assert {c["id"] for c in payload["candidates"]} == {
        shown_id(payload["id"], cid) for cid in [*models, human]}


def test_a_demonstration_answer_returns_no_real_candidate_id(as_user, project, annotator) -> None:  # noqa: ANN001
    prompt = PromptFactory(project=project)
    Item.objects.create(project=project, prompt=prompt, kind=Item.Kind.DEMONSTRATION,
                        required_rankings=1)
    client = as_user(annotator)
    assignment = client.get(f"/api/projects/{project.pk}/next").json()

    response = client.post(f"/api/assignments/{assignment['id']}/demonstration",
                           {"text": "Mine."}, format="json", HTTP_IDEMPOTENCY_KEY="d")

    from labeling.blind import shown_id

    written = Candidate.objects.get(origin=Candidate.Origin.HUMAN)
    assert response.status_code == 201
    assert response.json()["candidate"] == shown_id(assignment["id"], written.pk)


def test_opaque_ids_add_no_query_to_the_hot_path(as_user, project, annotator) -> None:  # noqa: ANN001
    make_items(project, 3, k=4)
    client = as_user(annotator)
    warm = client.get(f"/api/projects/{project.pk}/next").json()  # sessions, caches...
    client.post(f"/api/assignments/{warm['id']}/ranking",
                {"tiers": [[c["id"]] for c in warm["candidates"]]}, format="json",
                HTTP_IDEMPOTENCY_KEY="warm")

    with CaptureQueriesContext(connection) as claim:
        assignment = client.get(f"/api/projects/{project.pk}/next").json()
    with CaptureQueriesContext(connection) as submit:
        response = client.post(f"/api/assignments/{assignment['id']}/ranking",
                               {"tiers": [[c["id"]] for c in assignment["candidates"]]},
                               format="json", HTTP_IDEMPOTENCY_KEY="q")

    assert response.status_code == 201
    # What the same two requests made before this change (see the commit message).
    assert (len(claim), len(submit)) == HOT_PATH_QUERIES[connection.vendor], [
        q["sql"][:90] for q in claim.captured_queries + submit.captured_queries]


# Measured on the code before opaque ids (SQLite): a claim by `next`, then its ranking
# (8, 10); the submit is 8 since its membership check rides on the assignment's query and
# a leased assignment's Idempotency-Key is checked by the insert (#19). On PostgreSQL the
# claim's INSERT + lease count and the submit's INSERT + counters are one statement each
# (7, 6); since the held leases, the claim and its candidates are one statement, and the
# submit's ownership check and both locks another, (5, 4): project, claim, INSERT; locked
# read, write; each request's transaction adds a SAVEPOINT and its RELEASE.
HOT_PATH_QUERIES = {"sqlite": (8, 8), "postgresql": (5, 4)}
