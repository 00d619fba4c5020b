"""Model instances from the columns of a hand-written PostgreSQL statement.

The annotators' hot path (labeling.services.assignment and .submission,
core.access.project_for) reads its rows with one statement per step instead of the
ORM's queries, whose SQL compilation was most of the path's CPU (#19). The column
lists come from the models, so a field added later is read too, and every value goes
through its field's converters (JSON columns arrive as text) as the ORM's own rows do.
PostgreSQL only: other backends' converters expect the ORM's expressions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)


@cache
def select_list(model: type[Model], alias: str) -> str:
    """The model's concrete columns, qualified by `alias`, in `instance`'s order, each
    named `<alias>_<n>` (so several models' columns can share one subquery)."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(field.column)} AS {alias}_{n}"
                     for n, field in enumerate(model._meta.concrete_fields))


@cache
def width(model: type[Model]) -> int:
    return len(model._meta.concrete_fields)


def instance(model: type[M], values: Sequence[Any]) -> M:
    """A model instance from its `select_list` values, as if the ORM had read it."""
    converted = []
    for (field, converters), value in zip(_converters(model), values, strict=True):
        for convert in converters:
            value = convert(value, field, connection)
        converted.append(value)
    return model.from_db(connection.alias, None, converted)


@cache
def _converters(model: type[Model]) -> list[tuple[Any, list[Callable]]]:
    return [(field, connection.ops.get_db_converters(field) + field.get_db_converters(connection))
            for field in model._meta.concrete_fields]
