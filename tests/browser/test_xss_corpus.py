"""Stored XSS corpus in every text a page shows, visited in Chromium under the enforced
CSP: nothing executes."""

from __future__ import annotations

import pytest

from core.rendering import render_markdown, render_messages
from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, version_publish
from labeling.blind import tiers_as_shown
from labeling.models import Candidate, Item, Membership, Project, Prompt, Role
from labeling.services.assignment import next_item
from labeling.services.quality import quality_refresh
from labeling.services.rankings import RankingInput, ranking_submit
from tests.browser.test_annotate import login
from tests.factories import UserFactory, make_items

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<svg onload="window.__xss=1"></svg>',
    "[link](javascript:window.__xss=1)",
    '<a href="javascript:window.__xss=1">x</a>',
    '<div style="background:url(javascript:window.__xss=1)">css</div>',
    '"><script>window.__xss=1</script>',
    "<iframe srcdoc=\"<script>parent.__xss=1</script>\"></iframe>",
]
CORPUS = " ".join(PAYLOADS)


def test_stored_payloads_never_execute(page, live_server, reviewer) -> None:  # noqa: ANN001
    project = Project.objects.create(name=f"P {PAYLOADS[0]}", slug="xss", overlap=2,
                                     description=CORPUS)
    Membership.objects.create(user=reviewer, project=project, role=Role.REVIEWER)
    guideline = Guideline.objects.create(slug="xss-g", title=CORPUS[:200], project=project)
    version = version_publish(version=draft_create(guideline=guideline, body=f"# G\n\n{CORPUS}"),
                              user=None)
    project.guideline = guideline
    project.save()
    items = make_items(project, 2, k=3, model=PAYLOADS[1][:100])
    messages = [{"role": "user", "content": CORPUS}]
    Prompt.objects.filter(project=project).update(messages=messages,
                                                  messages_html=render_messages(messages))
    Candidate.objects.filter(prompt__project=project).update(
        text=CORPUS, text_html=str(render_markdown(CORPUS)))
    rankers = []
    for n in range(2):
        user = UserFactory(username=f"u{n}", first_name=PAYLOADS[2][:30])
        Membership.objects.create(user=user, project=project, role=Role.ANNOTATOR)
        acknowledge(user=user, version=version)
        assignment = next_item(annotator=user, project=project)
        order = assignment.display_order if n == 0 else assignment.display_order[::-1]
        ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=f"x{n}",
                       data=RankingInput(tiers=tiers_as_shown(assignment, [[c] for c in order]),
                                         rationale=CORPUS))
        rankers.append(user)
    Item.objects.filter(pk=items[0].pk).update(decision_note=CORPUS)
    quality_refresh(project=project)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    login(page, live_server, reviewer)
    urls = ["/console/", f"/console/projects/{project.pk}/",
            f"/console/projects/{project.pk}/disputes", f"/console/items/{items[0].pk}",
            f"/console/projects/{project.pk}/annotators",
            f"/console/projects/{project.pk}/annotators/{rankers[0].pk}",
            f"/console/projects/{project.pk}/models", f"/console/guidelines/{guideline.pk}/",
            f"/console/guidelines/versions/{version.pk}/", "/console/audit",
            f"/console/projects/{project.pk}/runs"]
    for url in urls:
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        for link in page.locator("a[href^='javascript']").all():
            pytest.fail(f"javascript: link rendered on {url}: {link}")
        assert page.evaluate("window.__xss") is None, url
    assert dialogs == []
    assert page.js_errors == []


def test_payloads_on_the_pages_that_run_the_loop_never_execute(page, live_server, project_admin) -> None:  # noqa: ANN001
    """Project settings, upload (file names, invalid rows' reasons), members and invites,
    the launcher and reward models pages (model names, warnings, run errors), as an admin."""
    from django.utils import timezone

    from labeling.models import ImportJob, Invite
    from training.models import DatasetSnapshot, GenerationRun, ModelVersion, TrainingRun

    project = Project.objects.create(name=f"P {PAYLOADS[0]}", slug="xss-loop", description=CORPUS)
    Membership.objects.create(user=project_admin, project=project, role=Role.ADMIN)
    Guideline.objects.create(slug="xss-shared", title=CORPUS[:200])
    make_items(project, 1, k=2)
    errors = [{"line": n + 1, "reason": payload} for n, payload in enumerate(PAYLOADS)]
    job = ImportJob.objects.create(project=project, file_path="/nonexistent", original_name=PAYLOADS[1][:255],
                                   dry_run=True, status="done", report={"rows": 9, "invalid": 8, "errors": errors})
    Invite.objects.create(project=project, role="annotator", token_hash="c" * 64, created_by=project_admin,
                          expires_at=timezone.now())
    GenerationRun.objects.create(project=project, backend="builtin-tiny", params={}, status="failed", error=CORPUS)
    snapshot = DatasetSnapshot.objects.create(project=project, kinds=["pairs"], formats=["jsonl"], status="done",
                                              files={"pairs-train.jsonl": {"rows": 1}}, error=CORPUS)
    run = TrainingRun.objects.create(project=project, kind="reward", base_model=CORPUS[:200], snapshot=snapshot,
                                     config={}, status="done", error=CORPUS,
                                     results={"eval": {"calibration": {"0-0.25": {"pairs": 1, "accuracy": 1,
                                                                                  "confidence": 0.5}}}})
    ModelVersion.objects.create(project=project, kind="reward", name=PAYLOADS[6][:100], version=1,
                                base_model=CORPUS[:200], snapshot=snapshot, source_run=run,
                                metrics={"eval_accuracy": 0.5, "eval_pairs": 2}, warnings=PAYLOADS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    login(page, live_server, project_admin)
    base = f"/console/projects/{project.pk}"
    for url in [f"{base}/settings", f"{base}/upload", f"{base}/upload/{job.pk}", f"{base}/members",
                f"{base}/runs", f"{base}/reward-models"]:
        response = page.goto(f"{live_server.url}{url}")
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert page.locator("a[href^='javascript']").count() == 0, url
        assert page.evaluate("window.__xss") is None, url
    assert dialogs == []
    assert page.js_errors == []
