"""Items: made from a prompt's candidate sets (import, generation, demonstrations), and
re-opened for more rankings."""

from __future__ import annotations

import itertools
import random

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F

from core.audit import audit
from core.errors import DomainError
from core.lookups import int_array
from labeling.models import Item, ItemCandidate, Project


def items_create_for_prompt(*, project: Project, prompt_id: int, candidate_ids: list[int]) -> int:
    """Make the items annotators rank from a new set of candidates of one prompt."""
    return items_create_bulk(project=project, candidate_sets=[(prompt_id, candidate_ids)])


def items_create_bulk(*, project: Project, candidate_sets: list[tuple[int, list[int]]]) -> int:
    """Items for many prompts in two INSERTs (the import's and generation's path).

    Ranking mode: one item per (prompt, candidate set). Pairwise mode: one item per pair,
    all C(K,2) pairs or a random subset of `generation_settings["pairs_per_prompt"]`.
    An item's candidate set is fixed here and never changes. Returns items created.
    """
    groups: list[tuple[int, list[int]]] = []
    limit = project.generation_settings.get("pairs_per_prompt")
    for prompt_id, candidate_ids in candidate_sets:
        if len(candidate_ids) < 2:
            continue
        if project.mode != Project.Mode.PAIRWISE:
            groups.append((prompt_id, list(candidate_ids)))
            continue
        pairs = [list(pair) for pair in itertools.combinations(candidate_ids, 2)]
        if isinstance(limit, int) and 0 < limit < len(pairs):
            pairs = random.Random(prompt_id).sample(pairs, limit)  # noqa: S311
        groups.extend((prompt_id, pair) for pair in pairs)
    if not groups:
        return 0
    # Adaptive overlap starts at two rankings and escalates only on disagreement.
    required = min(2, project.overlap) if project.adaptive_overlap else project.overlap
    if connection.vendor == "postgresql":
        return _items_insert(project, groups, required)
    items = Item.objects.bulk_create(
        [Item(project=project, prompt_id=prompt_id, required_rankings=required)
         for prompt_id, _ in groups]
    )
    ItemCandidate.objects.bulk_create(
        [
            ItemCandidate(item_id=item.pk, candidate_id=candidate_id, position=position)
            for item, (_, group) in zip(items, groups, strict=True)
            for position, candidate_id in enumerate(group)
        ]
    )
    return len(items)


def _items_insert(project: Project, groups: list[tuple[int, list[int]]], required: int) -> int:
    """PostgreSQL: the items in one INSERT ... SELECT over an array of prompt ids and their
    candidates in one more, with every other column as a new Item has it (its defaults,
    read from the model, so a field added later is filled too), without a model instance
    per row: Django's bulk_create was a third of an import's Python time."""
    template = Item(project=project, prompt_id=0, required_rankings=required)
    fields = [f for f in Item._meta.concrete_fields if not f.primary_key and f.attname != "prompt_id"]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    values = [f.get_db_prep_save(f.pre_save(template, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO labeling_item ({columns}, prompt_id) "  # noqa: S608 - column names from the model
            f"SELECT {', '.join(['%s'] * len(fields))}, prompt FROM unnest(%s::bigint[]) "
            "WITH ORDINALITY AS rows (prompt, n) ORDER BY n RETURNING id",
            [*values, int_array(prompt_id for prompt_id, _ in groups)],
        )
        # Ids come from the sequence in insertion order (the ORDER BY): sorted, they
        # follow the groups even if a concurrent insert interleaved.
        ids = sorted(item_id for (item_id,) in cursor.fetchall())
        links = [(item_id, candidate_id, position) for item_id, (_, group) in zip(ids, groups, strict=True)
                 for position, candidate_id in enumerate(group)]
        cursor.execute(
            "INSERT INTO labeling_itemcandidate (item_id, candidate_id, position) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::smallint[])",
            [int_array(link[0] for link in links), int_array(link[1] for link in links),
             int_array(link[2] for link in links)],
        )
    return len(ids)


@transaction.atomic
def items_reopen(*, project: Project, item_ids: list[int], reason: str, actor: AbstractBaseUser | None = None,
                 extra: int | None = None) -> int:
    """Ask for more rankings on these items: raise `required_rankings` (by `extra`, or by
    the project's overlap) and put them back in the pool. Audited with the reason."""
    if not reason.strip():
        raise DomainError("say why these items are re-opened")
    ids = list(Item.objects.select_for_update().filter(project=project, pk__in=item_ids)
               .exclude(status=Item.Status.DISCARDED).order_by("id").values_list("id", flat=True))
    if ids:
        Item.objects.filter(pk__in=ids).update(
            required_rankings=F("required_rankings") + (extra or project.overlap), status=Item.Status.OPEN)
        audit(actor=actor, project=project, action="item.reopen", target=project,
              after={"items": ids[:1000], "count": len(ids), "extra": extra or project.overlap}, note=reason)
    return len(ids)
