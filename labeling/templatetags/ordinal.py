from django import template

register = template.Library()

# No markdown filter on purpose: stored text is rendered once when it is written
# (core.rendering) and templates show the stored HTML (`.html` on Candidate,
# Prompt.turns, GuidelineVersion).


@register.filter
def letter(index: int) -> str:
    """0 -> A, 1 -> B ...: how candidates are labelled on screen."""
    return chr(ord("A") + int(index))
