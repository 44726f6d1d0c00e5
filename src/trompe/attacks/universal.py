"""One perturbation for many photos: a universal adversarial perturbation (UAP), SGD form.

Moosavi-Dezfooli et al. ("Universal adversarial perturbations", CVPR 2017, arXiv:1610.08401)
showed that a single small image-agnostic change fools a classifier on most natural photos.
Their algorithm chains DeepFool runs; the stochastic form used here is that of Shafahi et al.,
"Universal Adversarial Training" (AAAI 2020, arXiv:1811.11304; also Mummadi et al., "Defending
Against Universal Perturbations With Shared Adversarial Training", ICCV 2019, arXiv:1812.03705):
minibatches of photos, a clamped cross-entropy so that photos already fooled stop pulling the
perturbation, a signed-gradient step on the perturbation, a projection onto the L-inf ball.
Threat model: L-inf, white box (gradients), one ``delta`` for every photo.

How the perturbation meets a photo (the same in training, in measurement and in
``trompe apply``): ``delta`` lives at the model's input resolution (h, w); for a photo of size
(H, W) it is resized bilinearly to (H, W) (antialiased when it shrinks), added, clamped to
[0, 1] and rounded to 8 bits (:func:`apply_universal`). The photo then goes through the
model's own crop and resize. Training runs through exactly this path (without the rounding,
which has no gradient), so the fooling rates measured on the 8-bit photos are those a user gets
from ``trompe apply`` on full-size photos. Bilinear resizing is a convex combination, so the
resized ``delta`` stays within ``eps``; ``delta`` is kept on whole 8-bit levels, so the rounded
photo is within ``eps`` of the clean one too.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = [
    "MAX_EPS_255",
    "FoolingRate",
    "UniversalProgress",
    "UniversalProgressCallback",
    "UniversalRun",
    "apply_universal",
    "check_universal_eps",
    "fooling_rate",
    "learn_universal",
    "noise_perturbation",
    "resize_delta",
]

#: The largest budget in 0-255 levels: the PNG stores ``128 + delta`` in one byte.
MAX_EPS_255 = 127

#: Targeted loss floor: a photo whose target probability passes exp(-0.1) = 90 % stops pulling.
TARGET_FLOOR = 0.1

#: The side of ``delta`` for a model that takes any size.
DEFAULT_SIDE = 224


@dataclass(frozen=True)
class UniversalProgress:
    """What :func:`learn_universal` reports after each epoch.

    Attributes:
        epoch: epochs done.
        epochs: the most epochs.
        fooling_rate: the training fooling rate of this epoch's perturbation (8-bit photos).
        best: the best training fooling rate so far (the perturbation kept).
    """

    epoch: int
    epochs: int
    fooling_rate: float
    best: float


UniversalProgressCallback = Callable[[UniversalProgress], None]


@dataclass(frozen=True)
class FoolingRate:
    """How a perturbation fares on a set of photos, measured on the 8-bit applied photos.

    Attributes:
        rate: untargeted: the share of photos whose top-1 changed from the clean top-1;
            targeted: the share whose top-1 is the target.
        fooled: per photo, whether it counts as fooled.
        before: the clean top-1 class of each photo.
        after: the top-1 class of each photo with the perturbation.
        after_prob: the probability of that class.
    """

    rate: float
    fooled: list[bool]
    before: list[int]
    after: list[int]
    after_prob: list[float]


@dataclass(frozen=True)
class UniversalRun:
    """What :func:`learn_universal` returns.

    Attributes:
        delta: the perturbation, (3, h, w), on whole 8-bit levels (``k / 255``), within eps.
        history: the training fooling rate after each epoch.
        epochs: epochs run (fewer than asked after an early stop).
        steps: signed-gradient steps taken.
        seconds: wall time.
    """

    delta: torch.Tensor
    history: list[float] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0


def check_universal_eps(eps: float) -> int:
    """The budget ``eps`` ([0, 1] units) as whole 0-255 levels, from 1 to :data:`MAX_EPS_255`.

    ``delta`` is stored as whole levels, so a fractional budget is rounded down (10.5 / 255
    gives 10 levels).

    Raises:
        InvalidArgumentError: not a finite number, or outside [1, 127] levels.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        raise InvalidArgumentError(f"eps must be a finite number, got {eps!r}")
    levels = math.floor(float(eps) * 255 + 1e-6)
    if not 1 <= levels <= MAX_EPS_255:
        raise InvalidArgumentError(
            f"eps must be from 1 to {MAX_EPS_255} levels (1/255 to {MAX_EPS_255}/255), got "
            f"{float(eps) * 255:g} levels"
        )
    return levels


def delta_size(clf: Classifier) -> tuple[int, int]:
    """The resolution of ``delta`` for ``clf``: its input size (224 x 224 without one)."""
    if clf.input_size is None:
        return (DEFAULT_SIDE, DEFAULT_SIDE)
    return (int(clf.input_size[0]), int(clf.input_size[1]))


def resize_delta(delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``delta`` (3, h, w) resized bilinearly to ``size`` (antialiased when it shrinks);
    differentiable. Bilinear weights are non-negative and sum to one, so the result stays
    within the L-inf ball that ``delta`` is in."""
    if tuple(delta.shape[-2:]) == tuple(size):
        return delta
    shrink = size[0] < delta.shape[-2] or size[1] < delta.shape[-1]
    return F.interpolate(
        delta[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]


def _check_delta(delta: torch.Tensor) -> None:
    if (
        not isinstance(delta, torch.Tensor)
        or delta.dim() != 3
        or delta.shape[0] != 3
        or not delta.is_floating_point()
        or delta.shape[1] == 0
        or delta.shape[2] == 0
    ):
        shape = tuple(delta.shape) if isinstance(delta, torch.Tensor) else type(delta).__name__
        raise InvalidArgumentError(f"a perturbation is a float tensor (3, h, w), got {shape}")
    if not bool(torch.isfinite(delta).all()):
        raise InvalidArgumentError("the perturbation holds NaN or infinite values")


def _applied(delta: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """``photo`` (3, H, W) plus ``delta`` resized to it, clamped; differentiable, not rounded."""
    size = (int(photo.shape[-2]), int(photo.shape[-1]))
    return (photo + resize_delta(delta.to(photo.dtype), size)).clamp(0.0, 1.0)


def apply_universal(delta: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply a universal perturbation to a photo: resize, add, clamp, round to 8 bits.

    Args:
        delta: the perturbation, in [0, 1] units, at any resolution.
        image: one photo in [0, 1], of any size.

    Returns:
        The perturbed photo on the 8-bit grid (what a PNG of it holds), on ``image``'s device.

    Raises:
        InvalidArgumentError: ``delta`` or ``image`` is not a float (3, h, w) tensor.

    Shape:
        - delta: (3, h, w); image: (3, H, W); output: (3, H, W).

    Example:
        >>> delta = torch.full((3, 4, 4), 2 / 255)
        >>> apply_universal(delta, torch.zeros(3, 8, 6)).mul(255).unique()
        tensor([2.])
    """
    _check_delta(delta)
    if (
        not isinstance(image, torch.Tensor)
        or image.dim() != 3
        or image.shape[0] != 3
        or not image.is_floating_point()
    ):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidArgumentError(f"apply_universal takes one float image (3, H, W), got {shape}")
    with torch.no_grad():
        return quantize(_applied(delta.to(image.device), image))


def noise_perturbation(
    eps_255: int, size: tuple[int, int], *, seed: int = 0, device: torch.device | None = None
) -> torch.Tensor:
    """The baseline: random signs, ``+-eps`` on every pixel and channel (the corners of the
    L-inf ball, the strongest noise of that budget), seeded."""
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (3, *size), generator=generator).float() * 2 - 1
    return (signs * eps_255 / 255).to(device or torch.device("cpu"))


@torch.no_grad()
def _top1(clf: Classifier, photos: Sequence[torch.Tensor], chunk: int = 16) -> torch.Tensor:
    """Top-1 class and its probability for photos of any sizes: (N, 2) [class, prob]."""
    rows = []
    for start in range(0, len(photos), chunk):
        batch = torch.cat(
            [clf.preprocess(p[None].to(clf.device)) for p in photos[start : start + chunk]]
        )
        probs = clf(batch).float().softmax(dim=-1)
        prob, index = probs.max(dim=-1)
        rows.append(torch.stack([index.float(), prob], dim=1).cpu())
    return torch.cat(rows)


def clean_top1(clf: Classifier, photos: Sequence[torch.Tensor]) -> list[int]:
    """The model's top-1 class of each clean photo."""
    return [int(c) for c in _top1(clf, photos)[:, 0].tolist()]


def fooling_rate(
    clf: Classifier,
    photos: Sequence[torch.Tensor],
    delta: torch.Tensor,
    before: Sequence[int],
    target: int | None = None,
) -> FoolingRate:
    """Apply ``delta`` to each photo with :func:`apply_universal` (8-bit) and classify.

    Args:
        clf: the model.
        photos: (3, H_i, W_i) photos in [0, 1].
        delta: the perturbation.
        before: the clean top-1 class of each photo.
        target: the target class, or None (untargeted).

    Returns:
        The :class:`FoolingRate` (untargeted: top-1 changed; targeted: top-1 is the target).
    """
    if not photos:
        raise InvalidArgumentError("no photos to measure the fooling rate on")
    applied = [apply_universal(delta.to(clf.device), p.to(clf.device)) for p in photos]
    top = _top1(clf, applied)
    after = [int(c) for c in top[:, 0].tolist()]
    fooled = [
        (a == target) if target is not None else (a != int(b))
        for a, b in zip(after, before, strict=True)
    ]
    return FoolingRate(
        rate=sum(fooled) / len(fooled),
        fooled=fooled,
        before=[int(b) for b in before],
        after=after,
        after_prob=[float(p) for p in top[:, 1].tolist()],
    )


def _loss(
    logits: torch.Tensor, classes: torch.Tensor, targeted: bool, clamp: float
) -> torch.Tensor:
    """The clamped cross-entropy to descend (Shafahi et al. 2020, section 3).

    Untargeted: ``-min(CE(clean top-1), clamp)``: a photo whose clean class is already below
    ``exp(-clamp)`` adds no gradient, so the fooled photos do not drown the others. Targeted:
    ``max(CE(target), TARGET_FLOOR)``: a photo whose target probability is above
    ``exp(-TARGET_FLOOR)`` (90 %) adds none.
    """
    ce = F.cross_entropy(logits.float(), classes, reduction="none")
    if targeted:
        return ce.clamp(min=TARGET_FLOOR).mean()
    return -ce.clamp(max=clamp).mean()


def learn_universal(
    clf: Classifier,
    photos: Sequence[torch.Tensor],
    *,
    eps: float,
    target: int | None = None,
    before: Sequence[int] | None = None,
    epochs: int = 20,
    batch_size: int = 8,
    step_size: float | None = None,
    clamp: float = 5.0,
    patience: int = 5,
    seed: int = 0,
    progress: UniversalProgressCallback | None = None,
) -> UniversalRun:
    """Learn one L-inf perturbation that fools ``clf`` on as many of ``photos`` as it can.

    Each epoch shuffles the photos (seeded) into minibatches; for each, the perturbed photos
    (``delta`` resized to each, added, clamped) go through the model's preprocessing, the
    clamped cross-entropy (:func:`_loss`) is computed, and ``delta`` takes a signed-gradient
    step of ``step_size`` and is projected onto ``[-eps, eps]``. After each epoch ``delta`` is
    rounded to whole levels and its fooling rate measured on the 8-bit training photos; the best
    rounded ``delta`` is kept, and training stops early when it has not improved for
    ``patience`` epochs or fools every photo.

    Args:
        clf: the model (gradients needed).
        photos: the training photos, (3, H_i, W_i) in [0, 1], of any sizes.
        eps: the L-inf budget in [0, 1] units (whole levels from 1 to 127 / 255).
        target: a class index to push every photo to; None pushes each away from its clean
            top-1.
        before: the clean top-1 of each photo (computed when None).
        epochs: the most passes over the photos.
        batch_size: photos per step.
        step_size: the signed step, [0, 1] units (default ``eps / 8``).
        clamp: the untargeted cross-entropy clamp of :func:`_loss`.
        patience: epochs without a better training fooling rate before stopping (0: never).
        seed: seeds the shuffling (and nothing else: the start is zero).
        progress: called after each epoch with a :class:`UniversalProgress`.

    Returns:
        The :class:`UniversalRun`.

    Raises:
        InvalidArgumentError: no photos, or a bad budget, count or step.
    """
    start = time.perf_counter()
    eps_255 = check_universal_eps(eps)
    bound = eps_255 / 255
    if not photos:
        raise InvalidArgumentError("no training photos")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(
                f"{name} must be a whole number of at least 1, got {value!r}"
            )
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise InvalidArgumentError(f"patience must be a whole number >= 0, got {patience!r}")
    step = bound / 8 if step_size is None else float(step_size)
    if not math.isfinite(step) or not 0 < step <= 1:
        raise InvalidArgumentError(f"step_size must be in (0, 1], got {step_size!r}")
    if not math.isfinite(clamp) or clamp <= 0:
        raise InvalidArgumentError(f"clamp must be a positive number, got {clamp!r}")
    if target is not None and not 0 <= int(target) < clf.num_classes:
        raise InvalidArgumentError(
            f"target must be a class index from 0 to {clf.num_classes - 1}, got {target}"
        )
    device = clf.device
    photos = [p.to(device, torch.float32) for p in photos]
    reference = list(before) if before is not None else clean_top1(clf, photos)
    goal = (
        torch.full((len(photos),), int(target), dtype=torch.long)
        if target is not None
        else torch.tensor(reference, dtype=torch.long)
    ).to(device)

    delta = torch.zeros(3, *delta_size(clf), device=device)
    best = delta.clone()
    best_rate = -1.0
    history: list[float] = []
    generator = torch.Generator().manual_seed(seed)
    steps = since_best = epoch = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(photos), generator=generator).tolist()
        for first in range(0, len(order), batch_size):
            index = order[first : first + batch_size]
            delta.requires_grad_(True)
            batch = torch.cat([clf.preprocess(_applied(delta, photos[i])[None]) for i in index])
            loss = _loss(clf(batch), goal[index], target is not None, clamp)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta = (delta.detach() - step * grad.sign()).clamp(-bound, bound)
            steps += 1
        rounded = (delta * 255).round().clamp(-eps_255, eps_255) / 255
        rate = fooling_rate(clf, photos, rounded, reference, target).rate
        history.append(rate)
        if rate > best_rate:
            best, best_rate, since_best = rounded.clone(), rate, 0
        else:
            since_best += 1
        if progress is not None:
            progress(UniversalProgress(epoch, epochs, rate, best_rate))
        if best_rate >= 1.0 or (patience and since_best >= patience):
            break
    return UniversalRun(
        delta=best.detach().cpu(),
        history=history,
        epochs=epoch,
        steps=steps,
        seconds=time.perf_counter() - start,
    )


def delta_levels(delta: torch.Tensor) -> torch.Tensor:
    """``delta`` as whole levels (int16), the values its PNG stores around 128."""
    return (delta.detach().float().cpu() * 255).round().to(torch.int16)


def describe(run: UniversalRun) -> dict[str, Any]:
    """The run's bookkeeping, JSON-ready."""
    return {
        "epochs_run": run.epochs,
        "steps": run.steps,
        "train_history": [round(r, 4) for r in run.history],
        "seconds": round(run.seconds, 2),
    }


# -- the result --------------------------------------------------------------------------------

#: The files :meth:`UniversalResult.save` writes.
OUTPUT_NAMES = ("perturbation.png", "perturbation.pt", "report.png", "result.json")

#: What a perturbation PNG stores: ``PNG_OFFSET + delta`` in whole levels.
PNG_OFFSET = 128


def perturbation_metadata(
    eps_255: int, model: str, target: int | None, target_label: str | None, size: Sequence[int]
) -> dict[str, Any]:
    """The ``trompe`` tEXt record of a perturbation PNG (and the fields of its ``.pt``)."""
    return {
        "kind": "universal",
        "eps_255": int(eps_255),
        "model": model,
        "target": None if target is None else int(target),
        "target_label": target_label,
        "offset": PNG_OFFSET,
        "size": [int(s) for s in size],
    }


def perturbation_png_image(delta: torch.Tensor) -> torch.Tensor:
    """The PNG's pixels: ``(128 + delta levels) / 255`` (mid-grey means no change)."""
    return ((delta_levels(delta) + PNG_OFFSET).clamp(0, 255).float() / 255).contiguous()


def delta_from_png_image(image: torch.Tensor, eps_255: int) -> torch.Tensor:
    """Invert :func:`perturbation_png_image`, refusing values outside ``+-eps_255``."""
    levels = (image * 255).round() - PNG_OFFSET
    if levels.abs().max() > eps_255:
        raise InvalidArgumentError(
            f"the perturbation PNG holds changes of up to {int(levels.abs().max())} levels, more "
            f"than its eps {eps_255}; the file was edited: make it again with trompe universal"
        )
    return levels / 255


@dataclass(frozen=True)
class UniversalResult:
    """A universal perturbation and how it fares, measured on the 8-bit perturbed photos.

    Attributes:
        delta: the perturbation (3, h, w) in [0, 1] units, on whole levels, within ``eps``.
        eps_255: the L-inf budget in levels.
        model: the model's name; ``model_info`` its description.
        target: the target class index (None: untargeted), ``target_label`` its name.
        train, holdout: the perturbation's :class:`FoolingRate` on the training and held-out
            photos; ``noise_train``, ``noise_holdout``: the same for random signs of ``eps``.
        train_names, holdout_names: the photos' names.
        labels: the model's class names (for the records).
        run: the training run.
        params: the settings (epochs, batch size, step size, seed, holdout...).
        examples: a few held-out photos before and after, for the figure.
        sources: files the photos came from (never overwritten by :meth:`save`).
    """

    delta: torch.Tensor
    eps_255: int
    model: str
    model_info: dict[str, Any]
    target: int | None
    target_label: str | None
    train: FoolingRate
    holdout: FoolingRate
    noise_train: FoolingRate
    noise_holdout: FoolingRate
    train_names: list[str]
    holdout_names: list[str]
    labels: Sequence[str]
    run: UniversalRun
    params: dict[str, Any]
    examples: list[Any] = field(default_factory=list)
    sources: tuple[str, ...] = ()

    @property
    def eps(self) -> float:
        """The budget in [0, 1] units."""
        return self.eps_255 / 255

    def metadata(self) -> dict[str, Any]:
        """The ``trompe`` record stored in perturbation.png and perturbation.pt."""
        return perturbation_metadata(
            self.eps_255, self.model, self.target, self.target_label, self.delta.shape[-2:]
        )

    def _photos(self, names: list[str], rate: FoolingRate) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "before": self.labels[before],
                "after": self.labels[after],
                "after_prob": round(prob, 4),
                "fooled": fooled,
            }
            for name, before, after, prob, fooled in zip(
                names, rate.before, rate.after, rate.after_prob, rate.fooled, strict=True
            )
        ]

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready record (what result.json holds)."""
        from trompe.report.record import _versions

        target = None if self.target is None else {"index": self.target, "label": self.target_label}
        record: dict[str, Any] = {
            "kind": "universal",
            "model": self.model,
            "model_info": self.model_info,
            "eps_255": self.eps_255,
            "target": target,
            "goal": "targeted: top-1 is the target"
            if target
            else "untargeted: top-1 differs from the clean photo's",
            "photos": {"train": len(self.train_names), "holdout": len(self.holdout_names)},
            "fooling_rate": {
                "train": round(self.train.rate, 4),
                "holdout": round(self.holdout.rate, 4),
                "noise_train": round(self.noise_train.rate, 4),
                "noise_holdout": round(self.noise_holdout.rate, 4),
            },
            "measured_on": "8-bit photos: photo + perturbation resized to it, clamped, rounded",
            "params": self.params,
            "run": describe(self.run),
            "perturbation": {
                "size": [int(s) for s in self.delta.shape[-2:]],
                "linf_255": int(delta_levels(self.delta).abs().max()),
                "png_offset": PNG_OFFSET,
            },
            "train_photos": self._photos(self.train_names, self.train),
            "holdout_photos": self._photos(self.holdout_names, self.holdout),
            "versions": _versions(),
        }
        if self.target is not None:
            clean = [b == self.target for b in self.holdout.before]
            record["fooling_rate"]["clean_holdout"] = round(sum(clean) / len(clean), 4)
        return record

    def files(self) -> dict[str, bytes]:
        """The bytes of the four files, each checked: the PNG and the tensor file read back as
        :attr:`delta`, bit for bit."""
        import io
        import json

        from PIL import Image

        from trompe.images import load_image, png_bytes
        from trompe.report.universal import universal_png_bytes

        meta = self.metadata()
        png = png_bytes(perturbation_png_image(self.delta), {"trompe": json.dumps(meta)})
        with Image.open(io.BytesIO(png), formats=("PNG",)) as opened:
            back = delta_from_png_image(load_image(opened), self.eps_255)
        if not torch.equal(back, delta_levels(self.delta).float() / 255):
            raise InvalidArgumentError(  # pragma: no cover (a bug)
                "the perturbation PNG does not read back as the perturbation; nothing was saved"
            )
        buffer = io.BytesIO()
        torch.save({"delta": self.delta.detach().float().cpu().clone(), **meta}, buffer)
        summary = self.to_json()
        report = universal_png_bytes(summary, self.delta, self.examples)
        text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        return {
            "perturbation.png": png,
            "perturbation.pt": buffer.getvalue(),
            "report.png": report,
            "result.json": text.encode("utf-8"),
        }

    def save(self, out: str | os.PathLike[str], *, force: bool = False) -> dict[str, Path]:
        """Write perturbation.png (``128 + delta`` levels, with the ``trompe`` tEXt record that
        ``trompe apply`` reads), perturbation.pt (``{"delta": tensor, **metadata}``, loadable
        with ``torch.load(..., weights_only=True)``), report.png and result.json into ``out``,
        all or nothing; never over an input photo, and over other files only with ``force``.

        Returns:
            ``{file name: path}``.
        """
        from trompe.report.universal import write_files

        return write_files(out, self.files(), force=force, inputs=self.sources)
