"""The transfer matrix: which models an attack fools, the attacked ones and the held-out ones.

Rows are attacks (on their source model), columns models, each cell the share of photos whose
saved adversarial PNG fools that model, coloured from red (0 %) to green (100 %); the columns
of held-out models are marked, since their cells are the transfer rates. Under the matrix, one
row per photo shows where it fooled (✓) and where not (✗). matplotlib is imported only when a
figure is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_transfer", "transfer_png_bytes"]

_DPI = 100
_INK = "#222222"
_MUTED = "#666666"
#: The most photo rows drawn (the rest are in result.json).
MAX_PHOTO_ROWS = 40


def _colour(rate: float) -> tuple[float, float, float]:
    """Red (0) through pale yellow (0.5) to green (1), light enough for dark text."""
    red = (0.93, 0.45, 0.42)
    mid = (0.98, 0.90, 0.55)
    green = (0.45, 0.80, 0.48)
    low, high, t = (red, mid, rate * 2) if rate < 0.5 else (mid, green, rate * 2 - 1)
    return (
        low[0] + (high[0] - low[0]) * t,
        low[1] + (high[1] - low[1]) * t,
        low[2] + (high[2] - low[2]) * t,
    )


def render_transfer(
    rows: Sequence[tuple[str, dict[str, float]]],
    models: Sequence[str],
    *,
    held_out: Sequence[str] = (),
    photos: Sequence[tuple[str, dict[str, bool]]] = (),
    title: str = "transfer",
) -> Figure:
    """Draw the transfer matrix.

    Args:
        rows: ``(row name, {model: rate in [0, 1]})`` per attack; a model missing from a row
            is an empty cell.
        models: the columns, in order.
        held_out: the columns that are held-out models (marked "held out").
        photos: ``(photo name, {model: fooled})`` rows drawn under the matrix.
        title: the figure's title.

    Returns:
        A :class:`matplotlib.figure.Figure` on an Agg canvas, outside pyplot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    shown_photos = list(photos)[:MAX_PHOTO_ROWS]
    label_width = max([len(name) for name, _ in rows] + [len(n) for n, _ in shown_photos] + [10])
    left = min(6.5, 0.6 + 0.085 * label_width)
    cell_w = max(1.5, max((0.075 * len(m) for m in models), default=1.5))
    cell_h, photo_h = 0.55, 0.32
    header = 1.3
    gap = 0.45 if shown_photos else 0.0
    more = 0.3 if len(photos) > len(shown_photos) else 0.0
    width = max(left + cell_w * len(models) + 0.4, 0.5 + 0.105 * len(title))
    height = header + cell_h * len(rows) + gap + photo_h * len(shown_photos) + more + 0.35
    figure = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    ax.text(0.25, 0.3, title, ha="left", va="center", fontsize=13, color=_INK)
    for j, model in enumerate(models):
        x = left + cell_w * (j + 0.5)
        ax.text(x, header - 0.55, model, ha="center", va="center", fontsize=10, color=_INK)
        kind = "held out" if model in held_out else "attacked"
        ax.text(
            x,
            header - 0.25,
            kind,
            ha="center",
            va="center",
            fontsize=9,
            color=_INK if model in held_out else _MUTED,
            fontweight="bold" if model in held_out else "normal",
        )
    y = header
    for name, rates in rows:
        ax.text(left - 0.15, y + cell_h / 2, name, ha="right", va="center", fontsize=10, color=_INK)
        for j, model in enumerate(models):
            x = left + cell_w * j
            rate = rates.get(model)
            face = "#f2f2f2" if rate is None else _colour(rate)
            ax.add_patch(Rectangle((x, y), cell_w, cell_h, facecolor=face, edgecolor="white"))
            text = "" if rate is None else f"{rate:.0%}"
            ax.text(
                x + cell_w / 2,
                y + cell_h / 2,
                text,
                ha="center",
                va="center",
                fontsize=12,
                color=_INK,
                fontweight="bold" if model in held_out else "normal",
            )
        y += cell_h
    y += gap
    for name, fooled in shown_photos:
        ax.text(
            left - 0.15, y + photo_h / 2, name, ha="right", va="center", fontsize=9, color=_MUTED
        )
        for j, model in enumerate(models):
            x = left + cell_w * j
            value = fooled.get(model)
            if value is None:
                continue
            ax.add_patch(
                Rectangle(
                    (x, y),
                    cell_w,
                    photo_h,
                    facecolor=_colour(1.0 if value else 0.0),
                    edgecolor="white",
                    alpha=0.55,
                )
            )
            ax.text(
                x + cell_w / 2,
                y + photo_h / 2,
                "✓" if value else "✗",
                ha="center",
                va="center",
                fontsize=10,
                color=_INK,
            )
        y += photo_h
    if more:
        ax.text(
            left,
            y + 0.15,
            f"... and {len(photos) - len(shown_photos)} more photos in result.json",
            ha="left",
            va="center",
            fontsize=9,
            color=_MUTED,
        )
    return figure


def transfer_png_bytes(
    rows: Sequence[tuple[str, dict[str, float]]],
    models: Sequence[str],
    *,
    held_out: Sequence[str] = (),
    photos: Sequence[tuple[str, dict[str, bool]]] = (),
    title: str = "transfer",
) -> bytes:
    """:func:`render_transfer` as PNG bytes."""
    figure = render_transfer(rows, models, held_out=held_out, photos=photos, title=title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()
