"""Side-by-side diff of two guideline versions (difflib rendered as an HTML table).

difflib.HtmlDiff escapes the text it shows, so the table is safe to mark safe."""

from __future__ import annotations

import difflib

from django.utils.safestring import SafeString, mark_safe

from guidelines.models import GuidelineVersion


def versions_diff_html(old: GuidelineVersion | None, new: GuidelineVersion) -> SafeString:
    before = old.body.splitlines() if old else []
    table = difflib.HtmlDiff(wrapcolumn=80).make_table(
        before, new.body.splitlines(),
        fromdesc=f"v{old.number}" if old else "(nothing)", todesc=f"v{new.number}",
        context=True, numlines=3,
    )
    return mark_safe(table)  # noqa: S308 - HtmlDiff escapes every line it renders
