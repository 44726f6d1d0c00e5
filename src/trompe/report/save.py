"""Saving a result: PNGs, the report figure and the JSON record, all or nothing, checked."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
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
from trompe.errors import ImageError, InvalidArgumentError, TrompeError
from trompe.images import DEFAULT_MAX_PIXELS, load_image, quantize, to_pil
from trompe.metrics import measure
from trompe.report._types import ResultLike
from trompe.report.figure import _png_bytes, _render
from trompe.report.perturbation import _perturbation_levels
from trompe.report.record import _check_extra, _summary

if TYPE_CHECKING:
    from trompe.models import Classifier

__all__ = ["save_result"]


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
    model: Classifier, result: ResultLike, index: int, image: torch.Tensor
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


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links, ``..`` or another spelling)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):  # unreadable, or a link loop: compare as written
        return os.path.abspath(a) == os.path.abspath(b)


def save_result(
    result: ResultLike,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    model: Classifier | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write a result's files into ``out_dir``, all or nothing, and check the saved PNG.

    For one image: ``adversarial.png`` (the 8-bit adversarial image, lossless),
    ``perturbation.png`` (:func:`perturbation_image`, x10), ``report.png``
    (:func:`render_report`; with a survival check, its panel below:
    :func:`trompe.report.survival.render_survival`) and ``result.json``
    (:func:`result_summary`). For a batch of B > 1:
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
        InvalidArgumentError: one of the files is an image the result was made from
            (``result.sources``, which :func:`trompe.attack` fills): not even ``force``
            overwrites an input.
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
    sources = [Path(source) for source in getattr(result, "sources", ()) if source is not None]
    for target in targets:
        if target.is_dir():
            raise ImageError(f"'{target}' is a directory; remove it or choose another out_dir")
        for source in sources:
            if _same_file(source, target):
                raise InvalidArgumentError(
                    f"'{target}' is the image this result was made from ('{source}'); an input "
                    "is never overwritten, force or not: choose another out_dir"
                )
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

    created_dirs: list[Path] = []
    paths: dict[str, Path] = {}
    summaries: list[dict[str, Any]] = []
    moves: list[tuple[Path, Path]] = []
    with all_or_nothing(created_dirs) as (staged, placed):
        prepare_directory(directory, into=created_dirs)
        remove_stale_temporaries(directory)
        for index, image_names in enumerate(names):
            adversarial = quantize(result.adversarial[index].detach().float().cpu())
            adversarial_path = directory / image_names["adversarial"]
            temporary = stage(directory, adversarial_path, _encode_png(adversarial), staged)
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
                staged,
            )
            moves.append((temporary, perturbation_path))

            report_path = directory / image_names["report"]
            figure = _render(result, index, 5, norms=norms, verified=verified)
            report = _png_bytes(figure)
            survival = getattr(result, "survival", None)
            if survival is not None:
                # The survival panel under the report: the PNG after real JPEG, resizing...
                from trompe.report.survival import stack_png, survival_png_bytes

                panel = survival_png_bytes(read_back, survival.to_json(index))
                report = stack_png(report, panel)
            temporary = stage(directory, report_path, report, staged)
            moves.append((temporary, report_path))

            summaries.append(_summary(result, index, extra=extra, norms=norms, verified=verified))
            suffix = "" if batch == 1 else f"-{index}"
            paths[f"adversarial{suffix}"] = adversarial_path
            paths[f"perturbation{suffix}"] = perturbation_path
            paths[f"report{suffix}"] = report_path

        record: Any = summaries[0] if batch == 1 else summaries
        text = json.dumps(record, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        temporary = stage(directory, json_path, text.encode("utf-8"), staged)
        moves.append((temporary, json_path))
        paths["json"] = json_path

        for temporary, target in moves:
            move_into_place(temporary, target, force, placed)
    return paths
