"""Erasure: remove a person (users.py) or a prompt (prompts.py) completely, although
rankings, audit rows and snapshot files are otherwise immutable.

What both share: the keyed hash the erasure log holds instead of the erased data, and
the scrubbing of identifiers out of free text and JSON that must stay (audit payloads).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from django.conf import settings


def erasure_key() -> bytes:
    """Secret and stable per deployment (derived from SECRET_KEY, never the key itself):
    without it a hash in the log can't be tested against guessed names."""
    return hmac.new(settings.SECRET_KEY.encode(), b"ordinal-erasure-log", hashlib.sha256).digest()


def erasure_hash(value: str) -> str:
    """HMAC-SHA256 of a normalized value (stripped, lower case): the proof kept in the
    erasure log. Hash a claimed username, e-mail or prompt content hash to check it."""
    return hmac.new(erasure_key(), value.strip().lower().encode(), hashlib.sha256).hexdigest()


def identifier_pattern(values: list[str]) -> re.Pattern[str] | None:
    """Matches any of `values` as a whole token (not "ann1" inside "ann12"), any case."""
    values = sorted({v for v in values if v}, key=len, reverse=True)
    if not values:
        return None
    alternatives = "|".join(re.escape(v) for v in values)
    return re.compile(rf"(?<![\w.@+-])(?:{alternatives})(?![\w@+-]|\.\w)", re.IGNORECASE)


def scrub(value: Any, pattern: re.Pattern[str], replacement: str) -> Any:
    """`value` (a string or JSON) with every match of `pattern` replaced, keys included."""
    if isinstance(value, str):
        return pattern.sub(replacement, value)
    if isinstance(value, list):
        return [scrub(item, pattern, replacement) for item in value]
    if isinstance(value, dict):
        return {scrub(key, pattern, replacement): scrub(item, pattern, replacement)
                for key, item in value.items()}
    return value
