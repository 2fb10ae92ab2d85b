"""Counts over time as a stacked bar chart, laid out here and drawn as inline SVG."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Colour-blind-safe palette (Okabe-Ito), then grey for "other".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")
OTHER = "#999999"
MAX_SERIES = len(PALETTE)


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str
    count: int
    start: str


@dataclass
class Chart:
    width: int
    height: int
    segments: list[Segment] = field(default_factory=list)
    legend: list[tuple[str, str, int]] = field(default_factory=list)  # label, colour, total
    y_ticks: list[tuple[float, int]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    plot_left: int = 48
    plot_bottom: int = 0
    total: int = 0


def _nice_max(value: int) -> int:
    if value <= 5:
        return max(value, 1)
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return value


def _stamp(ns: int, bucket_ns: int) -> str:
    fmt = "%m-%d %H:%M" if bucket_ns < 86400 * 10**9 else "%Y-%m-%d"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime(fmt)


def stacked_bars(counts: list[tuple[int, str, int]], since_ns: int, until_ns: int,
                 bucket_ns: int, width: int = 900, height: int = 280) -> Chart:
    """Lay out (bucket start, series, count) triples as stacked bars, biggest series first."""
    totals: dict[str, int] = defaultdict(int)
    for _, series, n in counts:
        totals[series] += n
    ranked = sorted(totals, key=lambda s: (-totals[s], s))
    kept = ranked[:MAX_SERIES - 1] if len(ranked) > MAX_SERIES else ranked
    colour = {s: PALETTE[i] for i, s in enumerate(kept)}
    buckets: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for start, series, n in counts:
        buckets[start][series if series in colour else "other"] += n
    chart = Chart(width=width, height=height)
    chart.legend = [(s, colour[s], totals[s]) for s in kept]
    if len(ranked) > len(kept):
        chart.legend.append(("other", OTHER, sum(totals[s] for s in ranked[len(kept):])))
    chart.total = sum(totals.values())
    left, right, top, bottom = chart.plot_left, 8, 8, 24
    chart.plot_bottom = height - bottom
    n_buckets = max(1, -(-(until_ns - since_ns) // bucket_ns))
    slot = (width - left - right) / n_buckets
    peak = _nice_max(max((sum(b.values()) for b in buckets.values()), default=0))
    scale = (height - top - bottom) / peak
    order = [*kept, "other"]
    for start, per_series in sorted(buckets.items()):
        index = (start - since_ns) // bucket_ns
        x = left + index * slot + slot * 0.1
        y = float(height - bottom)
        for series in order:
            n = per_series.get(series, 0)
            if not n:
                continue
            h = n * scale
            y -= h
            chart.segments.append(Segment(x, y, max(slot * 0.8, 1.0), h,
                                          colour.get(series, OTHER), series, n,
                                          _stamp(start, bucket_ns)))
    step_y = max(1, -(-peak // 4))
    for value in range(0, peak + 1, step_y):
        chart.y_ticks.append((height - bottom - value * scale, value))
    step = max(1, n_buckets // 6)
    for index in range(0, n_buckets, step):
        chart.x_ticks.append((left + index * slot, _stamp(since_ns + index * bucket_ns,
                                                          bucket_ns)))
    return chart
