"""Charts drawn on the server as inline SVG (no JavaScript, no external asset).

Every function returns a :class:`markupsafe.Markup` string of one ``<svg>`` element with a
``<title>`` per mark, so hovering a bar or a purchase shows its value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

import numpy as np
import pandas as pd
from markupsafe import Markup

__all__ = ["histogram", "timeline"]

_W, _H = 560, 220
_L, _R, _T, _B = 56, 12, 12, 40


def _ticks(top: float, n: int = 4) -> list[float]:
    if top <= 0:
        return [0.0]
    raw = top / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    return [float(i * step) for i in range(int(top // step) + 1)]


def histogram(
    counts: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
    *,
    x_label: str,
    y_label: str = "customers",
    fmt: Callable[[float], str] = lambda x: f"{x:,.0f}",
) -> Markup:
    """Bars of ``counts`` over bins ``edges`` (``len(edges) == len(counts) + 1``)."""
    heights = np.asarray(counts, dtype=float)
    bins = np.asarray(edges, dtype=float)
    top = float(heights.max()) if len(heights) and heights.max() > 0 else 1.0
    ticks = _ticks(top)
    top = max(top, ticks[-1])
    pw, ph = _W - _L - _R, _H - _T - _B
    bw = pw / max(len(heights), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(x_label)} distribution" xmlns="http://www.w3.org/2000/svg">'
    ]
    for t in ticks:
        y = _T + ph - ph * t / top
        parts.append(
            f'<line x1="{_L}" x2="{_W - _R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:,.0f}</text>'
        )
    for i, c in enumerate(heights):
        h = ph * c / top
        x = _L + i * bw
        label = f"{fmt(bins[i])} to {fmt(bins[i + 1])}: {c:,.0f} {y_label}"
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{_T + ph - h:.1f}" width="{bw - 2:.1f}" '
            f'height="{h:.1f}"><title>{escape(label)}</title></rect>'
        )
    for i in range(0, len(bins), max(len(bins) // 5, 1)):
        x = _L + i * bw
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _B + 16}" text-anchor="middle">{escape(fmt(bins[i]))}'
            "</text>"
        )
    parts.append(
        f'<text x="{_L + pw / 2:.1f}" y="{_H - 6}" text-anchor="middle" class="axis">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{_T + ph / 2:.1f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {_T + ph / 2:.1f})">{escape(y_label)}</text></svg>'
    )
    return Markup("".join(parts))


def timeline(
    purchases: pd.DataFrame | None,
    *,
    date: pd.Timestamp,
    expected: pd.Timestamp | None = None,
    interval: tuple[pd.Timestamp | None, pd.Timestamp | None] = (None, None),
    currency: str = "",
) -> Markup:
    """Purchases (``timestamp``, ``amount``) as stems over time, up to the scoring date.

    The expected next purchase and its 80 % interval, when given, are drawn after the date.
    Returns refunds (negative amounts) below the axis.
    """
    if purchases is None or purchases.empty or "timestamp" not in purchases:
        return Markup('<p class="muted">No purchase history in the store.</p>')
    tx = purchases.dropna(subset=["timestamp"]).copy()
    tx["day"] = pd.to_datetime(tx["timestamp"]).dt.normalize()
    daily = tx.groupby("day")["amount"].sum()
    lo, hi = interval
    end = max(d for d in (date, expected, hi) if d is not None and not pd.isna(d))
    start = min(daily.index.min(), date)
    span = max((end - start).days, 1) * 1.04
    width, height = 1100, 260
    pw, ph = width - _L - _R, height - _T - _B
    mid = _T + ph * 0.75
    top = float(daily.abs().max()) or 1.0

    def x(d: pd.Timestamp) -> float:
        return _L + pw * (d - start).days / span

    parts = [
        f'<svg class="chart timeline" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="purchase timeline" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{_L}" x2="{width - _R}" y1="{mid:.1f}" y2="{mid:.1f}" class="grid"/>',
    ]
    if lo is not None or hi is not None:
        a, b = x(lo or date), x(hi or end)
        parts.append(
            f'<rect class="band" x="{a:.1f}" y="{_T}" width="{max(b - a, 2):.1f}" '
            f'height="{ph:.1f}"><title>80 % interval of the next purchase</title></rect>'
        )
    for day, amount in daily.items():
        h = (ph * 0.7) * abs(amount) / top
        y2 = mid - h if amount >= 0 else mid + min(h, ph * 0.25)
        cls = "stem" if amount >= 0 else "stem refund"
        label = f"{day.date()}: {amount:,.0f} {currency}".strip()
        parts.append(
            f'<line class="{cls}" x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{mid:.1f}" '
            f'y2="{y2:.1f}"><title>{escape(label)}</title></line>'
            f'<circle class="{cls}" cx="{x(day):.1f}" cy="{y2:.1f}" r="3">'
            f"<title>{escape(label)}</title></circle>"
        )
    xd = x(date)
    parts.append(
        f'<line class="today" x1="{xd:.1f}" x2="{xd:.1f}" y1="{_T}" y2="{_T + ph}"/>'
        f'<text x="{xd:.1f}" y="{_T + 10}" text-anchor="end" class="axis">scoring date </text>'
    )
    if expected is not None and not pd.isna(expected):
        xe = x(expected)
        parts.append(
            f'<circle class="expected" cx="{xe:.1f}" cy="{mid:.1f}" r="5">'
            f"<title>expected next purchase {expected.date()}</title></circle>"
        )
    for d in pd.date_range(start, end, periods=5):
        parts.append(
            f'<text x="{x(d):.1f}" y="{height - _B + 16}" text-anchor="middle">{d:%Y-%m}</text>'
        )
    unit = f" ({escape(currency)})" if currency else ""
    parts.append(
        f'<text x="{_L + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">'
        f"purchases per day, height = amount{unit}</text></svg>"
    )
    return Markup("".join(parts))
