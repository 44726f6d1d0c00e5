"""The honest survival check: real transforms (Pillow) on the 8-bit adversarial image.

The attack's EOT gradient uses differentiable stand-ins (kornia's JPEG...); this check does not
trust them. Each image is rounded to 8 bits as its PNG holds it, put through every real transform
of :meth:`TransformChain.grid` (Pillow's JPEG encoder at each quality, Pillow resizes, crops...),
read back as a user's program would read the file, and classified again.

A row *meets the goal* when the target is the top-1 (untargeted: the true class is not): the
attack's confidence (p >= 99 %) is what it aims for on the PNG, survival asks the class a person
would be shown. An image *survives* when the goal is met on the PNG and on every grid point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trompe.attacks.goal import Goal
from trompe.errors import InvalidArgumentError
from trompe.images import load_image, quantize, to_pil
from trompe.models.classifier import Classifier

__all__ = ["Survival", "SurvivalRow", "check_survival"]


@dataclass(frozen=True)
class SurvivalRow:
    """One image under one real transform.

    Attributes:
        name: the transform (``"jpeg"``); ``"png"`` for the lossless image as saved.
        setting: for people (``"quality 75"``; ``"as saved"``).
        met: whether the goal is met (target top-1; untargeted: the true class not top-1).
        goal_prob: the probability of the goal class (the target, or the true class).
        top1: ``(index, label, prob)`` of the top class.
    """

    name: str
    setting: str
    met: bool
    goal_prob: float
    top1: tuple[int, str, float]

    def to_json(self) -> dict[str, Any]:
        index, label, prob = self.top1
        return {
            "name": self.name,
            "setting": self.setting,
            "met": self.met,
            "goal_prob": self.goal_prob,
            "top1": {"index": index, "label": label, "prob": prob},
        }


@dataclass(frozen=True)
class Survival:
    """How images fare under a grid of real transforms (one row per grid point and image).

    Attributes:
        spec: the transforms' canonical spec text.
        targeted: whether the goal is a target class.
        goal_classes: per image, the target (or the true class).
        goal_labels: their names.
        rows: per image, the PNG row then one row per grid point.
    """

    spec: str
    targeted: bool
    goal_classes: tuple[int, ...]
    goal_labels: tuple[str, ...]
    rows: tuple[tuple[SurvivalRow, ...], ...]

    def __len__(self) -> int:
        return len(self.rows)

    def survived(self, index: int = 0) -> bool:
        """Whether image ``index`` meets the goal on the PNG and on every grid point."""
        return all(row.met for row in self._rows(index))

    def rate(self, index: int = 0) -> float:
        """The share of rows (the PNG and the grid points) where image ``index`` meets the goal."""
        rows = self._rows(index)
        return sum(row.met for row in rows) / len(rows)

    def _rows(self, index: int) -> tuple[SurvivalRow, ...]:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise InvalidArgumentError(
                f"index must be an image of the check, 0 to {len(self) - 1}, got {index!r}"
            )
        return self.rows[index]

    def to_json(self, index: int = 0) -> dict[str, Any]:
        """The check of image ``index``, JSON-ready, for result.json.

        Keys: ``transforms`` (the spec), ``goal`` (``{"targeted", "class", "class_name"}``),
        ``rows`` (``[{"name", "setting", "met", "goal_prob", "top1": {"index", "label",
        "prob"}}]``, the PNG first), ``survived`` (met on every row) and ``rate`` (the share
        of rows met).
        """
        rows = self._rows(index)
        return {
            "transforms": self.spec,
            "goal": {
                "targeted": self.targeted,
                "class": self.goal_classes[index],
                "class_name": self.goal_labels[index],
            },
            "rows": [row.to_json() for row in rows],
            "survived": self.survived(index),
            "rate": self.rate(index),
        }


def check_survival(model: Classifier, images: torch.Tensor, goal: Goal, chain: Any) -> Survival:
    """Put each 8-bit image through every real transform of ``chain.grid()``, classify again,
    and judge the goal on each.

    Args:
        model: the classifier (the one attacked, or any other).
        images: (B, 3, H, W) or (3, H, W) in [0, 1]; rounded to 8 bits first, as saved.
        goal: the attack's goal; its confidence is not asked here (the top-1 is).
        chain: a :class:`~trompe.transforms.TransformChain` or its spec text.

    Returns:
        The :class:`Survival` table.

    Raises:
        InvalidArgumentError: a bad spec, or a goal for another number of images.
    """
    from trompe.transforms import parse_transforms

    chain = parse_transforms(chain)
    if images.dim() == 3:
        images = images[None]
    if len(goal) != len(images):
        raise InvalidArgumentError(
            f"the goal is for {len(goal)} image(s), the check got {len(images)}"
        )
    top1_goal = type(goal)(goal.classes.cpu(), None)
    grid = chain.grid()
    labels = model.labels
    table: list[tuple[SurvivalRow, ...]] = []
    for i, image in enumerate(images.detach().float().cpu()):
        saved = quantize(image)
        picture = to_pil(saved)
        views = [saved] + [load_image(point.apply(picture)) for point in grid]
        names = [("png", "as saved")] + [(point.name, point.setting) for point in grid]
        wanted = top1_goal.subset(torch.tensor([i]))
        rows = []
        for view, (name, setting) in zip(views, names, strict=True):
            with torch.no_grad():
                logits = model(view[None].to(model.device)).float().cpu()
            probs = logits.softmax(dim=-1)[0]
            top = int(probs.argmax())
            goal_class = int(wanted.classes[0])
            rows.append(
                SurvivalRow(
                    name=name,
                    setting=setting,
                    met=bool(wanted.met(logits)[0]),
                    goal_prob=float(probs[goal_class]),
                    top1=(top, labels[top], float(probs[top])),
                )
            )
        table.append(tuple(rows))
    classes = tuple(int(c) for c in goal.classes.tolist())
    return Survival(
        spec=str(chain),
        targeted=bool(goal.targeted),
        goal_classes=classes,
        goal_labels=tuple(labels[c] for c in classes),
        rows=tuple(table),
    )
