import re
from html import unescape

from django import template
from django.utils.safestring import mark_safe

from core.rendering import demote_headings

register = template.Library()

# No markdown filter on purpose: stored text is rendered once when it is written
# (core.rendering) and templates show the stored HTML (`.html` on Candidate,
# Prompt.turns, GuidelineVersion).


@register.filter
def letter(index: int) -> str:
    """0 -> A, 1 -> B ...: how candidates are labelled on screen."""
    return chr(ord("A") + int(index))


@register.filter
def task_name(project) -> str:  # noqa: ANN001 - a Project
    """What annotators do in a project, as the home page and the workspace say it: a
    project that asks only for written answers is not a "ranking" project."""
    if project.demonstrations == "only":
        return "writing answers"
    kind = "pairwise" if project.mode == "pairwise" else "ranking"
    return f"{kind}, then writing answers" if project.demonstrations == "after" else kind


_HEADING = re.compile(r"<h([1-6])>(.*?)</h\1>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


@register.simple_tag
def guideline_sections(html: str | None) -> dict:
    """A guideline's stored HTML for the workspace drawer: headings moved two levels down
    (the page has its h1 and the drawer's h2s) and given ids, and the list of its top
    sections to jump to. The HTML was sanitized when written: headings carry no
    attributes, so the pattern sees every one."""
    if not html:
        return {"html": "", "toc": []}
    toc: list[tuple[str, str]] = []

    def shift(match: re.Match) -> str:
        level = int(match.group(1))
        anchor = f"guideline-section-{len(toc) + 1}"
        if level <= 2 and len(toc) < 40:
            toc.append((anchor, unescape(_TAG.sub("", match.group(2))).strip()[:80]))
            return f'<h{min(level + 2, 6)} id="{anchor}">{match.group(2)}</h{min(level + 2, 6)}>'
        return f"<h{min(level + 2, 6)}>{match.group(2)}</h{min(level + 2, 6)}>"

    return {"html": mark_safe(_HEADING.sub(shift, str(html))), "toc": toc}  # noqa: S308 - sanitized when written


@register.filter
def demote(html: str | None) -> str:
    """Answer, prompt and guideline HTML inside a page: headings two levels down."""
    return demote_headings(html) if html else ""
