"""axe-core over every annotator and console page (issue 17): no serious or critical
violation, one h1 per page, no request answered 404 (the favicon was)."""

from __future__ import annotations

import pytest

from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, version_publish
from labeling.models import Membership, Project
from tests.browser.conftest import axe_violations, describe_violations
from tests.browser.test_annotate import login
from tests.factories import make_items
from tests.unit.test_console_review import console_urls, disputed_item, ids  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def _check(page, url: str, problems: list[str], missing: list[str]) -> None:  # noqa: ANN001
    missing.clear()
    response = page.goto(url)
    page.wait_for_load_state("networkidle")
    if response.status == 405:
        return
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


def test_every_console_page_is_clean(page, live_server, project, project_admin, ids) -> None:  # noqa: ANN001, F811
    project_admin.is_staff = True
    project_admin.save()
    missing = _watch_404(page)
    login(page, live_server, project_admin)
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
    make_items(write, 2, k=1) if False else None
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
    Membership.objects.filter(user=annotator, project=pairs).update(paused=True)
    _check(page, f"{live_server.url}/annotate/pairs/", problems, missing)

    assert problems == [], "\n".join(problems)
