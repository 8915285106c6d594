"""Tiny inline-SVG charts for the monthly report: no plotting library, no network to view.

Two shapes are all the report needs: values over time (lines with points, optional
dashed objective lines) and one horizontal stacked bar (where a drill's time went).
Every label is escaped; every point carries a ``<title>`` so a browser shows its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

FONT = "font-family=\"-apple-system,BlinkMacSystemFont,'Segoe UI',Helvetica,Arial,sans-serif\""
PALETTE = ("#0969da", "#bf8700", "#8250df", "#1a7f37", "#cf222e", "#57606a")
GRID = "#d8dee4"
MUTED = "#57606a"

Formatter = Callable[[float], str]


@dataclass
class Series:
    name: str
    points: list[tuple[datetime, float]] = field(default_factory=list)
    color: str | None = None


@dataclass(frozen=True)
class Threshold:
    value: float
    label: str
    color: str = "#cf222e"


# Steps that read well for durations (seconds) and sizes (bytes), for ``line_chart(y_steps=...)``.
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
BYTE_STEPS = tuple(m * 1024**k for k in range(5) for m in (1, 2, 5, 10, 20, 50, 100, 200, 500))


def nice_step(span: float, ticks: int = 4, steps: Sequence[float] | None = None) -> float:
    """The smallest step from ``steps`` (default: 1, 2 or 5 times a power of ten) giving at
    most about ``ticks`` intervals over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    if steps:
        return next((float(s) for s in sorted(steps) if s >= raw), float(max(steps)) * math.ceil(raw / max(steps)))
    power = 10.0 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if multiple * power >= raw:
            return multiple * power
    return 10 * power


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    y_format: Formatter = _num,
    y_steps: Sequence[float] | None = None,
    thresholds: Sequence[Threshold] = (),
    width: int = 640,
    height: int = 220,
    empty_text: str = "no data this period",
) -> str:
    named = [one for one in series if one.name]
    left, right, bottom = 64, 16, 30
    top = 46 if named else 30  # the legend gets its own row under the title
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" {FONT} font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#24292f">{escape(title)}</text>',
    ]
    points = [p for s in series for p in s.points]
    if not points:
        parts.append(
            f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f6f8fa" stroke="{GRID}"/>'
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="{MUTED}">'
            f"{escape(empty_text)}</text></svg>"
        )
        return "".join(parts)
    times = [p[0].timestamp() for p in points]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 3600:
        t0, t1 = t0 - 43200, t1 + 43200  # one moment: centre it in a day
    pad = (t1 - t0) * 0.04
    t0, t1 = t0 - pad, t1 + pad
    top_value = max([p[1] for p in points] + [t.value for t in thresholds])
    step = nice_step(top_value * 1.1 or 1.0, steps=y_steps)
    y_max = step * math.ceil((top_value * 1.1 or 1.0) / step)

    def x(moment: float) -> float:
        return left + (moment - t0) / (t1 - t0) * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / y_max * plot_h

    tick = 0.0
    while tick <= y_max + 1e-9:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{escape(y_format(tick))}</text>"
        )
        tick += step
    for i in range(5):
        moment = t0 + pad + (t1 - t0 - 2 * pad) * i / 4
        label = datetime.fromtimestamp(moment, UTC).strftime("%b %d")
        parts.append(f'<text x="{x(moment):.1f}" y="{height - 10}" text-anchor="middle" fill="{MUTED}">{label}</text>')
    for threshold in thresholds:
        ty = y(threshold.value)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{threshold.color}" '
            f'stroke-dasharray="5 4"/><text x="{left + plot_w - 4}" y="{ty - 4:.1f}" text-anchor="end" '
            f'fill="{threshold.color}">{escape(threshold.label)}</text>'
        )
    legend_x = float(left)
    for index, one in enumerate(series):
        color = one.color or PALETTE[index % len(PALETTE)]
        ordered = sorted(one.points)
        coords = [(x(t.timestamp()), y(v)) for t, v in ordered]
        if len(coords) > 1:
            path = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for (cx, cy), (when, value) in zip(coords, ordered, strict=True):
            tip = f"{one.name} {when:%Y-%m-%d %H:%M}: {y_format(value)}"
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{color}"><title>{escape(tip)}</title></circle>'
            )
        if one.name:
            parts.append(
                f'<rect x="{legend_x:.1f}" y="25" width="9" height="9" rx="2" fill="{color}"/>'
                f'<text x="{legend_x + 13:.1f}" y="33" fill="#24292f">{escape(one.name)}</text>'
            )
            legend_x += 26 + 6.2 * len(one.name)
    parts.append("</svg>")
    return "".join(parts)


def stacked_bar(
    segments: Sequence[tuple[str, float]],
    *,
    title: str,
    limit: float | None = None,
    limit_label: str = "",
    value_format: Formatter = _num,
    width: int = 640,
    height: int = 86,
) -> str:
    """One bar split into named segments, optionally against a limit (the objective)."""
    left, right = 16, 16
    plot_w = width - left - right
    total = sum(v for _, v in segments)
    scale_max = max(total, limit or 0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" {FONT} font-size="11">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#24292f">{escape(title)}</text>',
        f'<rect x="{left}" y="26" width="{plot_w}" height="22" fill="#f6f8fa" rx="3"/>',
    ]
    cursor = float(left)
    legend_x = float(left)
    for index, (name, value) in enumerate(segments):
        color = PALETTE[index % len(PALETTE)]
        seg_w = value / scale_max * plot_w
        tip = f"{name}: {value_format(value)}"
        parts.append(
            f'<rect x="{cursor:.1f}" y="26" width="{max(seg_w, 0.5):.1f}" height="22" fill="{color}">'
            f"<title>{escape(tip)}</title></rect>"
        )
        cursor += seg_w
        label = f"{name} {value_format(value)}"
        parts.append(
            f'<rect x="{legend_x:.1f}" y="{height - 20}" width="9" height="9" rx="2" fill="{color}"/>'
            f'<text x="{legend_x + 12:.1f}" y="{height - 12}" fill="#24292f">{escape(label)}</text>'
        )
        legend_x += 24 + 6.2 * len(label)
    if limit is not None:
        lx = left + limit / scale_max * plot_w
        parts.append(
            f'<line x1="{lx:.1f}" x2="{lx:.1f}" y1="22" y2="52" stroke="#cf222e" stroke-width="2" '
            f'stroke-dasharray="4 3"/><text x="{min(lx, left + plot_w) - 4:.1f}" y="62" text-anchor="end" '
            f'fill="#cf222e">{escape(limit_label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
