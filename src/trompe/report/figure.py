"""The report figure: original | adversarial | perturbation, top classes before and after.

The only module of trompe that imports matplotlib, and only when a figure is drawn, with its
non-interactive Agg canvas; pyplot's global state is never touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trompe.errors import InvalidArgumentError
from trompe.images import quantize, to_pil
from trompe.metrics import Norms, measure
from trompe.report._types import ResultLike
from trompe.report.perturbation import _perturbation_levels
from trompe.report.record import _check_index, _label, _top
from trompe.units import format_budget

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["evaluation_png_bytes", "render_evaluation", "render_report", "report_png_bytes"]

_NORM_NAMES = {"linf": "L-inf", "l2": "L2", "l1": "L1", "l0": "L0"}

# The report figure, in inches at _DPI dots per inch: 1500 px wide.
_DPI = 100
_WIDTH = 15.0
_MARGIN = 0.3
_GAP = 0.45
_LABEL_WIDTH = 1.9  # room for the class names left of each bar chart
_BAR_HEIGHT = 0.36
_ROW_HEIGHT = 0.27  # of the numbers under the perturbation
_BAND_HEIGHT = 1.9  # at least, for the charts and the numbers
_MAX_NAME = 24
_MAX_DISPLAY_SIDE = 1000  # images are shrunk to this before drawing: enough for ~460 px columns

_INK = "#212529"
_MUTED = "#6c757d"
_BAR = "#adb5bd"
_TARGET = "#e8590c"  # the class a targeted attack aims for
_TRUE = "#1c7ed6"  # the class an untargeted attack moves away from
_SUCCESS = "#2b8a3e"
_FAILURE = "#c92a2a"


def _describe(result: ResultLike, index: int, limit: int = _MAX_NAME) -> str:
    """``lemon (951)`` for the figure; ``class 951`` when the result has no class names."""
    if result.labels is None:
        return f"class {index}"
    return f"{_short(_label(result, index), limit)} ({index})"


def _fmt(value: float, digits: int = 3) -> str:
    """A number without float noise: 10.0 -> '10', 2.5 -> '2.5', 0.123456 -> '0.123'."""
    if not math.isfinite(value):
        return str(value)
    return f"{round(value, digits):g}" if abs(value) < 1e6 else f"{value:.3g}"


def _pct(prob: float) -> str:
    percent = 100 * prob
    if percent >= 99.95 and prob < 1:
        return f"{percent:.2f}%"
    if percent >= 10:
        return f"{percent:.1f}%"
    if percent >= 0.1:
        return f"{percent:.2f}%"
    if percent >= 0.001:
        return f"{percent:.3f}%"
    return "<0.001%" if percent > 0 else "0%"


def _short(name: str, limit: int = _MAX_NAME) -> str:
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "\u2026"


def _scalar_param(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if isinstance(value, torch.Tensor | np.ndarray | np.generic) and np.size(value) == 1:
        value = float(np.asarray(value.tolist()).reshape(()))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _title_parts(result: ResultLike, index: int) -> tuple[str, str, bool]:
    parts = [result.model or "model", result.attack or "attack"]
    norm = result.params.get("norm")
    norm_name = _NORM_NAMES.get(str(norm).lower(), str(norm)) if norm is not None else None
    eps = _scalar_param(result.params, "eps")
    if eps is not None:
        budget = "eps " + format_budget(eps, str(norm).lower() if norm is not None else "linf")
        parts.append(f"{norm_name} {budget}" if norm_name else budget)
    elif norm_name:
        parts.append(norm_name)
    goal_class = int(result.goal.classes[index])
    described = _describe(result, goal_class, 40)
    if result.goal.targeted:
        goal = f"target: {described}"
        if result.goal.confidence is not None:
            goal += f" \u2265 {_pct(result.goal.confidence)}"
    else:
        goal = f"untargeted: away from {described}"
    parts.append(goal)
    if len(result) > 1:
        parts.append(f"image {index + 1} of {len(result)}")
    success = bool(result.success[index])
    return " \u00b7 ".join(parts) + " \u00b7 ", "success" if success else "failed", success


def _display_array(image: torch.Tensor) -> np.ndarray[Any, Any]:
    """An (H, W, 3) uint8 array, shrunk with Lanczos when far larger than the figure shows."""
    picture = to_pil(image.detach().cpu())
    if max(picture.size) > _MAX_DISPLAY_SIDE:
        picture = picture.copy()
        picture.thumbnail((_MAX_DISPLAY_SIDE, _MAX_DISPLAY_SIDE), resample=_lanczos())
    return np.asarray(picture)


def _lanczos() -> Any:
    from PIL import Image

    return Image.Resampling.LANCZOS


def _bar_chart(
    ax: Axes,
    result: ResultLike,
    index: int,
    k: int,
    *,
    after: bool,
    goal_class: int,
    goal_colour: str,
) -> None:
    top = _top(result, index, k, after=after)
    names = [_describe(result, row["index"]) for row in top]
    values = [100 * row["prob"] for row in top]
    colours = [goal_colour if row["index"] == goal_class else _BAR for row in top]
    positions = list(range(len(top)))
    ax.barh(positions, values, color=colours, height=0.68)
    ax.set_yticks(positions, names, fontsize=11, color=_INK)
    for tick, row in zip(ax.get_yticklabels(), top, strict=True):
        if row["index"] == goal_class:
            tick.set_color(goal_colour)
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, 128)  # room right of a full bar for its percentage
    ax.set_ylim(len(top) - 0.5, -0.5)
    for position, value, row in zip(positions, values, top, strict=True):
        ax.text(
            value + 1.5,
            position,
            _pct(row["prob"]),
            va="center",
            ha="left",
            fontsize=11,
            color=goal_colour if row["index"] == goal_class else _INK,
            fontweight="bold" if row["index"] == goal_class else "normal",
        )
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0, pad=6)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color(_BAR)
    heading = "model's top classes, after" if after else "model's top classes, before"
    ax.set_title(heading, fontsize=12, color=_MUTED, loc="left", pad=8)

    goal_prob = result.class_prob(goal_class, index, after=after)
    kind = "target" if result.goal.targeted else "true class"
    note = f"\u25a0 {kind}: {_describe(result, goal_class)}  {_pct(goal_prob)}"
    ax.annotate(
        note,
        xy=(0, 0),
        xycoords="axes fraction",
        xytext=(0, -10),
        textcoords="offset points",
        va="top",
        ha="left",
        fontsize=11,
        color=goal_colour,
    )


def _numbers_panel(
    ax: Axes,
    result: ResultLike,
    index: int,
    norms: Norms,
    verified: dict[str, Any] | None,
    height: float,
) -> None:
    """The size of the change and the cost of the attack, as rows of name and value."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(
        "size of the change and cost of the attack", fontsize=12, color=_MUTED, loc="left", pad=8
    )
    psnr = float(norms.psnr[0])
    goal_class = int(result.goal.classes[index])
    before = result.class_prob(goal_class, index, after=False)
    after = result.class_prob(goal_class, index, after=True)
    rows = [
        ("L-inf (0-255 levels)", _fmt(float(norms.linf[0]), 2)),
        ("L2 (0-255 levels)", _fmt(float(norms.l2[0]), 1)),
        ("PSNR", f"{psnr:.1f} dB" if math.isfinite(psnr) else "\u221e (no change)"),
        ("steps", f"{int(result.steps[index]):,}"),
        (
            "model calls",
            f"{int(result.forwards[index]):,} forward \u00b7 "
            f"{int(result.gradients[index]):,} gradient",
        ),
        ("time", f"{result.seconds:.2f} s" + (" (whole batch)" if len(result) > 1 else "")),
        (
            f"p({_short(_label(result, goal_class), 20)}) before \u2192 after",
            f"{_pct(before)} \u2192 {_pct(after)}",
        ),
    ]
    lines = len(rows) + (verified is not None)
    step = min(_ROW_HEIGHT, height / lines) / height  # in axes fraction
    for i, (name, value) in enumerate(rows):
        y = 1 - (i + 0.5) * step
        ax.text(0.0, y, name, ha="left", va="center", fontsize=12, color=_MUTED)
        ax.text(1.0, y, value, ha="right", va="center", fontsize=12, color=_INK)
        ax.axhline(y - step / 2, color="#e9ecef", linewidth=0.8)
    if verified is not None:
        agrees = bool(verified["success"]) == bool(result.success[index])
        if agrees:
            note = "saved PNG re-classified: same outcome"
        else:
            outcome = "success" if verified["success"] else "failure"
            note = f"saved PNG re-classified: {outcome}, unlike the result"
        mark = "\u2713" if agrees else "\u2717"
        ax.text(
            0.0,
            1 - (len(rows) + 0.55) * step,
            f"{mark} {note}",
            ha="left",
            va="center",
            fontsize=11,
            color=_SUCCESS if agrees else _FAILURE,
        )


@dataclass(frozen=True)
class _Layout:
    """Positions of the report's panels in inches, from the bottom left."""

    height: float
    column: float
    image_bottom: float
    image_height: float
    chart_bottom: float
    chart_height: float

    @property
    def chart_top(self) -> float:
        return self.chart_bottom + self.chart_height

    def box(
        self, left: float, bottom: float, width: float, height: float
    ) -> tuple[float, float, float, float]:
        return (left / _WIDTH, bottom / self.height, width / _WIDTH, height / self.height)


def _layout(aspect: float, k: int) -> _Layout:
    column = (_WIDTH - 2 * _MARGIN - 2 * _GAP) / 3
    image_height = column * min(max(aspect, 0.3), 1.25)
    chart_height = _BAR_HEIGHT * k
    band = max(chart_height, _BAND_HEIGHT)
    bottom_room = 0.7  # the goal note under the charts
    chart_bottom = bottom_room + band - chart_height
    image_bottom = bottom_room + band + 0.8  # the chart titles and the caption
    height = image_bottom + image_height + 1.05  # the image titles and the title line
    return _Layout(height, column, image_bottom, image_height, chart_bottom, chart_height)


def _render(
    result: ResultLike,
    index: int,
    k: int,
    *,
    norms: Norms | None = None,
    verified: dict[str, Any] | None = None,
) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.offsetbox import AnchoredOffsetbox, HPacker, TextArea

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 20:
        raise InvalidArgumentError(f"k must be an integer from 1 to 20, got {k!r}")
    k = min(k, int(result.probs_after.shape[-1]))
    original = result.original[index].detach().float().cpu()
    adversarial = result.adversarial[index].detach().float().cpu()
    if norms is None:
        norms = measure(original[None], adversarial[None])
    height, width = (int(s) for s in adversarial.shape[-2:])
    layout = _layout(height / width, k)

    figure = Figure(figsize=(_WIDTH, layout.height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)
    goal_class = int(result.goal.classes[index])
    goal_colour = _TARGET if result.goal.targeted else _TRUE

    pictures = [
        (quantize(original), "original"),
        (quantize(adversarial), "adversarial"),
        (_perturbation_levels(original, adversarial), "perturbation \u00d7 10"),
    ]
    for column, (picture, caption) in enumerate(pictures):
        left = _MARGIN + column * (layout.column + _GAP)
        ax = figure.add_axes(
            layout.box(left, layout.image_bottom, layout.column, layout.image_height)
        )
        ax.imshow(_display_array(picture), interpolation="antialiased")
        ax.set_axis_off()
        ax.set_title(caption, fontsize=14, color=_INK, pad=8)
    figure.text(
        _WIDTH - _MARGIN,
        layout.image_bottom - 0.18,
        "grey: unchanged; brighter or darker: raised or lowered",
        transform=figure.dpi_scale_trans,
        ha="right",
        va="top",
        fontsize=10,
        color=_MUTED,
    )

    for column, after in ((0, False), (1, True)):
        left = _MARGIN + column * (layout.column + _GAP) + _LABEL_WIDTH
        ax = figure.add_axes(
            layout.box(left, layout.chart_bottom, layout.column - _LABEL_WIDTH, layout.chart_height)
        )
        _bar_chart(
            ax, result, index, k, after=after, goal_class=goal_class, goal_colour=goal_colour
        )

    left = _MARGIN + 2 * (layout.column + _GAP)
    panel_height = layout.chart_top - _MARGIN
    ax = figure.add_axes(layout.box(left, _MARGIN, layout.column, panel_height))
    _numbers_panel(ax, result, index, norms, verified, panel_height)

    text, status, success = _title_parts(result, index)
    title = HPacker(
        children=[
            TextArea(text, textprops={"fontsize": 16, "color": _INK}),
            TextArea(
                status,
                textprops={
                    "fontsize": 16,
                    "color": _SUCCESS if success else _FAILURE,
                    "fontweight": "bold",
                },
            ),
        ],
        pad=0,
        sep=0,
        align="baseline",
    )
    figure.add_artist(
        AnchoredOffsetbox(
            loc="upper center",
            child=title,
            frameon=False,
            bbox_to_anchor=(0.5, 1 - 0.2 / layout.height),
            bbox_transform=figure.transFigure,
            borderpad=0,
            pad=0,
        )
    )
    return figure


def render_report(result: ResultLike, index: int = 0, *, k: int = 5) -> Figure:
    """Draw one image of a result as a figure that tells the story at a glance.

    Three columns: the original, the adversarial image and the perturbation (x10 around grey).
    Under the original and the adversarial image, the model's top ``k`` classes before and after
    as bars in %, the goal class (the target, or the true class of an untargeted attack) in its
    own colour. Under the perturbation, its size (L-inf and L2 in 0-255 levels, PSNR in dB),
    the steps, model calls and time. The title line names the model, the attack, the budget,
    the goal and the outcome. The figure is 1500 pixels wide at its own dpi (100).

    It is a :class:`matplotlib.figure.Figure` on an Agg canvas, outside pyplot: save it with
    ``figure.savefig("report.png")``.

    Args:
        result: an attack's result.
        index: which image of the batch.
        k: how many classes each chart shows (1 to 20).

    Returns:
        The figure.

    Raises:
        InvalidArgumentError: ``index`` or ``k`` out of range.

    Example:
        >>> render_report(result).savefig("report.png")                # doctest: +SKIP
    """
    return _render(result, _check_index(result, index), k)


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def report_png_bytes(result: ResultLike, index: int = 0) -> bytes:
    """The report of :func:`render_report` as PNG bytes (what Jupyter shows for a result).

    Raises:
        InvalidArgumentError: ``index`` out of range.
    """
    return _png_bytes(render_report(result, index))


#: The colours of the cascade's stages in the evaluation figure, in order (then repeated).
_STAGE_COLOURS = ("#f08c00", "#e8590c", "#ae3ec9", "#1098ad", "#74b816", "#868e96")
_ROBUST = "#1c7ed6"
_CLEAN = "#ced4da"
_WARNING = "#c92a2a"
#: Classes shown in the per-class chart at most (those with the most images).
_MAX_CLASSES = 20
_MAX_WARNING_TEXT = 150


def _budget_names(summary: Mapping[str, Any]) -> list[str]:
    """The budgets as the tick labels write them: ``8/255`` for L-inf, the 0-255 norm for L2."""
    norm = str(summary["config"]["norm"])
    names = []
    for budget in summary["budgets"]:
        if norm == "linf" and budget.get("eps_text"):
            names.append(str(budget["eps_text"]))
        else:
            names.append(_fmt(float(budget["eps_levels"]), 3))
    return names


def _cascade_chart(ax: Axes, summary: Mapping[str, Any]) -> None:
    """Accuracy at each budget as a stacked bar: the robust images at the bottom, over them
    the images each stage broke (the last stage first), so that the top of each band is the
    robust accuracy after that stage and the whole bar is the clean accuracy."""
    stages = [str(s["attack"]) for s in summary["config"]["stages"]]
    evaluated = int(summary["evaluated"])
    budgets = summary["budgets"]
    names = ["clean", *_budget_names(summary)]
    positions = list(range(len(names)))
    clean = 100 * float(summary["clean_accuracy"])
    ax.bar([0], [clean], color=_CLEAN, width=0.62, label="clean (unattacked)")
    robust = [100 * float(b["robust_accuracy"]) for b in budgets]
    xs = positions[1:]
    ax.bar(xs, robust, color=_ROBUST, width=0.62, label="robust")
    bottoms = list(robust)
    counts = [int(budgets[-1]["broken_by"].get(stage, 0)) if budgets else 0 for stage in stages]
    for i in reversed(range(len(stages))):
        stage = stages[i]
        heights = [
            100 * int(b["broken_by"].get(stage, 0)) / evaluated if evaluated else 0.0
            for b in budgets
        ]
        ax.bar(
            xs,
            heights,
            bottom=bottoms,
            color=_STAGE_COLOURS[i % len(_STAGE_COLOURS)],
            width=0.62,
            label=f"broken by {stage} ({counts[i]} at {names[-1]})",
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.plot(positions, [clean, *robust], color=_INK, marker="o", linewidth=1.5, markersize=5)
    for x, value in zip(positions, [clean, *robust], strict=True):
        ax.text(
            x,
            value + 2,
            f"{value:.1f}%",
            ha="center",
            va="bottom",
            fontsize=11,
            color=_INK,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
        )
    norm = str(summary["config"]["norm"])
    unit = "pixel levels of 255" if norm == "linf" else "norm of the change, 0-255 units"
    ax.set_xticks(positions, names, fontsize=11)
    ax.set_xlabel(f"budget ({_NORM_NAMES.get(norm, norm)}, {unit})", fontsize=11, color=_MUTED)
    ax.set_ylabel("accuracy (%)", fontsize=11, color=_MUTED)
    ax.set_ylim(0, 112)
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1],
        labels[::-1],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=9,
        frameon=False,
    )
    ax.set_title(
        "accuracy against the budget; bands: what each attack broke",
        fontsize=12,
        color=_MUTED,
        loc="left",
        pad=8,
    )


def _classes_shown(rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if len(rows) <= _MAX_CLASSES:
        return rows
    chosen = sorted(rows, key=lambda r: (-int(r["n"]), int(r["class"])))[:_MAX_CLASSES]
    return sorted(chosen, key=lambda r: int(r["class"]))


def _class_chart(ax: Axes, summary: Mapping[str, Any]) -> None:
    """Per class: clean accuracy (light) and robust accuracy at the largest budget (dark)."""
    rows = list(summary.get("per_class") or [])
    shown = _classes_shown(rows)
    largest = _budget_names(summary)[-1] if summary["budgets"] else ""
    names = []
    for row in shown:
        name = row.get("name")
        if not name:
            label = f"class {row['class']}"
        elif str(name) == str(row["class"]):
            label = str(name)
        else:
            label = f"{_short(str(name), 18)} ({row['class']})"
        names.append(label)
    positions = list(range(len(shown)))
    clean = [100 * float(r["clean_accuracy"]) for r in shown]
    robust = [100 * float(r["robust_accuracy"][-1]) if r["robust_accuracy"] else 0.0 for r in shown]
    ax.barh(positions, clean, color=_CLEAN, height=0.72, label="clean")
    ax.barh(positions, robust, color=_ROBUST, height=0.72, label=f"robust at {largest}")
    ax.set_yticks(positions, names, fontsize=9 if len(shown) > 12 else 10, color=_INK)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)", fontsize=11, color=_MUTED)
    ax.tick_params(axis="y", length=0, pad=4)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    title = f"per class: clean (grey), robust at {largest} (blue)"
    if len(shown) < len(rows):
        title += f"\n{len(shown)} of {len(rows)} classes: those with most images"
    ax.set_title(title, fontsize=12, color=_MUTED, loc="left", pad=8)


def _warning_lines(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(text, colour) of the lines under the charts: the warnings' codes and messages."""
    warnings = list(summary.get("warnings") or [])
    lines = []
    for warning in warnings:
        message = _short(" ".join(str(warning.get("message", "")).split()), _MAX_WARNING_TEXT)
        lines.append((f"\u26a0 {warning.get('code', 'warning')}: {message}", _WARNING))
    if not warnings:
        if summary["config"].get("checks", True):
            lines.append(("\u2713 the gradient-masking checks found nothing", _SUCCESS))
        else:
            lines.append(("gradient-masking checks not run (checks off)", _MUTED))
    skipped = summary.get("skipped") or []
    if skipped:
        lines.append((f"{len(skipped)} unreadable image(s) skipped (see summary.json)", _MUTED))
    rejected = sum(int(b.get("rejected", 0)) for b in summary["budgets"])
    if rejected:
        text = f"{rejected} reported success(es) not confirmed on the 8-bit image: not counted"
        lines.append((text, _MUTED))
    return lines


def _evaluation_title(summary: Mapping[str, Any]) -> str:
    config = summary["config"]
    model = str(config["model"].get("id", "model"))
    data = config["data"]
    source = str(data.get("source", data.get("kind", "data")))
    norm = _NORM_NAMES.get(str(config["norm"]), str(config["norm"]))
    cascade = ", ".join(str(s["attack"]) for s in config["stages"])
    if config.get("cascade") in ("standard", "fast"):
        cascade = f"{config['cascade']} cascade ({cascade})"
    seconds = float(summary.get("seconds", 0.0))
    return (
        f"{_short(model, 40)} on {_short(source, 40)} \u00b7 {summary['evaluated']} images "
        f"\u00b7 {norm} \u00b7 {cascade} \u00b7 {seconds:.0f} s"
    )


def render_evaluation(summary: Mapping[str, Any]) -> Figure:
    """The figure of an evaluation, drawn from its summary (``summary.json``) alone.

    Left, the accuracy at each budget as a stacked bar: clean accuracy at "clean", then at each
    budget the robust accuracy (blue, with its value and a line through them) under bands of
    the images each stage of the cascade broke, the first stage on top; the top of each band is
    the robust accuracy after that stage, so a stage that broke nothing has no band. Right, per
    class, the clean accuracy and the robust accuracy at the largest budget (the 20 classes
    with most images at most). Under both, each warning of the gradient-masking checks by its
    code and message (or that they found nothing), skipped images and unconfirmed successes.

    It is a :class:`matplotlib.figure.Figure` on an Agg canvas, outside pyplot.

    Args:
        summary: :meth:`trompe.evaluation.EvaluationReport.summary`, or ``summary.json`` read.

    Raises:
        InvalidArgumentError: a summary without the keys of an evaluation's.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    try:
        summary["config"]["norm"], summary["config"]["stages"], summary["budgets"]
        int(summary["evaluated"]), float(summary["clean_accuracy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"not an evaluation summary (no {exc}); give EvaluationReport.summary() or summary.json"
        ) from None
    width = 15.0
    chart = 4.6
    classes = len(_classes_shown(list(summary.get("per_class") or [])))
    chart = max(chart, 0.24 * classes + 0.6)
    lines = _warning_lines(summary)
    text_height = 0.3 * len(lines) + 0.3
    top, bottom_axis = 0.75, 0.75  # title; tick labels and axis label
    height = top + chart + bottom_axis + text_height
    figure = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(figure)

    def box(left: float, w: float) -> tuple[float, float, float, float]:
        return (left / width, (text_height + bottom_axis) / height, w / width, chart / height)

    _cascade_chart(figure.add_axes(box(0.8, 6.6)), summary)
    _class_chart(figure.add_axes(box(10.9, 3.8)), summary)
    figure.text(
        0.5,
        1 - 0.25 / height,
        _evaluation_title(summary),
        ha="center",
        va="top",
        fontsize=14,
        color=_INK,
    )
    for i, (text, colour) in enumerate(lines):
        figure.text(
            0.3 / width,
            (text_height - 0.2 - 0.3 * i) / height,
            text,
            ha="left",
            va="top",
            fontsize=11,
            color=colour,
        )
    return figure


def evaluation_png_bytes(summary: Mapping[str, Any]) -> bytes:
    """:func:`render_evaluation` as PNG bytes."""
    return _png_bytes(render_evaluation(summary))
