"""The re-acknowledge page's rendered diff is rendered once per pair of texts: every
annotator who opens it after a major version gets the cached HTML, and a text that
changes (a draft) gets a fresh diff."""

from __future__ import annotations

from unittest import mock

from django.core.cache import cache

from guidelines import diff
from guidelines.models import GuidelineVersion


def test_diff_is_rendered_once_per_pair_of_texts() -> None:
    cache.clear()
    old = GuidelineVersion(number=1, body="# Rules\n\nBe kind.")
    new = GuidelineVersion(number=2, body="# Rules\n\nBe kind.\n\nCite sources.")
    with mock.patch.object(diff, "render_markdown", wraps=diff.render_markdown) as render:
        first = diff.versions_diff_html(old, new)
        calls = render.call_count
        second = diff.versions_diff_html(old, new)
        assert calls > 0 and render.call_count == calls  # the second view ran no markdown
        assert first == second and "Cite sources." in second
        new.body += "\n\nNo guessing."
        third = diff.versions_diff_html(old, new)
        assert render.call_count > calls and "No guessing." in third
