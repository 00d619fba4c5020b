"""What prompt metadata may hold, and which texts the database can store.

Metadata is whatever an import attached to a prompt (its extra columns and its "metadata"
object). Reviewers and admins read it in prompt lists, so it is bounded: at most
IMPORT_MAX_METADATA_BYTES as compact JSON, IMPORT_MAX_METADATA_KEYS keys in all its
objects together, IMPORT_MAX_METADATA_DEPTH levels of nesting; and it must be JSON that
PostgreSQL's jsonb accepts (no NaN or Infinity, no NUL character, no unpaired surrogate).
Every path that stores metadata checks it here: the import (an invalid row) and the model
field's validator (forms, the admin). No model imports: models.py imports this module.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

# PostgreSQL stores neither NUL (text or jsonb) nor an unpaired surrogate (not UTF-8).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_at(text: str) -> int | None:
    """Where `text` holds a character the database cannot store, or None."""
    if text.isascii():  # known without a scan; only NUL can be there (a memchr, not a regex)
        position = text.find("\x00")
        return None if position < 0 else position
    found = UNSTORABLE.search(text)
    return None if found is None else found.start()


def storable(text: str) -> str:
    """`text` with each character the database cannot store replaced by U+FFFD: for what
    a model wrote (a sampled answer, a judge's rationale), which is kept, not refused as
    an import row is. A tiny or broken model can emit a NUL byte."""
    return text if unstorable_at(text) is None else UNSTORABLE.sub("\ufffd", text)


def metadata_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as a prompt's metadata, or None when it can."""
    if not isinstance(value, dict):
        return "metadata must be an object"
    if not value:
        return None
    max_keys = settings.IMPORT_MAX_METADATA_KEYS
    if len(value) > max_keys:  # the cheap check first: a 10^6-column row stops here
        return f"metadata has {len(value)} keys; the limit is {max_keys}"
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return "metadata holds NaN or Infinity, which JSON cannot store"
    except TypeError as exc:  # e.g. "Object of type bytes is not JSON serializable"
        return f"metadata holds a value JSON cannot store ({exc})"
    except RecursionError:
        return "metadata is nested too deeply"
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > settings.IMPORT_MAX_METADATA_BYTES:
        return f"metadata is {size} bytes as JSON; the limit is {settings.IMPORT_MAX_METADATA_BYTES}"
    return _shape_problem(value, max_keys=max_keys, max_depth=settings.IMPORT_MAX_METADATA_DEPTH)


def _shape_problem(value: dict, *, max_keys: int, max_depth: int) -> str | None:
    """Keys, depth and strings; iterative, and only run on metadata already within the
    size limit, so its work is bounded too."""
    keys = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth and isinstance(node, dict | list | tuple):  # {"a": 1}: one level
            return f"metadata is nested more than {max_depth} levels deep"
        if isinstance(node, dict):
            keys += len(node)
            if keys > max_keys:
                return f"metadata has more than {max_keys} keys in all; the limit is {max_keys}"
            strings = [key for key in node if isinstance(key, str)]
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list | tuple):
            strings = []
            stack.extend((item, depth + 1) for item in node)
        else:
            strings = [node] if isinstance(node, str) else []
        if any(unstorable_at(text) is not None for text in strings):
            return "metadata holds a NUL character or an unpaired surrogate, which cannot be stored"
    return None


def validate_prompt_metadata(value: Any) -> None:
    """Model field validator: the same limits as the import, for forms and the admin."""
    problem = metadata_problem(value)
    if problem:
        raise ValidationError(problem)
