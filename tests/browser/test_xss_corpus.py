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
