"""The axes migration (labeling 0010) keeps every existing ranking as the default axis:
a project and its rankings written before it read, after it, as the one implicit axis
"overall" with the same tiers, agreement and consensus."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from labeling.axes import DEFAULT_KEY, axes_from_config, label_tiers

BEFORE = [("labeling", "0009_import_dry_run_invite_revoke")]
AFTER = [("labeling", "0010_axes")]


@pytest.mark.django_db(transaction=True)
def test_rankings_from_before_axes_are_the_default_axis() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    User = old.get_model("auth", "User")  # noqa: N806 - a historical model class
    Project, Prompt, Candidate, Item, Assignment, Ranking = (  # noqa: N806
        old.get_model("labeling", name)
        for name in ("Project", "Prompt", "Candidate", "Item", "Assignment", "Ranking"))
    user = User.objects.create(username="before-axes")
    project = Project.objects.create(name="Old", slug="old")
    prompt = Prompt.objects.create(project=project, messages=[{"role": "user", "content": "q"}],
                                   content_hash="h")
    a, b = (Candidate.objects.create(prompt=prompt, text=t, origin="model", dedupe_key=t) for t in "ab")
    item = Item.objects.create(project=project, prompt=prompt, required_rankings=1, status="accepted",
                               agreement=1.0, consensus=[[b.pk], [a.pk]])
    now = timezone.now()
    assignment = Assignment.objects.create(item=item, annotator=user, leased_at=now, expires_at=now,
                                           display_order=[a.pk, b.pk], status="submitted")
    Ranking.objects.create(assignment=assignment, item=item, annotator=user, tiers=[[b.pk], [a.pk]],
                           idempotency_key="k")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    project = new.get_model("labeling", "Project").objects.get(slug="old")
    ranking = new.get_model("labeling", "Ranking").objects.get()
    item = new.get_model("labeling", "Item").objects.get()

    axes = axes_from_config(project.axes)
    assert [axis.key for axis in axes] == [DEFAULT_KEY]
    assert ranking.labels == {} and ranking.safety is None
    assert label_tiers(ranking.labels, ranking.tiers, DEFAULT_KEY, axes[0].key) == [[b.pk], [a.pk]]
    assert (item.status, item.agreement, item.consensus, item.axes) == ("accepted", 1.0, [[b.pk], [a.pk]], {})
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # leave the database as the suite expects
