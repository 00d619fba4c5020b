"""What changed between two guideline versions, rendered: the markdown is cut into blocks
(a heading, a paragraph, a list, a code fence), the blocks are compared, and each one is
shown as the reader sees it (sanitized HTML), the added and removed ones marked in words
and colour and the unchanged ones folded away. It reads on a phone: no side-by-side
table of markdown source."""

from __future__ import annotations

import difflib
import hashlib
import re

from django.core.cache import cache
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe

from core.rendering import demote_headings, render_markdown
from guidelines.models import GuidelineVersion

_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_blocks(body: str) -> list[str]:
    """Blank-line separated blocks, a code fence kept whole and a heading its own block."""
    blocks: list[str] = []
    current: list[str] = []
    fenced = False
    for line in body.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        if not fenced and (not line.strip() or line.lstrip().startswith("#")):
            if current:
                blocks.append("\n".join(current))
                current = []
            if line.strip():
                blocks.append(line)
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


def _html(blocks: list[str]) -> str:
    return demote_headings(render_markdown("\n\n".join(blocks)))  # inside a page with its h1


DIFF_CACHE_SECONDS = 7 * 24 * 3600


def versions_diff_html(old: GuidelineVersion | None, new: GuidelineVersion) -> SafeString:
    """The rendered diff of `old` (None: nothing before) to `new` as safe HTML: every part
    is render_markdown's sanitized output inside our own markup.

    Every annotator who must re-acknowledge a major version opens this page, so the diff
    is rendered once per pair of texts and cached under a hash of both bodies (a draft
    that changes gets a new key) and of the labels the template shows."""
    digest = hashlib.sha256("\0".join((
        old.body if old else "", new.body, str(getattr(old, "number", "")), str(new.number),
    )).encode()).hexdigest()
    html = cache.get_or_set(f"guideline-diff:v1:{digest}", lambda: str(_render_diff(old, new)),
                            DIFF_CACHE_SECONDS)
    return mark_safe(html)  # noqa: S308 - rendered by _render_diff from sanitized parts


def _render_diff(old: GuidelineVersion | None, new: GuidelineVersion) -> SafeString:
    before = markdown_blocks(old.body) if old else []
    after = markdown_blocks(new.body)
    parts = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append({"kind": "same", "count": a2 - a1, "html": _html(before[a1:a2])})
            continue
        if a2 > a1:
            parts.append({"kind": "removed", "html": _html(before[a1:a2])})
        if b2 > b1:
            parts.append({"kind": "added", "html": _html(after[b1:b2])})
    return render_to_string("guidelines/_diff.html", {
        "parts": parts, "old": old, "new": new,
        "changed": sum(part["kind"] != "same" for part in parts)})
