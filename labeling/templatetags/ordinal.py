from django import template
from django.utils.safestring import SafeString

from labeling.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    """{{ text|markdown }}: sanitized HTML (see labeling.rendering)."""
    return render_markdown(text or "")


@register.filter
def letter(index: int) -> str:
    """0 -> A, 1 -> B ...: how candidates are labelled on screen."""
    return chr(ord("A") + int(index))
