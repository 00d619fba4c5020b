"""Small server-side SVG charts for the console (no JavaScript, nothing from a CDN).

Only numbers and escaped labels go into the markup, so the result is safe to inline."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, PAD = 640, 200, 32


def _x(index: int, count: int) -> float:
    return PAD + (WIDTH - 2 * PAD) * (index / max(1, count - 1))


def _y(value: float, low: float, high: float) -> float:
    span = (high - low) or 1.0
    return HEIGHT - PAD - (HEIGHT - 2 * PAD) * ((value - low) / span)


def _frame(title: str, body: str, labels: Sequence[str], low: float, high: float) -> SafeString:
    ticks = "".join(
        f'<text x="{_x(i, len(labels)):.1f}" y="{HEIGHT - 8}" class="tick" '
        f'text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(labels) if len(labels) <= 12 or i % (len(labels) // 8 + 1) == 0
    )
    axis = (f'<text x="4" y="{_y(high, low, high) + 4:.1f}" class="tick">{high:g}</text>'
            f'<text x="4" y="{_y(low, low, high) + 4:.1f}" class="tick">{low:g}</text>'
            f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
            'class="axis"/>')
    return mark_safe(  # noqa: S308 - numbers and escaped text only
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{axis}{body}{ticks}</svg>'
    )


def line_chart(title: str, labels: Sequence[str], values: Sequence[float],
               band: Sequence[tuple[float, float]] | None = None, *, low: float = 0.0,
               high: float = 1.0, reference: float | None = None) -> SafeString:
    """A line with an optional confidence band and a dashed reference level."""
    count = len(values)
    if not count:
        return mark_safe('<p class="muted">No data yet.</p>')
    body = ""
    if band:
        upper = [f"{_x(i, count):.1f},{_y(h, low, high):.1f}" for i, (_, h) in enumerate(band)]
        lower = [f"{_x(i, count):.1f},{_y(lo, low, high):.1f}" for i, (lo, _) in enumerate(band)]
        body += f'<polygon class="band" points="{" ".join(upper + lower[::-1])}"/>'
    if reference is not None:
        y = _y(reference, low, high)
        body += f'<line class="reference" x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}"/>'
    points = " ".join(f"{_x(i, count):.1f},{_y(v, low, high):.1f}" for i, v in enumerate(values))
    body += f'<polyline class="line" points="{points}"/>'
    body += "".join(f'<circle cx="{_x(i, count):.1f}" cy="{_y(v, low, high):.1f}" r="3">'
                    f"<title>{escape(labels[i])}: {v:.3f}</title></circle>"
                    for i, v in enumerate(values))
    return _frame(title, body, labels, low, high)


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> SafeString:
    count = len(values)
    if not count:
        return mark_safe('<p class="muted">No data yet.</p>')
    high = max(values) or 1.0
    width = (WIDTH - 2 * PAD) / count * 0.7
    body = "".join(
        f'<rect class="bar" x="{_x(i, count) - width / 2:.1f}" y="{_y(v, 0, high):.1f}" '
        f'width="{width:.1f}" height="{HEIGHT - PAD - _y(v, 0, high):.1f}">'
        f"<title>{escape(labels[i])}: {v:g}</title></rect>"
        for i, v in enumerate(values)
    )
    return _frame(title, body, labels, 0, high)
