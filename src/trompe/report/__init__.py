"""The files and pictures of an attack result: PNGs, a one-glance report figure, a JSON record.

- :func:`perturbation_image` shows the change amplified around mid-grey, as in the Foolbox and
  Keras demos.
- :func:`render_report` draws original | adversarial | perturbation with the model's top classes
  before and after, and the size of the change; :func:`report_png_bytes` gives it as PNG bytes
  (Jupyter shows an :class:`~trompe.attacks.result.AttackResult` with it).
- :func:`result_summary` is the JSON-ready record: versions, model, attack, parameters, goal,
  predictions before and after, norms.
- :func:`save_result` writes all of it to a directory, all or nothing, and checks the saved PNG
  by reading it back (and, given the model, by classifying it again).

matplotlib is imported on first use only, with its non-interactive Agg canvas; pyplot's global
state is never touched.

Example:
    >>> paths = save_result(result, "out", model=clf)                  # doctest: +SKIP
    >>> sorted(paths)                                                  # doctest: +SKIP
    ['adversarial', 'json', 'perturbation', 'report']
"""

from __future__ import annotations

import datetime
import enum
import io
import json
import math
import operator
import os
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trompe._files import (
    all_or_nothing,
    exists_error,
    move_into_place,
    prepare_directory,
    stage,
)
from trompe.attacks.result import AttackResult, Norms, measure
from trompe.errors import ImageError, InvalidArgumentError, TrompeError
from trompe.images import (
    DEFAULT_MAX_PIXELS,
    load_image,
    quantize,
    to_pil,
    to_uint8,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from trompe.models import Classifier

__all__ = [
    "perturbation_image",
    "render_report",
    "report_png_bytes",
    "result_summary",
    "save_result",
]

#: Parameters given in [0, 1] pixel units that the JSON repeats in 0-255 levels (``eps_255``).
_PIXEL_PARAMS = ("eps", "step_size")
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


# -- the perturbation --------------------------------------------------------------------------


def perturbation_image(
    original: torch.Tensor, adversarial: torch.Tensor, amplify: float = 10.0
) -> torch.Tensor:
    """The change an attack made, amplified around mid-grey: ``0.5 + amplify * (adv - orig)``.

    Grey means no change; brighter or darker channels were raised or lowered. Values are
    clamped to [0, 1], so changes larger than ``0.5 / amplify`` saturate.

    Args:
        original: the clean images, in [0, 1].
        adversarial: the adversarial images, in [0, 1], of the same shape.
        amplify: how much the change is magnified (10: one 8-bit level becomes ten).

    Returns:
        The picture of the change, float, in [0, 1], on the inputs' device.

    Raises:
        InvalidArgumentError: not float tensors of one shape (3, H, W) or (B, 3, H, W), or
            ``amplify`` not a positive finite number.

    Shape:
        - Input: (3, H, W) or (B, 3, H, W), twice.
        - Output: same as the input.

    Example:
        >>> x = torch.zeros(3, 2, 2)
        >>> perturbation_image(x, x + 1 / 255)[0, 0, 0] * 255
        tensor(137.5000)
    """
    for name, tensor in (("original", original), ("adversarial", adversarial)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            what = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise InvalidArgumentError(f"{name} must be a float image tensor, got {what}")
        if tensor.dim() not in (3, 4) or tensor.shape[-3] != 3:
            raise InvalidArgumentError(
                f"{name} must have shape (3, H, W) or (B, 3, H, W), got {tuple(tensor.shape)}"
            )
    if original.shape != adversarial.shape:
        raise InvalidArgumentError(
            "original and adversarial must have the same shape, got "
            f"{tuple(original.shape)} and {tuple(adversarial.shape)}"
        )
    if isinstance(amplify, bool) or not isinstance(amplify, int | float):
        raise InvalidArgumentError(f"amplify must be a number, got {amplify!r}")
    if not (math.isfinite(amplify) and amplify > 0):
        raise InvalidArgumentError(f"amplify must be a positive finite number, got {amplify}")
    original = original.detach()
    adversarial = adversarial.detach().to(original.device)
    dtype = torch.promote_types(original.dtype, adversarial.dtype)
    change = adversarial.to(dtype) - original.to(dtype)
    return (0.5 + amplify * change).clamp_(0.0, 1.0)


def _perturbation_levels(
    original: torch.Tensor, adversarial: torch.Tensor, amplify: float = 10.0
) -> torch.Tensor:
    """:func:`perturbation_image` in 8 bits, computed on the images' 8-bit levels.

    A change of ``d`` levels becomes ``round(127.5 + amplify * d)`` exactly (128 + 10 d for
    the default x10, ties to even), so that the saved picture is symmetric around grey and
    free of float noise at the rounding ties.
    """
    change = to_uint8(adversarial).double() - to_uint8(original).double()
    return (127.5 + amplify * change).round_().clamp_(0, 255).to(torch.uint8)


# -- the JSON record ---------------------------------------------------------------------------


def _check_index(result: AttackResult, index: int) -> int:
    try:
        if isinstance(index, bool):
            raise TypeError
        index = operator.index(index)
    except TypeError:
        raise InvalidArgumentError(f"index must be an integer, got {index!r}") from None
    if not 0 <= index < len(result):
        raise InvalidArgumentError(
            f"index {index} is out of range for a result of {len(result)} image(s); "
            f"give 0 to {len(result) - 1}"
        )
    return index


def _label(result: AttackResult, index: int) -> str:
    labels = result.labels
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return f"class {index}"


def _describe(result: AttackResult, index: int, limit: int = _MAX_NAME) -> str:
    """``lemon (951)`` for the figure; ``class 951`` when the result has no class names."""
    if result.labels is None:
        return f"class {index}"
    return f"{_short(_label(result, index), limit)} ({index})"


def _finite(value: float) -> float | None:
    """JSON has no infinity or NaN: they become null."""
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    """Turn parameters and extras into plain JSON values (tensors, paths, enums, numpy...)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.generic | np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, torch.device | torch.dtype):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _to_255(value: Any) -> Any:
    """A [0, 1] pixel quantity in 0-255 levels, without float noise (8/255 -> 8.0)."""
    if isinstance(value, torch.Tensor | np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _finite(round(float(value) * 255, 6))
    if isinstance(value, list):
        return [_to_255(v) for v in value]
    return None


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[str(key)] = _jsonable(value)
        if key in _PIXEL_PARAMS and f"{key}_255" not in params:
            levels = _to_255(value)
            if levels is not None:
                out[f"{key}_255"] = levels
    return out


def _versions() -> dict[str, str]:
    import matplotlib
    import PIL

    from trompe import __version__

    return {
        "trompe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "matplotlib": matplotlib.__version__,
    }


def _top(result: AttackResult, index: int, k: int, *, after: bool) -> list[dict[str, Any]]:
    probs = (result.probs_after if after else result.probs_before)[index].detach().float().cpu()
    values, indices = probs.topk(min(k, probs.shape[0]))
    return [
        {"index": int(i), "label": _label(result, int(i)), "prob": float(p)}
        for p, i in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def _norms_dict(norms: Norms) -> dict[str, float | int | None]:
    return {
        "linf_255": float(norms.linf[0]),
        "l2_255": float(norms.l2[0]),
        "psnr_db": _finite(float(norms.psnr[0])),  # null: no change at all
        "l1_255": float(norms.l1[0]),
        "l0_pixels": int(norms.l0[0]),
    }


#: The fields of a summary that ``extra`` may not replace.
_SUMMARY_FIELDS = frozenset(
    {
        "created", "versions", "model", "attack", "params", "index", "batch_size", "size",
        "goal", "success", "before", "after", "norms", "steps", "forwards", "gradients",
        "queries", "seconds", "verified_on_png",
    }
)  # fmt: skip


def _check_extra(extra: Mapping[str, Any]) -> None:
    clashes = sorted(str(key) for key in extra if str(key) in _SUMMARY_FIELDS)
    if clashes:
        raise InvalidArgumentError(
            f"extra must not replace the measured fields {', '.join(clashes)}; rename those keys"
        )


def _summary(
    result: AttackResult,
    index: int,
    *,
    extra: Mapping[str, Any] | None,
    norms: Norms | None = None,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if extra:
        _check_extra(extra)
    goal_class = int(result.goal.classes[index])
    if norms is None:
        norms = measure(result.original[index : index + 1], result.adversarial[index : index + 1])
    height, width = (int(s) for s in result.adversarial.shape[-2:])
    summary: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "model": result.model,
        "attack": result.attack,
        "params": _params(result.params),
        "index": index,
        "batch_size": len(result),
        "size": [width, height],
        "goal": {
            "targeted": bool(result.goal.targeted),
            "class": goal_class,
            "class_name": _label(result, goal_class),
            "confidence": result.goal.confidence,
        },
        "success": bool(result.success[index]),
        "before": {
            "top5": _top(result, index, 5, after=False),
            "goal_prob": result.class_prob(goal_class, index, after=False),
        },
        "after": {
            "top5": _top(result, index, 5, after=True),
            "goal_prob": result.class_prob(goal_class, index, after=True),
        },
        "norms": _norms_dict(norms),
        "steps": int(result.steps[index]),
        "forwards": int(result.forwards[index]),
        "gradients": int(result.gradients[index]),
        "queries": int(result.queries[index]),
        "seconds": float(result.seconds),
    }
    if verified is not None:
        summary["verified_on_png"] = verified
    if extra:
        summary.update({str(key): _jsonable(value) for key, value in extra.items()})
    return summary


def result_summary(
    result: AttackResult, index: int = 0, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything needed to reproduce and audit one image of a result, as a JSON-ready dict.

    Keys (probabilities in [0, 1]; norms in 0-255 pixel levels, measured on 8-bit values):

    - ``created`` (UTC, ISO 8601), ``versions`` (trompe, python, torch, numpy, pillow,
      matplotlib), ``model``, ``attack``.
    - ``params``: the attack's hyper-parameters as given (``eps`` in [0, 1]), plus ``eps_255``
      and ``step_size_255``, the same in 0-255 levels, where those parameters are present.
    - ``index``, ``batch_size``, ``size`` ([width, height] in pixels).
    - ``goal``: ``{"targeted", "class", "class_name", "confidence"}`` (``class`` is the target,
      or for an untargeted goal the true class to move away from).
    - ``success``; ``before`` and ``after``: ``{"top5": [{"index", "label", "prob"}, ...],
      "goal_prob"}``.
    - ``norms``: ``{"linf_255", "l2_255", "psnr_db"}`` (``psnr_db`` is null for no change).
    - ``steps``, ``forwards``, ``gradients``, ``queries`` (this image; ``queries`` leaves out
      the engine's evaluation before and after), ``seconds`` (the whole attack).
    - the keys of ``extra`` (source image, seed, command line...), at the top level.

    Args:
        result: an attack's result.
        index: which image of the batch.
        extra: more fields to record; tensors, paths and numpy values are converted.

    Returns:
        A dict that :func:`json.dumps` accepts with ``allow_nan=False``.

    Raises:
        InvalidArgumentError: ``index`` out of range, or a key of ``extra`` that would replace
            one of the fields above.

    Example:
        >>> result_summary(result, extra={"seed": 0})["norms"]        # doctest: +SKIP
        {'linf_255': 10.0, 'l2_255': 1873.2, 'psnr_db': 39.6}
    """
    return _summary(result, _check_index(result, index), extra=extra)


# -- the report figure -------------------------------------------------------------------------


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


def _title_parts(result: AttackResult, index: int) -> tuple[str, str, bool]:
    parts = [result.model or "model", result.attack or "attack"]
    norm = result.params.get("norm")
    norm_name = _NORM_NAMES.get(str(norm).lower(), str(norm)) if norm is not None else None
    eps = _scalar_param(result.params, "eps")
    if eps is not None:
        levels = _fmt(eps * 255)
        if norm_name is None or str(norm).lower() == "linf":
            budget = f"eps {levels}/255"
        else:
            budget = f"eps {levels} (0-255 scale)"
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
    result: AttackResult,
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
    result: AttackResult,
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
    result: AttackResult,
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


def render_report(result: AttackResult, index: int = 0, *, k: int = 5) -> Figure:
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


def report_png_bytes(result: AttackResult, index: int = 0) -> bytes:
    """The report of :func:`render_report` as PNG bytes (what Jupyter shows for a result).

    Raises:
        InvalidArgumentError: ``index`` out of range.
    """
    return _png_bytes(render_report(result, index))


# -- saving ------------------------------------------------------------------------------------


def _encode_png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _names(batch: int) -> list[dict[str, str]]:
    if batch == 1:
        return [
            {
                "adversarial": "adversarial.png",
                "perturbation": "perturbation.png",
                "report": "report.png",
            }
        ]
    return [
        {
            "adversarial": f"adversarial-{i}.png",
            "perturbation": f"perturbation-{i}.png",
            "report": f"report-{i}.png",
        }
        for i in range(batch)
    ]


def _verify(
    model: Classifier, result: AttackResult, index: int, image: torch.Tensor
) -> dict[str, Any]:
    """Classify the read-back PNG again and recompute the goal on its logits."""
    with torch.no_grad():
        logits = model(image[None].to(model.device, torch.float32)).float()
    probs = logits.softmax(dim=-1)[0].cpu()
    top1 = int(probs.argmax())
    goal_class = int(result.goal.classes[index])
    success = bool(result.goal.subset(torch.tensor([index])).met(logits)[0])
    labels = model.labels
    return {
        "model": model.name,
        "top1": {"index": top1, "label": labels[top1], "prob": float(probs[top1])},
        "goal_prob": float(probs[goal_class]),
        "success": success,
        "agrees_with_result": success == bool(result.success[index]),
    }


def save_result(
    result: AttackResult,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    model: Classifier | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a result's files into ``out_dir``, all or nothing, and check the saved PNG.

    For one image: ``adversarial.png`` (the 8-bit adversarial image, lossless),
    ``perturbation.png`` (:func:`perturbation_image`, x10), ``report.png``
    (:func:`render_report`) and ``result.json`` (:func:`result_summary`). For a batch of B > 1:
    ``adversarial-<i>.png``, ``perturbation-<i>.png`` and ``report-<i>.png`` for i = 0..B-1,
    and one ``result.json`` holding a list of B summaries.

    Every file is first written to a hidden temporary file in ``out_dir``; only when all of them
    are written and checked are they renamed into place, so a failure leaves no new file and,
    without ``force``, touches no existing one. The adversarial PNG is read back and must equal
    ``quantize(result.adversarial[i])`` bit for bit; the norms in the JSON are measured on those
    read-back pixels. Given ``model``, the read-back image is classified again and the JSON gets
    ``"verified_on_png": {"model", "top1": {"index", "label", "prob"}, "goal_prob", "success",
    "agrees_with_result"}``, with ``success`` recomputed from the goal on the new logits.

    Args:
        result: an attack's result.
        out_dir: the directory to write into; created if missing.
        force: overwrite existing files of the same names.
        model: the classifier to re-check the saved PNG with (the one attacked).
        extra: more top-level JSON fields, e.g. the source image, the seed, the command line.

    Returns:
        For one image, ``{"adversarial", "perturbation", "report", "json"}`` -> path. For a
        batch, ``"adversarial-<i>"``, ``"perturbation-<i>"``, ``"report-<i>"`` for each image,
        and ``"json"``.

    Raises:
        OutputExistsError: one of the files exists and ``force`` is false; raised before
            anything is written.
        ImageError: ``out_dir`` is a file, cannot be created or written, or a file name in it
            is taken by a directory.
        InvalidArgumentError: a key of ``extra`` would replace a measured field.
        TrompeError: the PNG read back differs from the image (a bug; nothing is kept).

    Warns:
        UserWarning: the adversarial images are not on the 8-bit grid (the PNG holds them
            rounded), or the re-check on the PNG disagrees with ``result.success``.

    Example:
        >>> save_result(result, "out", model=clf, extra={"seed": 0})["report"]  # doctest: +SKIP
        PosixPath('out/report.png')
    """
    directory = Path(out_dir)
    batch = len(result)
    if batch == 0:
        raise InvalidArgumentError("the result holds no image; there is nothing to save")
    names = _names(batch)
    json_path = directory / "result.json"
    targets = [directory / name for image in names for name in image.values()] + [json_path]

    # Refuse before creating or writing anything.
    if extra:
        _check_extra(extra)
    if model is not None and model.num_classes != result.probs_after.shape[-1]:
        raise InvalidArgumentError(
            f"model {model.name!r} has {model.num_classes} classes, the result "
            f"{int(result.probs_after.shape[-1])}; pass the classifier that was attacked"
        )
    if directory.exists() and not directory.is_dir():
        raise ImageError(
            f"the output directory '{directory}' is a file; give a directory (it is created "
            "if missing)"
        )
    for target in targets:
        if target.is_dir():
            raise ImageError(f"'{target}' is a directory; remove it or choose another out_dir")
        if not force and (target.exists() or target.is_symlink()):
            raise exists_error(target)

    if any(not torch.equal(quantize(image), image) for image in result.adversarial.detach()):
        warnings.warn(
            "the adversarial images are not on the 8-bit grid; the PNGs hold them rounded, and "
            "the probabilities in the report were computed before rounding; pass model= to "
            "re-check the saved PNGs",
            UserWarning,
            stacklevel=2,
        )

    created_dirs = prepare_directory(directory)
    paths: dict[str, Path] = {}
    summaries: list[dict[str, Any]] = []
    moves: list[tuple[Path, Path]] = []
    with all_or_nothing(created_dirs) as (staged, placed):
        for index, image_names in enumerate(names):
            adversarial = quantize(result.adversarial[index].detach().float().cpu())
            adversarial_path = directory / image_names["adversarial"]
            temporary = stage(directory, adversarial_path, _encode_png(adversarial))
            staged.append(temporary)
            moves.append((temporary, adversarial_path))

            pixels = int(adversarial.shape[-2]) * int(adversarial.shape[-1])
            read_back = load_image(temporary, max_pixels=max(DEFAULT_MAX_PIXELS, pixels))
            if not torch.equal(read_back, adversarial):
                raise TrompeError(
                    f"the PNG written for '{adversarial_path}' does not read back as the image "
                    "it was made from; nothing was saved (please report this bug)"
                )
            original = result.original[index].detach().float().cpu()
            norms = measure(original[None], read_back[None])
            verified = None if model is None else _verify(model, result, index, read_back)
            if verified is not None and not verified["agrees_with_result"]:
                warnings.warn(
                    f"image {index}: the model on the saved PNG says "
                    f"{'success' if verified['success'] else 'failure'}, the result says "
                    f"{'success' if bool(result.success[index]) else 'failure'}",
                    UserWarning,
                    stacklevel=2,
                )

            perturbation_path = directory / image_names["perturbation"]
            temporary = stage(
                directory,
                perturbation_path,
                _encode_png(_perturbation_levels(original, read_back)),
            )
            staged.append(temporary)
            moves.append((temporary, perturbation_path))

            report_path = directory / image_names["report"]
            figure = _render(result, index, 5, norms=norms, verified=verified)
            temporary = stage(directory, report_path, _png_bytes(figure))
            staged.append(temporary)
            moves.append((temporary, report_path))

            summaries.append(_summary(result, index, extra=extra, norms=norms, verified=verified))
            suffix = "" if batch == 1 else f"-{index}"
            paths[f"adversarial{suffix}"] = adversarial_path
            paths[f"perturbation{suffix}"] = perturbation_path
            paths[f"report{suffix}"] = report_path

        record: Any = summaries[0] if batch == 1 else summaries
        text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        temporary = stage(directory, json_path, text.encode("utf-8"))
        staged.append(temporary)
        moves.append((temporary, json_path))
        paths["json"] = json_path

        for temporary, target in moves:
            move_into_place(temporary, target, force)
            placed.append(target)
    return paths
