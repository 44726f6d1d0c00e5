"""What an attack is after, per image: a target class, or anything but the true class."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trompe.errors import InvalidArgumentError

__all__ = ["DEFAULT_TARGET_CONFIDENCE", "Goal", "Targeted", "Untargeted"]

#: The probability that ``trompe attack --target`` and :func:`trompe.attack` aim for by default:
#: the demos' "this cat is a lemon, 99 %", not a bare change of the top-1.
DEFAULT_TARGET_CONFIDENCE = 0.99


def _classes(values: torch.Tensor | int | list[int], what: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.dim() == 0:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 1 or tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise InvalidArgumentError(
            f"{what} must be class indices, one integer per image; got {tuple(tensor.shape)} "
            f"of {tensor.dtype}"
        )
    return tensor.long()


@dataclass(frozen=True)
class Goal:
    """Base of :class:`Targeted` and :class:`Untargeted`.

    Attributes:
        classes: one class index per image: the target, or the true class to move away from.
        confidence: if set, the probability that the wanted top-1 class must also reach.
    """

    classes: torch.Tensor
    confidence: float | None = None

    targeted = False

    def __post_init__(self) -> None:
        if self.confidence is not None and not 0.0 < self.confidence < 1.0:
            raise InvalidArgumentError(
                f"confidence must be a probability in (0, 1), got {self.confidence}"
            )

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def subset(self, index: torch.Tensor) -> Goal:
        """The goal of some images of the batch only."""
        return type(self)(self.classes[index.to(self.classes.device)], self.confidence)

    def to(self, device: torch.device) -> Goal:
        return type(self)(self.classes.to(device), self.confidence)

    def margin(self, logits: torch.Tensor) -> torch.Tensor:
        """How far each image is past its goal (> 0: met); in log-probability units.

        For a targeted goal this is the lead of the target's logit over the best other class,
        and, with a confidence, at most ``log p(target) - log confidence``. For an untargeted
        goal it is the lead of the best other class over the true class, and, with a
        confidence, at most ``log p(best other) - log confidence``. Differentiable: the
        optimisation attacks use it as their loss.

        Shape:
            - Input: (B, C) logits.
            - Output: (B,).
        """
        classes = self.classes.to(logits.device)
        own = logits.gather(1, classes[:, None]).squeeze(1)
        others = logits.scatter(1, classes[:, None], float("-inf")).amax(dim=1)
        if self.targeted:
            lead = own - others
            wanted = own
        else:
            lead = others - own
            wanted = others
        if self.confidence is None:
            return lead
        log_prob = wanted - logits.logsumexp(dim=1)
        return torch.minimum(lead, log_prob - math.log(self.confidence))

    def met(self, logits: torch.Tensor) -> torch.Tensor:
        """Whether each image meets the goal. Shape: (B, C) -> (B,) bool."""
        return self.margin(logits) > 0

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """The per-image cross-entropy objective that gradient attacks ascend.

        Targeted: the log-probability of the target; untargeted: the cross-entropy of the
        true class. Shape: (B, C) -> (B,).
        """
        ce = F.cross_entropy(logits, self.classes.to(logits.device), reduction="none")
        return -ce if self.targeted else ce


@dataclass(frozen=True)
class Targeted(Goal):
    """Make the model predict ``classes[i]`` for image ``i`` (optionally with ``confidence``).

    Example:
        >>> Targeted(951, confidence=0.99)  # lemon, 99 %          # doctest: +ELLIPSIS
        Targeted(classes=tensor([951]), confidence=0.99)
    """

    targeted = True

    def __init__(
        self, classes: torch.Tensor | int | list[int], confidence: float | None = None
    ) -> None:
        object.__setattr__(self, "classes", _classes(classes, "targets"))
        object.__setattr__(self, "confidence", confidence)
        self.__post_init__()


@dataclass(frozen=True)
class Untargeted(Goal):
    """Make the model predict anything but ``classes[i]``, the true class of image ``i``."""

    targeted = False

    def __init__(
        self, classes: torch.Tensor | int | list[int], confidence: float | None = None
    ) -> None:
        object.__setattr__(self, "classes", _classes(classes, "labels"))
        object.__setattr__(self, "confidence", confidence)
        self.__post_init__()
