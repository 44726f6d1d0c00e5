"""The files of a universal perturbation: the report figure, and an all-or-nothing writer.

The figure shows, at a glance, whether one perturbation fools the model on photos it never saw
and that it is not just noise: fooling-rate bars (training and held-out photos, against random
noise of the same L-inf budget), the perturbation magnified ten times, and a few held-out photos
before and after with the model's top-1. matplotlib is imported only when a figure is drawn.

The report sits below the attacks and never imports them: it reads the summary (a JSON-ready
mapping), the perturbation and the examples as plain data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trompe._files import (
    all_or_nothing,
    exists_error,
    move_into_place,
    prepare_directory,
    remove_stale_temporaries,
    stage,
)
from trompe.errors import ImageError, InvalidArgumentError
from trompe.report.figure import (
    _FAILURE,
    _INK,
    _MUTED,
    _SUCCESS,
    _display_array,
    _png_bytes,
    _short,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Example", "render_universal", "universal_png_bytes", "write_files"]

_UAP = "#e8590c"
_NOISE = "#adb5bd"


@dataclass(frozen=True)
class Example:
    """A held-out photo before and after the perturbation, for the figure.

    Attributes:
        name: the photo's file name.
        before: the clean photo (3, H, W) in [0, 1].
        after: the perturbed 8-bit photo.
        before_label, after_label: the model's top-1 names.
        before_prob, after_prob: their probabilities.
        fooled: whether the photo counts as fooled.
    """

    name: str
    before: torch.Tensor
    after: torch.Tensor
    before_label: str
    before_prob: float
    after_label: str
    after_prob: float
    fooled: bool


def render_universal(
    summary: Mapping[str, Any], delta: torch.Tensor, examples: Sequence[Example]
) -> Figure:
    """Draw the report of a universal perturbation.

    Args:
        summary: the result's JSON record (``fooling_rate``, ``photos``, ``eps_255``, ``model``,
            ``target``).
        delta: the perturbation (3, h, w) in [0, 1] units.
        examples: up to three held-out photos before and after.

    Returns:
        A matplotlib figure (not attached to pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = list(examples)[:3]
    figure = Figure(figsize=(15.0, 8.4 if shown else 4.6), dpi=100, facecolor="white")
    FigureCanvasAgg(figure)
    rows = 2 if shown else 1
    grid = figure.add_gridspec(
        rows,
        6,
        height_ratios=[1.0, 1.0][:rows],
        left=0.05,
        right=0.98,
        top=0.88 if shown else 0.8,
        bottom=0.04,
        hspace=0.35,
        wspace=0.25,
    )
    rates = summary["fooling_rate"]
    photos = summary["photos"]
    target = summary.get("target")
    goal = (
        f"top-1 becomes '{_short(str(target['label']))}'"
        if target
        else "top-1 changes from the clean photo's"
    )
    figure.suptitle(
        f"One perturbation for many photos: {summary['model']}, L-inf {summary['eps_255']}/255"
        f"  (fooled = {goal}, measured on the 8-bit photos)",
        fontsize=14,
        color=_INK,
    )

    bars = figure.add_subplot(grid[0, :4])
    groups = [
        f"training photos ({photos['train']})",
        f"held-out photos ({photos['holdout']})",
    ]
    uap = [rates["train"], rates["holdout"]]
    noise = [rates["noise_train"], rates["noise_holdout"]]
    positions = [0.0, 1.0]
    width = 0.36
    for offset, values, colour, name in (
        (-width / 2, uap, _UAP, "the universal perturbation"),
        (width / 2, noise, _NOISE, f"random noise (\u00b1{summary['eps_255']}/255)"),
    ):
        drawn = bars.bar([p + offset for p in positions], values, width, color=colour, label=name)
        for rect, value in zip(drawn, values, strict=True):
            bars.text(
                rect.get_x() + rect.get_width() / 2,
                value + 0.02,
                f"{value:.0%}",
                ha="center",
                va="bottom",
                fontsize=12,
                color=_INK,
            )
    bars.set_xticks(positions, groups, fontsize=12)
    bars.set_ylim(0, 1.32)
    bars.set_yticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25 %", "50 %", "75 %", "100 %"])
    bars.set_ylabel("photos fooled", color=_MUTED)
    bars.spines[["top", "right"]].set_visible(False)
    bars.legend(loc="upper center", frameon=False, fontsize=11, ncols=2)

    picture = figure.add_subplot(grid[0, 4:])
    # x10, as the attack reports show it, unless the budget is so large that x10 would saturate.
    eps = max(float(delta.detach().abs().max()), 1 / 255)
    amplify = min(10.0, round(0.5 / eps, 1))
    magnified = (0.5 + amplify * delta.detach().float().cpu()).clamp(0, 1)
    picture.imshow(_display_array(magnified), interpolation="nearest")
    picture.set_axis_off()
    side = f"{int(delta.shape[-1])}\u00d7{int(delta.shape[-2])}"
    picture.set_title(
        f"perturbation \u00d7 {amplify:g} ({side}, resized to each photo)", fontsize=12
    )

    for column, example in enumerate(shown):
        for offset, (image, label, prob, caption) in enumerate(
            (
                (example.before, example.before_label, example.before_prob, "before"),
                (example.after, example.after_label, example.after_prob, "after"),
            )
        ):
            ax = figure.add_subplot(grid[1, 2 * column + offset])
            ax.imshow(_display_array(image), interpolation="antialiased")
            ax.set_axis_off()
            colour = _INK
            mark = ""
            if offset == 1:
                colour = _SUCCESS if example.fooled else _FAILURE
                mark = " \u2713" if example.fooled else " \u2717"
            ax.set_title(
                f"{caption}{mark}\n{_short(label, 22)} {prob:.0%}",
                fontsize=11,
                color=colour,
            )
            if offset == 0:
                ax.text(
                    0.0,
                    -0.06,
                    _short(example.name, 30),
                    transform=ax.transAxes,
                    fontsize=9,
                    color=_MUTED,
                    va="top",
                )
    return figure


def universal_png_bytes(
    summary: Mapping[str, Any], delta: torch.Tensor, examples: Sequence[Example]
) -> bytes:
    """:func:`render_universal` as PNG bytes."""
    return _png_bytes(render_universal(summary, delta, examples))


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return os.path.abspath(a) == os.path.abspath(b)


def write_files(
    out_dir: str | os.PathLike[str],
    files: Mapping[str, bytes],
    *,
    force: bool = False,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Path]:
    """Write ``{file name: bytes}`` into ``out_dir``, all or nothing.

    Every refusal comes before anything is written; then every file is staged as a hidden
    temporary and only when all are staged are they moved into place; a failure removes what
    this call placed and the folders it created.

    Args:
        out_dir: the folder (created if missing).
        files: the file names (no folders) and their bytes.
        force: overwrite files of these names.
        inputs: files this result was made from: never overwritten, force or not.

    Returns:
        ``{file name: path}``.

    Raises:
        OutputExistsError: a file exists and ``force`` is false.
        InvalidArgumentError: a file would be one of ``inputs``.
        ImageError: ``out_dir`` is a file, or cannot be created or written.
    """
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise ImageError(
            f"the output folder '{directory}' is a file; give a folder (it is created if missing)"
        )
    targets = {name: directory / name for name in files}
    for target in targets.values():
        if target.is_dir():
            raise ImageError(f"'{target}' is a folder; remove it or choose another output folder")
        for source in inputs:
            if _same_file(Path(source), target):
                raise InvalidArgumentError(
                    f"'{target}' is one of the input photos; an input is never overwritten, "
                    "force or not: choose another output folder"
                )
        if not force and (target.exists() or target.is_symlink()):
            raise exists_error(target)
    created: list[Path] = []
    with all_or_nothing(created) as (staged, placed):
        prepare_directory(directory, into=created)
        remove_stale_temporaries(directory)
        moves = [
            (stage(directory, target, files[name], staged), target)
            for name, target in targets.items()
        ]
        for temporary, target in moves:
            move_into_place(temporary, target, force, placed)
    return targets
