"""axe-core over every annotator and console page (issue 17): no serious or critical
violation, one h1 per page, no request answered 404 (the favicon was)."""

from __future__ import annotations

import pytest

from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, draft_update, version_publish
from labeling.models import Membership, Project
from tests.browser.conftest import axe_violations, describe_violations
from tests.browser.test_annotate import login
from tests.browser.test_demonstrations import demo_items
from tests.factories import make_items
from tests.unit.test_console_review import console_urls, disputed_item, ids  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def _check(page, url: str, problems: list[str], missing: list[str]) -> None:  # noqa: ANN001
    answer = page.request.get(url)
    if answer.status == 405:
        return  # an action's URL (POST only): its page is the one it redirects to
    if answer.headers.get("content-type", "").startswith("application/json"):
        return  # what a page polls (runs and upload status), not a page
    missing.clear()
    page.goto(url)
    page.wait_for_load_state("networkidle")
    found = axe_violations(page)
    if found:
        problems.append(f"{url}:\n{describe_violations(found)}")
    h1 = page.locator("h1").count()
    if h1 != 1:
        problems.append(f"{url}: {h1} h1 elements")
    if missing:
        problems.append(f"{url}: 404 for {missing}")


def _watch_404(page) -> list[str]:  # noqa: ANN001
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    return missing


@pytest.mark.parametrize("role", ["admin", "reviewer"])  # a reviewer sees admin controls disabled
def test_every_console_page_is_clean(page, live_server, project, project_admin, reviewer, ids,  # noqa: ANN001, F811
                                     role) -> None:
    project_admin.is_staff = True
    project_admin.save()
    missing = _watch_404(page)
    login(page, live_server, project_admin if role == "admin" else reviewer)
    problems: list[str] = []

    for url, _ in console_urls(ids):
        _check(page, live_server.url + url, problems, missing)
    _check(page, f"{live_server.url}/", problems, missing)
    _check(page, f"{live_server.url}/accounts/tokens/", problems, missing)

    assert problems == [], "\n".join(problems)


def test_every_annotator_page_is_clean(page, live_server, project, annotator, db) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="g", title="G", project=project)
    version = version_publish(version=draft_create(guideline=guideline, body="# Rules\n\nBe kind."),
                              user=None)
    project.guideline = guideline
    project.save()
    make_items(project, 3)
    pairs = Project.objects.create(name="Pairs", slug="pairs", mode=Project.Mode.PAIRWISE)
    write = Project.objects.create(name="Write", slug="write", demonstrations="only")
    for other in (pairs, write):
        Membership.objects.create(user=annotator, project=other, role="annotator")
    make_items(pairs, 2, k=2)
    demo_items(write, 2)
    missing = _watch_404(page)
    problems: list[str] = []
    page.goto(f"{live_server.url}/accounts/login/")
    _check(page, f"{live_server.url}/accounts/login/", problems, missing)
    login(page, live_server, annotator)

    _check(page, f"{live_server.url}/", problems, missing)
    _check(page, f"{live_server.url}/annotate/{project.slug}/", problems, missing)  # the gate
    acknowledge(user=annotator, version=version)
    for slug in (project.slug, "pairs", "write"):
        _check(page, f"{live_server.url}/annotate/{slug}/", problems, missing)
    _check(page, f"{live_server.url}/annotate/{project.slug}/feedback", problems, missing)
    _check(page, f"{live_server.url}/console/", problems, missing)  # the styled 403
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    page.locator("#go-back-open").click()  # the workspace with its panels open
    page.locator("#recent-panel li").first.wait_for()
    page.keyboard.press("a")
    found = axe_violations(page)
    if found:
        problems.append(f"workspace with Go back open:\n{describe_violations(found)}")
    Membership.objects.filter(user=annotator, project=pairs).update(paused=True)
    _check(page, f"{live_server.url}/annotate/pairs/", problems, missing)
    draft = draft_create(guideline=guideline, body="# Rules\n\nBe kind.\n\n## New\n\nCite **sources**.")
    version_publish(version=draft_update(version=draft, body=draft.body, changelog="sources",
                                         change="major"), user=None)
    _check(page, f"{live_server.url}/annotate/{project.slug}/", problems, missing)  # gate with diff
    assert page.locator(".diff-added").count() == 1

    assert problems == [], "\n".join(problems)
