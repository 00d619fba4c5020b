"""Markdown to sanitized HTML for everything people wrote or models generated.

Text is rendered with Python-Markdown (fenced code highlighted by Pygments into CSS
classes) and then cleaned by nh3 (ammonia) with a strict allow-list: no scripts, no
event handlers, no style attributes, links limited to http(s)/mailto and opened with
rel=noopener. The output is the only HTML we mark safe.
"""

from __future__ import annotations

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

ALLOWED_TAGS = {
    "p", "br", "hr", "pre", "code", "span", "div", "blockquote", "em", "strong", "del", "s",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr",
    "th", "td", "a", "sup", "sub", "kbd",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "span": {"class"},
    "div": {"class"},
    "code": {"class"},
    "pre": {"class"},
    "th": {"align"},
    "td": {"align"},
}
EXTENSIONS = ["fenced_code", "codehilite", "tables", "sane_lists", "nl2br"]
EXTENSION_CONFIGS = {"codehilite": {"guess_lang": False, "css_class": "highlight"}}


def render_markdown(text: str) -> SafeString:
    html = markdown.markdown(
        text, extensions=EXTENSIONS, extension_configs=EXTENSION_CONFIGS, output_format="html"
    )
    clean = nh3.clean(
        html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return mark_safe(clean)  # noqa: S308 - sanitized by nh3 just above
