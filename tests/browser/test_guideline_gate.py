"""A major guideline version forces re-acknowledgement in the browser."""

from __future__ import annotations

import pytest

from guidelines.models import Guideline
from guidelines.services import acknowledge, draft_create, draft_update, version_publish
from tests.browser.test_annotate import login
from tests.factories import make_items

pytestmark = pytest.mark.django_db(transaction=True)


def test_major_version_sends_the_annotator_to_the_diff(page, live_server, project, annotator) -> None:  # noqa: ANN001, E501
    guideline = Guideline.objects.create(slug="g", title="G", project=project)
    v1 = version_publish(version=draft_create(guideline=guideline, body="Rule one."), user=None)
    project.guideline = guideline
    project.save()
    make_items(project, 2)
    acknowledge(user=annotator, version=v1)
    login(page, live_server, annotator)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")
    assert page.locator("#item-slot .answer").count() == 3
    # Let the page's prefetch request finish: the in-memory SQLite test database is
    # shared with the live server thread and locks under concurrent writes.
    page.wait_for_load_state("networkidle")

    draft = draft_update(version=draft_create(guideline=guideline), body="Rule one.\n\nRule two.",
                         changelog="adds rule two", change="major")
    version_publish(version=draft, user=None)
    page.goto(f"{live_server.url}/annotate/{project.slug}/")

    assert page.url.endswith("/guideline")
    assert "Rule two." in page.locator("div.diff").inner_text().replace("\xa0", " ")
    page.click("#acknowledge")
    page.wait_for_url(f"{live_server.url}/annotate/{project.slug}/")
    assert page.locator("#item-slot .answer").count() == 3
