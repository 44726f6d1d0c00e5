"""How well a patch works on photos it was not learnt on: success over random placements,
measured on 8-bit images, next to a random-noise patch of the same size.

The check pastes the saved (8-bit) patch upright, at the learnt size, at ``placements``
random places on the 8-bit model-size crop of each held-out photo (:func:`apply_patch`, the
pasting of ``trompe apply``), and counts the placements where the model's top-1 class is the
target. The same places get a patch of uniform random noise of the same size: what covering
that much of the photo does without the learnt pattern, so that a user sees it is the patch.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trompe._version import __version__
from trompe.attacks.patch import apply_patch, patch_box, side_of
from trompe.errors import TrompeError
from trompe.images import load_image, png_bytes, quantize
from trompe.models.classifier import Classifier

__all__ = [
    "DEFAULT_PLACEMENTS",
    "PatchEvaluation",
    "PatchResult",
    "PhotoScore",
    "Scene",
    "evaluate_patch",
]

#: Random placements per held-out photo.
DEFAULT_PLACEMENTS = 20
#: Scenes shown in the report.
_SCENES = 4


@dataclass(frozen=True)
class PhotoScore:
    """One held-out photo: its clean top-1 and how many placements made the model see the
    target, with the learnt patch and with the noise patch."""

    name: str
    clean_top1: int
    clean_label: str
    hits: int
    noise_hits: int
    placements: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clean_top1": {"index": self.clean_top1, "label": self.clean_label},
            "success_rate": self.hits / self.placements,
            "noise_success_rate": self.noise_hits / self.placements,
            "placements": self.placements,
        }


@dataclass(frozen=True)
class Scene:
    """A held-out photo with the patch (8-bit, model size) and what the model says of it."""

    name: str
    image: torch.Tensor
    where: tuple[float, float, float]
    top1: int
    label: str
    prob: float
    target_prob: float
    success: bool


@dataclass(frozen=True)
class PatchEvaluation:
    """The held-out check: per photo scores and a few scenes for the report."""

    photos: list[PhotoScore]
    scenes: list[Scene]
    placements: int

    @property
    def success_rate(self) -> float:
        """The share of all (photo, placement) pairs where the model sees the target."""
        total = sum(p.placements for p in self.photos)
        return sum(p.hits for p in self.photos) / total if total else math.nan

    @property
    def noise_success_rate(self) -> float:
        """The same with the noise patch (the baseline)."""
        total = sum(p.placements for p in self.photos)
        return sum(p.noise_hits for p in self.photos) / total if total else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "placements_per_photo": self.placements,
            "success_rate": self.success_rate,
            "noise_success_rate": self.noise_success_rate,
            "measured_on": "8-bit images: the saved patch pasted upright at the learnt size at "
            "random places on the 8-bit model-size crop of each held-out photo; the baseline is "
            "a uniform-noise patch of the same size at the same places",
            "photos": [p.to_json() for p in self.photos],
        }


def evaluate_patch(
    model: Classifier,
    patch: torch.Tensor,
    photos: torch.Tensor,
    names: Sequence[str],
    target: int,
    *,
    size: float,
    placements: int = DEFAULT_PLACEMENTS,
    seed: int = 0,
    batch_size: int = 32,
) -> PatchEvaluation:
    """Success of ``patch`` (and of a noise patch) over random placements on each photo.

    Args:
        model: the classifier.
        patch: (3, P, P), the 8-bit patch (as saved).
        photos: (N, 3, H, W) 8-bit photos at the model's input size.
        names: their names.
        target: the target class.
        size: the patch's area fraction (its side is ``sqrt(size)`` of the shorter side).
        placements: random places per photo.
        seed: the random seed of the places and of the noise.
        batch_size: images per forward pass.

    Returns:
        The scores; the first scenes (one placement of each of the first photos) for the report.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    height, width = int(photos.shape[-2]), int(photos.shape[-1])
    scale = side_of(size)
    _, _, side = patch_box(height, width, (0.5, 0.5, scale))
    noise = quantize(torch.rand(3, side, side, generator=generator))
    half_x, half_y = side / 2 / width, side / 2 / height
    labels = model.labels
    device = model.device
    scores: list[PhotoScore] = []
    scenes: list[Scene] = []
    with torch.no_grad():
        clean = model(photos.to(device, torch.float32)).argmax(-1).cpu()
        for index, name in enumerate(names):
            photo = photos[index].float().cpu()
            xs = half_x + (1 - 2 * half_x) * torch.rand(placements, generator=generator)
            ys = half_y + (1 - 2 * half_y) * torch.rand(placements, generator=generator)
            wheres = [(float(x), float(y), scale) for x, y in zip(xs, ys, strict=True)]
            with_patch = torch.stack([apply_patch(patch, photo, w, size=size) for w in wheres])
            with_noise = torch.stack([apply_patch(noise, photo, w, size=size) for w in wheres])
            probs = _probs(model, with_patch, batch_size)
            noise_probs = _probs(model, with_noise, batch_size)
            top = probs.argmax(-1)
            scores.append(
                PhotoScore(
                    name=name,
                    clean_top1=int(clean[index]),
                    clean_label=str(labels[int(clean[index])]),
                    hits=int((top == target).sum()),
                    noise_hits=int((noise_probs.argmax(-1) == target).sum()),
                    placements=placements,
                )
            )
            if len(scenes) < _SCENES:
                top1 = int(top[0])
                scenes.append(
                    Scene(
                        name=name,
                        image=with_patch[0],
                        where=wheres[0],
                        top1=top1,
                        label=str(labels[top1]),
                        prob=float(probs[0, top1]),
                        target_prob=float(probs[0, target]),
                        success=top1 == target,
                    )
                )
    return PatchEvaluation(photos=scores, scenes=scenes, placements=placements)


def _probs(model: Classifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = model.device
    return torch.cat(
        [
            model(images[i : i + batch_size].to(device)).float().softmax(-1).cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )


@dataclass(frozen=True)
class PatchResult:
    """A learnt patch and how it fared on held-out photos; :meth:`save` writes its files.

    Attributes:
        patch: (3, P, P), the 8-bit patch (what ``patch.png`` holds).
        model: the model's name.
        target: the target class index.
        target_label: its name.
        size: the patch's area as a fraction of the image the model sees.
        evaluation: the held-out check.
        parameters: the learning's settings (steps, batch size, step size, seed...).
        train: the names of the photos it was learnt on.
        seconds: the learning's wall time.
    """

    patch: torch.Tensor
    model: str
    target: int
    target_label: str
    size: float
    evaluation: PatchEvaluation
    parameters: Mapping[str, Any] = field(default_factory=dict)
    train: Sequence[str] = ()
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        """Held-out success over random placements (:class:`PatchEvaluation`)."""
        return self.evaluation.success_rate

    @property
    def noise_success_rate(self) -> float:
        """The same for the noise patch."""
        return self.evaluation.noise_success_rate

    def metadata(self) -> dict[str, str]:
        """The PNG tEXt chunk by which ``trompe apply`` recognises the patch."""
        return {
            "trompe": json.dumps(
                {
                    "kind": "patch",
                    "model": self.model,
                    "target": self.target_label,
                    "target_index": self.target,
                    "size": self.size,
                }
            )
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON record (``result.json``)."""
        return {
            "kind": "patch",
            "trompe_version": __version__,
            "torch_version": torch.__version__,
            "model": self.model,
            "target": {"index": self.target, "label": self.target_label},
            "size": self.size,
            "scale": side_of(self.size),
            "patch_side": int(self.patch.shape[-1]),
            "parameters": dict(self.parameters),
            "seconds": round(self.seconds, 3),
            "train": list(self.train),
            "holdout": self.evaluation.to_json(),
        }

    def save(self, out: str | os.PathLike[str], *, force: bool = False) -> dict[str, Path]:
        """Write ``patch.png`` (printable, with metadata), ``report.png`` and ``result.json``
        into ``out``, all or nothing; never overwrite without ``force``.

        Raises:
            OutputExistsError: a file exists and ``force`` is false (nothing is written).
            ImageError: ``out`` cannot be created or written.
            TrompeError: the patch PNG does not read back as the patch (a bug).
        """
        from PIL import Image

        from trompe.report.patch import render_patch_report, write_files

        data = png_bytes(self.patch, self.metadata())
        with Image.open(io.BytesIO(data), formats=("PNG",)) as opened:
            read_back = load_image(opened.convert("RGB"))
        if not torch.equal(read_back, quantize(self.patch.float())):
            raise TrompeError("the patch PNG does not read back as the patch (please report)")
        evaluation = self.evaluation
        report = render_patch_report(
            self.patch,
            [
                (s.image, s.name, s.label, s.prob, s.target_prob, s.success)
                for s in evaluation.scenes
            ],
            target_label=self.target_label,
            model=self.model,
            size=self.size,
            success_rate=evaluation.success_rate,
            noise_rate=evaluation.noise_success_rate,
            photos=len(evaluation.photos),
            placements=evaluation.placements,
        )
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        return write_files(
            Path(out),
            {"patch.png": data, "report.png": report, "result.json": text.encode("utf-8")},
            force=force,
        )
