"""The report of an adversarial patch: the patch, the patch in held-out scenes with what the
model says, and its success rate next to a noise patch's; and the all-or-nothing writing of
the patch's files.

matplotlib is imported inside :func:`render_patch_report` only (Agg canvas, no pyplot), so
importing this module costs nothing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from trompe._files import (
    all_or_nothing,
    exists_error,
    move_into_place,
    prepare_directory,
    remove_stale_temporaries,
    stage,
)
from trompe.errors import ImageError
from trompe.images import to_pil

__all__ = ["render_patch_report", "write_files"]

_INK = "#212529"
_MUTED = "#6c757d"
_TARGET = "#e8590c"
_NOISE = "#adb5bd"
_SUCCESS = "#2b8a3e"
_FAILURE = "#c92a2a"
_DPI = 100

#: One scene: (8-bit image (3, H, W), photo name, top-1 label, its prob, target prob, success).
SceneRow = tuple[torch.Tensor, str, str, float, float, bool]


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def render_patch_report(
    patch: torch.Tensor,
    scenes: Sequence[SceneRow],
    *,
    target_label: str,
    model: str,
    size: float,
    success_rate: float,
    noise_rate: float,
    photos: int,
    placements: int,
) -> bytes:
    """The report figure as PNG bytes: the patch | up to 4 scenes | success bars.

    Each scene is titled with the model's top-1 class and probability, green when it is the
    target; the bars compare held-out success over random placements with the learnt patch
    and with a noise patch of the same size.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 1 + len(scenes) + 1
    figure = Figure(figsize=(3.1 * columns, 3.9), dpi=_DPI)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1, columns, left=0.02, right=0.98, top=0.8, bottom=0.12, wspace=0.2)
    figure.suptitle(
        f"adversarial patch \u00b7 {model} \u00b7 target: {target_label} \u00b7 "
        f"{size:.0%} of the image",
        color=_INK,
        fontsize=13,
        x=0.02,
        ha="left",
    )
    ax = figure.add_subplot(grid[0, 0])
    ax.imshow(np.asarray(to_pil(patch.detach().cpu())))
    ax.set_title("the patch (print it)", color=_INK, fontsize=11)
    ax.set_axis_off()
    for column, (image, name, label, prob, target_prob, ok) in enumerate(scenes, start=1):
        ax = figure.add_subplot(grid[0, column])
        ax.imshow(np.asarray(to_pil(image.detach().cpu())))
        ax.set_title(f"{_short(label)} {prob:.0%}", color=_SUCCESS if ok else _FAILURE, fontsize=11)
        ax.set_xlabel(
            f"{_short(name, 26)}\n{target_label}: {target_prob:.1%}", color=_MUTED, fontsize=9
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    ax = figure.add_subplot(grid[0, columns - 1])
    values = [100 * success_rate, 100 * noise_rate]
    bars = ax.bar(["patch", "noise\npatch"], values, color=[_TARGET, _NOISE], width=0.6)
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            value + 2,
            f"{value:.0f}%",
            ha="center",
            va="bottom",
            color=_INK,
            fontsize=11,
        )
    ax.set_ylim(0, 112)
    ax.set_yticks([])
    ax.set_title(f"held out: top-1 = {_short(target_label, 16)}", color=_INK, fontsize=11)
    ax.set_xlabel(
        f"{photos} photo{'s' if photos != 1 else ''} \u00d7 {placements} places",
        color=_MUTED,
        fontsize=9,
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def write_files(
    directory: Path, files: Mapping[str, bytes], *, force: bool = False
) -> dict[str, Path]:
    """Write ``files`` (name -> bytes) into ``directory``, all or nothing.

    Every check comes before the first write; each file is staged to a hidden temporary and
    renamed into place only when all are staged, and a failure removes what was placed.

    Returns:
        name without extension -> path (``"patch"``, ``"report"``, ``"result"``).

    Raises:
        OutputExistsError: a file exists and ``force`` is false.
        ImageError: ``directory`` is a file, or a target is a folder, or writing fails.
    """
    if directory.exists() and not directory.is_dir():
        raise ImageError(
            f"the output directory '{directory}' is a file; give a directory (it is created "
            "if missing)"
        )
    targets = {name: directory / name for name in files}
    for target in targets.values():
        if target.is_dir():
            raise ImageError(f"'{target}' is a directory; remove it or choose another out")
        if not force and (target.exists() or target.is_symlink()):
            raise exists_error(target)
    created: list[Path] = []
    moves: list[tuple[Path, Path]] = []
    with all_or_nothing(created) as (staged, placed):
        prepare_directory(directory, into=created)
        remove_stale_temporaries(directory)
        for name, data in files.items():
            moves.append((stage(directory, targets[name], data, staged), targets[name]))
        for temporary, target in moves:
            move_into_place(temporary, target, force, placed)
    return {os.path.splitext(name)[0]: path for name, path in targets.items()}
