"""Defects from the annotator/reviewer walkthrough (issue 17), at the view and service
level; the browser behaviours are in tests/browser/test_ux_walkthrough.py."""

from __future__ import annotations

from django.test import Client

from guidelines.models import Guideline
from guidelines.services import acknowledge
from labeling.models import Assignment, AuditEvent, Item, Ranking
from labeling.services.assignment import next_item
from labeling.services.members import membership_pause
from tests.factories import make_items
from tests.unit.test_guidelines import publish, rank


def _client(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_a_paused_annotator_gets_a_page_that_says_why_not_a_500(project, annotator,  # noqa: ANN001
                                                                 project_admin) -> None:
    make_items(project, 2)
    client = _client(annotator)
    assert client.get(f"/annotate/{project.slug}/").status_code == 200
    membership_pause(project=project, user=annotator, paused=True, actor=project_admin)

    page = client.get(f"/annotate/{project.slug}/")
    prefetch = client.get(f"/annotate/{project.slug}/prefetch")

    assert page.status_code == 409
    assert "is paused" in page.content.decode() and 'class="answer card"' not in page.content.decode()
    assert prefetch.status_code == 409 and prefetch.content == b""


def test_the_item_on_screen_is_refused_after_a_pause(as_user, project, annotator,  # noqa: ANN001
                                                     project_admin) -> None:
    make_items(project, 1, k=2)
    client = as_user(annotator)
    shown = client.get(f"/api/projects/{project.pk}/next").json()
    membership_pause(project=project, user=annotator, paused=True, actor=project_admin)

    ranking = client.post(f"/api/assignments/{shown['id']}/ranking",
                          {"tiers": [[c["id"]] for c in shown["candidates"]]}, format="json",
                          HTTP_IDEMPOTENCY_KEY="k1")
    skip = client.post(f"/api/assignments/{shown['id']}/skip", {"reason": "x"}, format="json")

    assert ranking.status_code == 409 and ranking.json()["code"] == "paused"
    assert skip.status_code == 409 and skip.json()["code"] == "paused"
    assert not Ranking.objects.exists()
    assert Assignment.objects.get(pk=shown["id"]).status == Assignment.Status.EXPIRED


def test_an_annotator_at_the_console_gets_a_styled_403_with_a_way_back(annotator) -> None:  # noqa: ANN001
    response = _client(annotator).get("/console/")

    html = response.content.decode()
    assert response.status_code == 403
    assert "The console is for reviewers and admins." in html
    assert 'href="/">Back to your projects' in html and "ordinal.css" in html


def test_a_reviewer_sees_disabled_admin_controls_with_the_reason(project, reviewer, annotator) -> None:  # noqa: ANN001
    client = _client(reviewer)

    people = client.get(f"/console/projects/{project.pk}/annotators").content.decode()
    person = client.get(f"/console/projects/{project.pk}/annotators/{annotator.pk}").content.decode()

    assert 'disabled aria-describedby="invite-why">Create a one-time invite link' in people
    assert "Only admins of this project can invite people" in people
    assert 'disabled aria-describedby="actions-why">Pause' in person
    assert "Only admins of this project can pause" in person


def test_every_page_links_a_favicon_that_exists(client, annotator) -> None:  # noqa: ANN001
    client.force_login(annotator)

    html = client.get("/").content.decode()
    redirect = client.get("/favicon.ico")

    assert 'rel="icon" href="/static/favicon.svg"' in html
    assert redirect.status_code == 302 and redirect["Location"] == "/static/favicon.svg"
    from django.contrib.staticfiles import finders

    assert finders.find("favicon.svg")


def test_stale_labels_tick_nothing_and_reopen_only_after_confirming_the_count(
        project, project_admin, annotator) -> None:  # noqa: ANN001
    guideline = Guideline.objects.create(slug="g-stale", title="G", project=project)
    publish(guideline, "# One")
    project.guideline = guideline
    project.overlap = 1
    project.save()
    make_items(project, 2)
    acknowledge(user=annotator, version=guideline.versions.get(number=1))
    for key in ("k1", "k2"):
        rank(annotator, next_item(annotator=annotator, project=project), key)
    publish(guideline, "# One\n\nMajor rewrite.")
    client = _client(project_admin)
    url = f"/console/projects/{project.pk}/stale"
    page = client.get(url).content.decode()
    ids = list(Item.objects.values_list("pk", flat=True))

    asked = client.post(url, {"item": ids, "reason": "rule two changed"})
    assert client.post(url, {"item": []}).status_code == 302  # none ticked: nothing to do

    assert page.count('type="checkbox"') == 2 and " checked" not in page
    assert f'href="/console/projects/{project.pk}/disputes"' in page  # the project sidebar
    assert asked.status_code == 200 and "Re-open 2 items?" in asked.content.decode()
    assert not Item.objects.filter(required_rankings=2).exists()  # not yet

    done = client.post(url, {"item": ids, "reason": "rule two changed", "confirm": "yes"})

    assert done.status_code == 302 and Item.objects.filter(required_rankings=2).count() == 2
    event = AuditEvent.objects.get(action="item.reopen")
    assert event.note == "rule two changed" and event.actor == project_admin


def test_the_audit_page_of_a_project_keeps_its_sidebar(project, reviewer) -> None:  # noqa: ANN001
    html = _client(reviewer).get(f"/console/audit?project={project.pk}").content.decode()

    assert f'href="/console/projects/{project.pk}/disputes"' in html


def test_the_guideline_list_counts_each_version_once(project, other_project, reviewer) -> None:  # noqa: ANN001
    from labeling.models import Membership

    guideline = Guideline.objects.create(slug="shared-g", title="Shared")
    publish(guideline, "# One")
    for bound in (project, other_project):
        bound.guideline = guideline
        bound.save()
    Membership.objects.create(user=reviewer, project=other_project, role="reviewer")

    html = _client(reviewer).get("/console/guidelines/").content.decode()

    row = html[html.index("Shared</a>"):]
    assert "<td>1</td>" in row[:row.index("</tr>")]


def test_the_annotators_table_counts_rankings_before_any_decision(project, reviewer, annotator) -> None:  # noqa: ANN001
    make_items(project, 2)
    rank(annotator, next_item(annotator=annotator, project=project), "k1")

    html = _client(reviewer).get(f"/console/projects/{project.pk}/annotators").content.decode()

    row = html[html.index(f">{annotator.username}</a>"):]
    assert "<td>1</td>" in row[:row.index("</tr>")]
    assert "<option selected>all</option>" in html  # the Period menu is not empty


def test_a_demonstrations_project_says_so_on_home_and_shows_its_keys(project, annotator) -> None:  # noqa: ANN001
    from tests.browser.test_demonstrations import demo_items

    project.demonstrations = "only"
    project.save()
    demo_items(project, 1)
    client = _client(annotator)

    home = client.get("/").content.decode()
    workspace = client.get(f"/annotate/{project.slug}/").content.decode()

    assert "<td>writing answers</td>" in home and "<td>ranking</td>" not in home
    keys = workspace[workspace.index('id="keys"'):workspace.index('id="guideline-panel"')]
    assert "submit (in the editor)" in keys and "pick answers" not in keys


def test_the_schedule_page_shows_the_last_logged_tick(project, reviewer, project_admin) -> None:  # noqa: ANN001
    from training.schedules import schedule_save, schedule_tick

    schedule = schedule_save(project=project, enabled=False, min_new_comparisons=10,
                             interval_minutes=60, then_dpo=False, actor=project_admin)
    schedule_tick(schedule.pk)  # logs "skip: the schedule is disabled"

    html = _client(reviewer).get(f"/console/projects/{project.pk}/schedule").content.decode()

    assert "last tick" in html and "UTC (skip)" in html and "never" not in html


def test_reviewers_see_pairwise_strength_and_tie_apart_from_both_bad(project, reviewer) -> None:  # noqa: ANN001
    from labeling.blind import tiers_as_shown
    from labeling.models import Membership, Project
    from labeling.services.rankings import RankingInput, ranking_submit
    from tests.factories import UserFactory

    project.mode = Project.Mode.PAIRWISE
    project.overlap = 3
    project.agreement_threshold = 1.0
    project.save()
    item = make_items(project, 1, k=2)[0]
    choices = [dict(strength=4), dict(tie=True), dict(tie=True, all_bad=True)]
    for n, choice in enumerate(choices):
        user = UserFactory(username=f"pair{n}")
        Membership.objects.create(user=user, project=project, role="annotator")
        assignment = next_item(annotator=user, project=project)
        ids = sorted(assignment.display_order)
        tiers = [ids] if choice.get("tie") else [[ids[1]], [ids[0]]]
        ranking_submit(annotator=user, assignment_id=assignment.pk, idempotency_key=f"p{n}",
                       data=RankingInput(tiers=tiers_as_shown(assignment, tiers),
                                         strength=choice.get("strength"),
                                         all_bad=choice.get("all_bad", False)))

    html = _client(reviewer).get(f"/console/items/{item.pk}").content.decode()

    assert "much better (4 of 4)" in html
    assert "Tie: equally good" in html and "Both bad" in html
