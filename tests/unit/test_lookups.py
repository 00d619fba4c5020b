"""`ids_in` picks the rows an IN list picks, on SQLite (the IN list) and on PostgreSQL
(one array parameter)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.lookups import ids_in
from labeling.models import Item, ItemCandidate, Project
from tests.factories import make_items


@pytest.mark.django_db
def test_ids_in_picks_the_rows_of_an_in_list() -> None:
    project = Project.objects.create(name="Lookups", slug="lookups")
    items = make_items(project, 5, k=2)
    wanted = [items[0].pk, items[3].pk, items[4].pk, 10**9]  # one id that matches nothing

    with CaptureQueriesContext(connection) as queries:
        picked = list(Item.objects.filter(ids_in("id", wanted)).order_by("id").values_list("id", flat=True))
        answers = sorted(ItemCandidate.objects.filter(ids_in("item_id", wanted)).values_list("pk", flat=True))

    assert picked == [items[0].pk, items[3].pk, items[4].pk]
    assert answers == sorted(ItemCandidate.objects.filter(item_id__in=wanted).values_list("pk", flat=True))
    assert len(answers) == 6
    if connection.vendor == "postgresql":
        assert all("= ANY(" in query["sql"] for query in queries.captured_queries)


@pytest.mark.django_db
def test_ids_in_with_no_ids_picks_nothing() -> None:
    project = Project.objects.create(name="Lookups", slug="lookups")
    make_items(project, 2, k=2)

    assert not Item.objects.filter(ids_in("id", [])).exists()
