"""The result of an attack: adversarial images and everything needed to trust and reproduce them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trompe.attacks.goal import Goal
from trompe.labels import Labels
from trompe.metrics import Norms, measure

__all__ = ["AttackResult", "Norms", "measure"]


@dataclass(frozen=True, eq=False)
class AttackResult:
    """What an attack returns; ``success`` is measured on ``adversarial`` as it is (8-bit).

    Attributes:
        original: the images attacked, (B, 3, H, W) in [0, 1].
        adversarial: the adversarial images, (B, 3, H, W), on the 8-bit grid when the attack
            rounds (the default), so that saving them as PNG changes nothing.
        goal: what was asked, per image.
        success: (B,) bool: the goal holds for the model on ``adversarial``.
        probs_before: (B, C) softmax of the model on ``original``.
        probs_after: (B, C) softmax of the model on ``adversarial``.
        norms: size of the change, in 0-255 units, measured on 8-bit values.
        steps: (B,) iterations each image took before it stopped.
        forwards: (B,) model evaluations spent on each image (forward passes, gradients or
            not), the engine's evaluation before and after the attack included.
        gradients: (B,) gradient computations (backward passes) spent on each image.
        queries: (B,) model evaluations that the attack itself asked for (``forwards`` without
            the engine's two): the query count of black-box attacks.
        seconds: wall-clock time of the whole attack.
        attack: the attack's registry name.
        params: the attack's hyper-parameters (eps in [0, 1] units as the library takes it).
        model: the classifier's name.
        labels: the classifier's class names, for display.
        device: where the attack ran (``"cpu"``, ``"cuda:0"``); the tensors here are on the CPU.
        model_info: the classifier as :meth:`~trompe.models.Classifier.describe` gives it
            (source, class count, access, effective preprocessing, overrides), for result.json.
        sources: per image, the file it was read from, where known (:func:`trompe.attack`
            records the path it is given); :meth:`save` never writes onto one, even with
            ``force``.
        survival: how the 8-bit adversarial images fare under real transformations (JPEG,
            resizes...), where asked (:func:`trompe.attack` with ``survive``): a
            :class:`~trompe.evaluation.survival.Survival`.
        transfer: what held-out models see in the adversarial images, where asked
            (``transfer_to``): a :class:`~trompe.evaluation.transfer.Transfer`.
    """

    original: torch.Tensor
    adversarial: torch.Tensor
    goal: Goal
    success: torch.Tensor
    probs_before: torch.Tensor
    probs_after: torch.Tensor
    norms: Norms
    steps: torch.Tensor
    forwards: torch.Tensor
    gradients: torch.Tensor
    queries: torch.Tensor
    seconds: float
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    labels: Labels | None = None
    device: str | None = None
    model_info: dict[str, Any] | None = None
    sources: tuple[Path | None, ...] = ()
    survival: Any = None
    transfer: Any = None

    def __len__(self) -> int:
        return int(self.adversarial.shape[0])

    @property
    def norm(self) -> str:
        """The attack's threat model (``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``)."""
        return str(self.params.get("norm", "linf"))

    @property
    def distances(self) -> torch.Tensor:
        """Per image, the size of the change in the attack's norm (0-255 units; L0: pixels),
        ``inf`` where the goal is not met: what minimum-norm attacks report."""
        value = self.norms.of(self.norm).clone()
        value[~self.success] = math.inf
        return value

    @property
    def success_rate(self) -> float:
        """Fraction of the images whose goal is met."""
        return float(self.success.float().mean()) if len(self) else 0.0

    def top(self, k: int = 5, *, after: bool = True) -> list[list[tuple[int, str, float]]]:
        """The top ``k`` (index, name, probability) per image, after or before the attack."""
        probs = self.probs_after if after else self.probs_before
        values, indices = probs.topk(k, dim=1)
        names = self.labels
        return [
            [
                (int(i), names[int(i)] if names is not None else f"class {int(i)}", float(p))
                for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)
            ]
            for row_p, row_i in zip(values, indices, strict=True)
        ]

    def class_prob(self, index: int, image: int = 0, *, after: bool = True) -> float:
        """The probability of one class for one image, after or before the attack."""
        probs = self.probs_after if after else self.probs_before
        return float(probs[image, index])

    def save(self, out_dir: str | Path, *, force: bool = False) -> dict[str, Path]:
        """Write the adversarial PNG, the amplified perturbation, the report and the JSON.

        See :func:`trompe.report.save_result`; a file in :attr:`sources` is never overwritten,
        even with ``force``.
        """
        from trompe.report import save_result

        return save_result(self, out_dir, force=force)

    def _repr_png_(self) -> bytes:
        """Jupyter shows a result as its report picture."""
        from trompe.report import report_png_bytes

        return report_png_bytes(self)
