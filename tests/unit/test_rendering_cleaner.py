"""The sanitizer's allow-list is built once (core.rendering._cleaner, an nh3.Cleaner) and
cleans exactly as nh3.clean with the same arguments did, on hostile and ordinary HTML."""

from __future__ import annotations

import nh3
import pytest

from core import rendering

SAMPLES = [
    "<p>plain <em>text</em> and <strong>bold</strong><br />next line</p>",
    '<p><a href="javascript:alert(1)">x</a> <a href="https://example.org" title="t">ok</a></p>',
    '<img src=x onerror="alert(1)"><script>alert(1)</script><style>p{}</style>',
    '<div class="highlight submit"><pre><span class="k">def</span> <span class="evil">f</span></pre></div>',
    '<table><thead><tr><th align="left" style="x">h</th></tr></thead><tbody><tr><td align="right">1</td>'
    "</tr></tbody></table>",
    "<!-- comment --><ol start=\"3\"><li>three</li></ol><iframe srcdoc=\"<b>\"></iframe>",
    '<p id="x" onclick="y">&lt;b&gt; &amp; "quotes" \u00e9 \U0001f642</p>',
]


@pytest.mark.parametrize("html", SAMPLES)
def test_the_cleaner_built_once_cleans_as_nh3_clean_with_the_arguments(html: str) -> None:
    expected = nh3.clean(
        html, tags=rendering.ALLOWED_TAGS, attributes=rendering.ALLOWED_ATTRIBUTES,
        allowed_classes=rendering.ALLOWED_CLASSES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow", strip_comments=True,
    )

    assert rendering._cleaner().clean(html) == expected
    assert rendering._cleaner() is rendering._cleaner()  # built once


def test_render_markdown_still_refuses_script_and_javascript_links() -> None:
    html = str(rendering.render_markdown('[x](javascript:alert(1)) <script>alert(1)</script> **ok**'))

    assert "javascript:" not in html and "<script" not in html and "<strong>ok</strong>" in html
