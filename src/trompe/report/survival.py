"""The survival panel of the report: the adversarial image after real JPEG, resizing... with
✓/✗ and the goal's probability under each, and a bar per transform of the survival grid.

Drawn from a :meth:`~trompe.evaluation.survival.Survival.to_json` record and the 8-bit image
(the thumbnails are the real Pillow transforms again, so that a person sees what the model
saw). matplotlib is imported only when a panel is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trompe.images import to_pil

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["render_survival", "stack_png", "survival_png_bytes"]

_DPI = 100
_WIDTH = 15.0  # as the report figure: 1500 px
_INK = "#212529"
_MUTED = "#6c757d"
_MET = "#2b8a3e"
_MISSED = "#c92a2a"
_THUMBNAILS = 4


def _label(row: Mapping[str, Any]) -> str:
    name, setting = str(row.get("name", "")), str(row.get("setting", ""))
    if name == "jpeg":
        return "JPEG " + setting.removeprefix("quality ")
    if name == "png":
        return "PNG as saved"
    return f"{name} {setting}"


def _chosen(rows: list[Mapping[str, Any]]) -> list[int]:
    """Which rows get a thumbnail: the highest, a middle and the lowest JPEG quality, then the
    first missed row of another transform (else its first row)."""
    jpeg = [i for i, row in enumerate(rows) if row.get("name") == "jpeg"]
    picked: list[int] = []
    if jpeg:
        middle = next(
            (i for i in jpeg if str(rows[i].get("setting")) == "quality 75"),
            jpeg[len(jpeg) // 2],
        )
        picked = list(dict.fromkeys([jpeg[0], middle, jpeg[-1]]))
    others = [i for i, row in enumerate(rows) if row.get("name") not in ("jpeg", "png")]
    missed = [i for i in others if not rows[i].get("met")]
    for i in missed + others:
        if len(picked) >= _THUMBNAILS:
            break
        if i not in picked:
            picked.append(i)
    if len(picked) < _THUMBNAILS:
        picked.insert(0, 0)  # the PNG itself
    return picked[:_THUMBNAILS]


def _thumbnail(image: torch.Tensor, row: Mapping[str, Any], spec: str) -> np.ndarray[Any, Any]:
    """The image after the real transform of ``row`` (Pillow, as in the check)."""
    from trompe.transforms import parse_transforms

    picture = to_pil(image.detach().float().cpu())
    if row.get("name") != "png":
        for point in parse_transforms(spec).grid():
            if point.name == row.get("name") and point.setting == row.get("setting"):
                picture = point.apply(picture)
                break
    picture.thumbnail((600, 600))
    return np.asarray(picture.convert("RGB"))


def render_survival(image: torch.Tensor, record: Mapping[str, Any]) -> Figure:
    """The panel: up to four thumbnails of the image after real transforms (✓/✗ and the
    goal's probability under each) and a bar per row of the grid (green: goal met).

    Args:
        image: the 8-bit adversarial image, (3, H, W) in [0, 1].
        record: the image's survival record (``Survival.to_json(index)``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(record.get("rows", []))
    goal = record.get("goal", {})
    kind = "target" if goal.get("targeted") else "true class"
    name = str(goal.get("class_name", ""))
    bars_height = 0.26 * len(rows) + 0.9
    height = max(3.9, bars_height + 0.8)
    figure = Figure(figsize=(_WIDTH, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    survived = bool(record.get("survived"))
    figure.text(
        0.02,
        1 - 0.25 / height,
        f"after real transforms ({record.get('transforms', '')}): "
        + ("survives all" if survived else "does not survive all"),
        fontsize=15,
        color=_MET if survived else _MISSED,
        fontweight="bold",
        va="top",
    )
    thumbs = _chosen(rows) if rows else []
    side = 2.05  # inches
    for column, index in enumerate(thumbs):
        row = rows[index]
        left, bottom = 0.2 + column * (side + 0.25), height - 0.75 - side
        ax = figure.add_axes((left / _WIDTH, bottom / height, side / _WIDTH, side / height))
        ax.imshow(_thumbnail(image, row, str(record.get("transforms", ""))))
        ax.set_axis_off()
        met = bool(row.get("met"))
        top = row.get("top1", {})
        ax.set_title(
            f"{'✓' if met else '✗'} {_label(row)}",
            fontsize=13,
            color=_MET if met else _MISSED,
            fontweight="bold",
        )
        ax.text(
            0.5,
            -0.04,
            f"p({name[:18]}) {100 * float(row.get('goal_prob', 0)):.1f} %\n"
            f"top-1: {str(top.get('label', ''))[:22]}",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=10.5,
            color=_INK,
        )
    left = 0.2 + _THUMBNAILS * (side + 0.25) + 1.9
    width = _WIDTH - left - 0.9
    ax = figure.add_axes(
        (left / _WIDTH, 0.45 / height, width / _WIDTH, (bars_height - 0.5) / height)
    )
    values = [100 * float(row.get("goal_prob", 0)) for row in rows]
    colours = [_MET if row.get("met") else _MISSED for row in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colours, height=0.7)
    ax.set_yticks(positions, [_label(row) for row in rows], fontsize=10, color=_INK)
    ax.invert_yaxis()
    ax.set_xlim(0, 118)
    for position, value in zip(positions, values, strict=True):
        ax.text(value + 1.5, position, f"{value:.1f} %", va="center", fontsize=9.5, color=_INK)
    ax.set_xticks([])
    for spine in ("top", "right", "bottom"):
        ax.spines[spine].set_visible(False)
    ax.set_title(f"p({kind}: {name[:24]}) per transform", fontsize=12, color=_MUTED, loc="left")
    return figure


def survival_png_bytes(image: torch.Tensor, record: Mapping[str, Any]) -> bytes:
    """:func:`render_survival` as PNG bytes."""
    buffer = io.BytesIO()
    render_survival(image, record).savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def stack_png(top: bytes, bottom: bytes) -> bytes:
    """Two PNG figures one above the other (the report, then a panel), on white."""
    from PIL import Image

    with (
        Image.open(io.BytesIO(top), formats=("PNG",)) as first,
        Image.open(io.BytesIO(bottom), formats=("PNG",)) as second,
    ):
        a, b = first.convert("RGB"), second.convert("RGB")
    width = max(a.width, b.width)
    sheet = Image.new("RGB", (width, a.height + b.height), "white")
    sheet.paste(a, (0, 0))
    sheet.paste(b, (0, a.height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
