"""Markdown to sanitized HTML for everything people wrote or models generated.

Text is parsed by cmark-gfm (GitHub's CommonMark parser, in C: linear time, tables,
strikethrough, autolinks, a newline is a line break), fenced code in a known language
is highlighted by Pygments into CSS classes, and the result is cleaned by nh3
(ammonia) with a strict allow-list: no scripts, no event handlers, no style or id
attributes, only the highlighter's classes, links limited to http(s)/mailto and opened
with rel=noopener. The output is the only HTML we mark safe.

Every input renders in bounded time (tests/unit/test_security_rendering.py measures it;
Python-Markdown, used before, took 44 s on "[" * 10_000):
- the parser is linear, and raw HTML in the text is not passed on (cmark's safe mode
  shows a marker instead), so the sanitizer only ever sees cmark's own well-formed tags;
- those are cut to MAX_DEPTH levels of nesting, because html5ever (under nh3) is
  quadratic in depth: "> " * 50_000 (nested quotes) took 63 s;
- Pygments is not linear (JavaScript's and Go's lexers are quadratic or worse on crafted
  code), so highlighting has a time budget per document; a block it can't finish in time
  is shown as plain code.

Stored text is rendered once, when it is written (Candidate.text_html,
Prompt.messages_html, GuidelineVersion.body_html); pages show the stored HTML.
"""

from __future__ import annotations

import functools
import html
import re
import time

import cffi
import nh3
from cmarkgfm import _cmark
from cmarkgfm.cmark import Options
from django.utils.safestring import SafeString, mark_safe
from pygments import format as format_tokens
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES

ALLOWED_TAGS = {
    "p", "br", "hr", "pre", "code", "span", "div", "blockquote", "em", "strong", "del", "s",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr",
    "th", "td", "a", "sup", "sub", "kbd",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
}
# Only the highlighter's classes survive: a class from the text could otherwise match a
# selector of the page's own controls (".submit") or borrow their styling.
WRAPPER_CLASS = "highlight"
TOKEN_CLASSES = frozenset(name for name in STANDARD_TYPES.values() if name)
ALLOWED_CLASSES = {"div": {WRAPPER_CLASS}, "span": set(TOKEN_CLASSES)}

OPTIONS = Options.CMARK_OPT_HARDBREAKS  # and not CMARK_OPT_UNSAFE: raw HTML is omitted
EXTENSIONS = [b"table", b"strikethrough", b"autolink"]
RAW_HTML = "<!-- raw HTML omitted -->"  # what cmark writes in its place
RAW_HTML_MARKER = "<code>&lt;…&gt;</code>"  # annotators see that something was left out
MAX_DEPTH = 32
# A tag in cmark's output: text and attribute values are escaped, so every "<" opens a tag.
TAG = re.compile(r"(<[^>]*>)")

# Languages people ask about most; anything else is shown as plain code.
HIGHLIGHT_LANGUAGES = frozenset({
    "python", "py", "javascript", "js", "typescript", "ts", "json", "bash", "sh", "shell",
    "zsh", "sql", "c", "cpp", "c++", "csharp", "cs", "java", "go", "rust", "ruby", "rb",
    "kotlin", "swift", "html", "xml", "css", "yaml", "yml", "toml", "diff", "r", "scala",
})
HIGHLIGHT_SECONDS = 0.1  # lexing time per document: some lexers are super-linear
HIGHLIGHT_MAX_BLOCK_CHARS = 20_000  # bounds the cost of one lexer step on one block
FORMATTER = HtmlFormatter(cssclass=WRAPPER_CLASS, wrapcode=True)
# cmark's rendering of a fenced block. Its code is HTML-escaped, so `[^<]*+` (possessive:
# no backtracking) runs to the block's own end and the whole scan stays linear, raw HTML
# that imitates the opening tag included.
FENCED_CODE = re.compile(r'<pre><code class="language-([^"<>]{1,40})">([^<]*+)</code></pre>')


def render_markdown(text: str) -> SafeString:
    """Sanitized HTML for `text` (markdown). Linear in len(text), plus at most
    HIGHLIGHT_SECONDS of highlighting."""
    parsed = _cmark_html(text)
    budget = [HIGHLIGHT_SECONDS]  # lexing time left for this document
    highlighted = FENCED_CODE.sub(lambda match: _highlight(match, budget), parsed)
    shallow = _cap_depth(highlighted.replace(RAW_HTML, RAW_HTML_MARKER), MAX_DEPTH)
    clean = _cleaner().clean(shallow)
    return mark_safe(clean)  # noqa: S308 - sanitized by nh3 just above


@functools.cache
def _cleaner() -> nh3.Cleaner:
    """The allow-list, built once: `nh3.clean` with these arguments builds it on every call,
    which was 97% of its cost (200 us of a 1,000-character answer's 290; the cleaning
    itself takes 4). Same output (tests/unit/test_security_rendering.py)."""
    return nh3.Cleaner(
        tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
        allowed_classes=ALLOWED_CLASSES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow", strip_comments=True,
    )


def render_messages(messages: list[dict]) -> list[str]:
    """One sanitized HTML string per message of a prompt, in order."""
    return [str(render_markdown(str(message.get("content", "")))) for message in messages]


def _highlight(match: re.Match, budget: list[float]) -> str:
    language, escaped = match.group(1).lower(), match.group(2)
    if (language not in HIGHLIGHT_LANGUAGES or len(escaped) > HIGHLIGHT_MAX_BLOCK_CHARS
            or budget[0] <= 0):
        return match.group(0)
    lexer = _lexer(language)  # outside the clock: the first use imports the lexer's module
    tokens = []
    start = time.monotonic()
    # Lexers yield tokens lazily, so the budget is checked between two lexer steps.
    for token in lexer.get_tokens(html.unescape(escaped)):
        if time.monotonic() - start > budget[0]:
            budget[0] = 0.0
            return match.group(0)
        tokens.append(token)
    budget[0] -= time.monotonic() - start
    return format_tokens(tokens, FORMATTER)


# cmarkgfm's own wrappers never free the parsed document nor the HTML string cmark
# returns (about 60 KB lost per call with tables on: a web worker would grow without
# bound), so we make the same calls and free both. cmark_node_free and the allocator are
# exported by cmarkgfm's extension module but not declared in its FFI: declare them here.
_ABI = cffi.FFI()
_ABI.cdef("""
typedef struct cmark_mem {
    void *(*calloc)(size_t, size_t); void *(*realloc)(void *, size_t); void (*free)(void *);
} cmark_mem;
cmark_mem *cmark_get_default_mem_allocator(void);
void cmark_node_free(void *node);
""")
_FREEING = _ABI.dlopen(_cmark.__file__)


def rendering_ready() -> None:
    """Registers cmark's extensions. Parsing is thread-safe, but their registration on the
    first call is not: call this before rendering on two threads (the import does)."""
    _cmark.lib.cmark_gfm_core_extensions_ensure_registered()


def _cmark_html(text: str) -> str:
    lib, ffi = _cmark.lib, _cmark.ffi
    lib.cmark_gfm_core_extensions_ensure_registered()
    parser = lib.cmark_parser_new(OPTIONS)
    try:
        for name in EXTENSIONS:
            lib.cmark_parser_attach_syntax_extension(parser, lib.cmark_find_syntax_extension(name))
        data = text.encode("utf-8")
        lib.cmark_parser_feed(parser, data, len(data))
        root = lib.cmark_parser_finish(parser)
        try:
            raw = lib.cmark_render_html(root, OPTIONS, lib.cmark_parser_get_syntax_extensions(parser))
            try:
                return ffi.string(raw).decode("utf-8")
            finally:
                _FREEING.cmark_get_default_mem_allocator().free(_pointer(raw))
        finally:
            _FREEING.cmark_node_free(_pointer(root))
    finally:
        lib.cmark_parser_free(parser)


def _pointer(cdata: object) -> object:
    """A pointer of cmarkgfm's FFI as one of ours."""
    return _ABI.cast("void *", int(_cmark.ffi.cast("uintptr_t", cdata)))


def _cap_depth(html_text: str, limit: int) -> str:
    """Drops the tags nested deeper than `limit` (their text stays), in one pass."""
    parts = TAG.split(html_text)  # text, tag, text, tag, ...
    kept: list[bool] = []  # per open tag: kept or dropped
    depth = 0
    for index in range(1, len(parts), 2):
        tag = parts[index]
        if tag[1] == "/":
            keep = kept.pop() if kept else False
            depth -= keep
        elif tag.endswith("/>"):  # cmark writes void tags as <br />, <hr />, <img ... />
            keep = depth < limit
        else:
            keep = depth < limit
            kept.append(keep)
            depth += keep
        if not keep:
            parts[index] = ""
    return "".join(parts)


@functools.cache
def _lexer(language: str) -> Lexer:
    return get_lexer_by_name(language)


_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>", re.DOTALL)


def demote_headings(html: str, by: int = 2) -> SafeString:
    """Stored (sanitized) HTML shown inside a page that has its own h1 and h2s: headings
    `by` levels down (h6 at most), so "# Title" in an answer or a guideline is not a
    second h1. Sanitized headings carry no attributes, so the pattern sees every one."""
    return mark_safe(_HEADING.sub(  # noqa: S308 - the input was sanitized when written
        lambda m: f"<h{min(int(m.group(1)) + by, 6)}>{m.group(2)}</h{min(int(m.group(1)) + by, 6)}>",
        str(html)))
