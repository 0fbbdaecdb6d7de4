"""A self-contained HTML report: metric tables, loss curves (inline SVG) and image grids (files beside it)."""

from __future__ import annotations

import html
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from personacraft_jax import atomic_write

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    values = np.asarray(values, np.float64)
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def line_plot_svg(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, width: int = 480, height: int = 260
) -> str:
    """An SVG line plot of {label: (x, y)} with axes, min/max labels and a legend."""
    pad_l, pad_r, pad_t, pad_b = 56, 12, 28, 36
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()])
    ys = ys[np.isfinite(ys)]
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(ys.min()), float(ys.max())
    if y1 <= y0:
        y1 = y0 + 1.0
    sx = lambda x: pad_l + (x - x0) / max(x1 - x0, 1e-12) * (width - pad_l - pad_r)
    sy = lambda y: height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#444"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#444"/>',
        f'<text x="{pad_l - 4}" y="{sy(y1) + 4}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{pad_l - 4}" y="{sy(y0) + 4}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{sx(x0)}" y="{height - pad_b + 14}" text-anchor="middle">{x0:g}</text>',
        f'<text x="{sx(x1)}" y="{height - pad_b + 14}" text-anchor="middle">{x1:g}</text>',
        f'<text x="{(pad_l + width - pad_r) / 2}" y="{height - 6}" text-anchor="middle">step</text>',
    ]
    for k, (label, (x, y)) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, y, strict=True) if np.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        parts.append(
            f'<text x="{width - pad_r - 4}" y="{pad_t + 14 * (k + 1)}" text-anchor="end" fill="{color}">'
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def metrics_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image_grid(images: Sequence[tuple[str, str]], root: pathlib.Path, size: int = 192) -> str:
    """Figures of (caption, path); paths are made relative to `root` (the report's folder)."""
    cells = []
    for caption, path in images:
        rel = os.path.relpath(path, root)
        cells.append(
            f'<figure><img src="{html.escape(rel)}" width="{size}" style="image-rendering: pixelated">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    return '<div class="grid">' + "".join(cells) + "</div>"


def write_report(path: pathlib.Path, title: str, sections: Sequence[tuple[str, str]]) -> pathlib.Path:
    """Writes an HTML page of (heading, html body) sections."""
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:24px auto;color:#222}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}"
        "th{background:#f3f3f3}.grid{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0}"
        "figcaption{font-size:12px;text-align:center;max-width:200px}"
    )
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    atomic_write.write_text(
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n",
    )
    return path
