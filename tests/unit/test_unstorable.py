"""unstorable_at: where a text holds what PostgreSQL cannot store (NUL, a lone surrogate),
the same positions on the ASCII fast path (a find) and the regex path."""

from __future__ import annotations

import pytest

from labeling.prompt_metadata import storable, unstorable_at


@pytest.mark.parametrize(("text", "position"), [
    ("plain text", None), ("", None), ("\x00", 0), ("ab\x00c\x00", 2),  # ASCII: a find
    ("é", None), ("é\x00", 1), ("ok \ud800", 3), ("\udfff\x00", 0), ("🙂 fine", None),  # the regex
])
def test_unstorable_positions(text: str, position: int | None) -> None:
    assert unstorable_at(text) == position


@pytest.mark.parametrize(("text", "kept"), [
    ("plain text", "plain text"), ("a\x00b", "a\ufffdb"), ("é\udfff 🙂", "é\ufffd 🙂"),
])
def test_storable_replaces_only_what_cannot_be_stored(text: str, kept: str) -> None:
    assert storable(text) == kept
