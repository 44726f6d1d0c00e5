"""What a black-box attack may ask of the model: its scores or its top-1 label, and nothing more.

The engine hands score-based and decision-based attacks an :class:`Oracle` instead of the
classifier. The oracle answers queries without gradients, counts every image it is asked about,
and at the ``labels`` level gives the predicted class only. So an attack written against it cannot
cheat, and its query count is exact by construction.
"""

from __future__ import annotations

import torch

from trompe.errors import AccessError
from trompe.models.classifier import Access, Classifier

__all__ = ["Oracle"]


class Oracle:
    """A counted, gradient-free view of a classifier at an access level.

    Args:
        classifier: the model answering the queries.
        access: ``"scores"`` (logits and probabilities) or ``"labels"`` (top-1 class only).

    Attributes:
        queries: the number of images asked about so far (one query per image).
    """

    def __init__(self, classifier: Classifier, access: Access) -> None:
        if access == "gradients":
            raise ValueError("an Oracle is for black-box access; pass the Classifier itself")
        self._classifier = classifier
        self.access: Access = access
        self.queries = 0

    # -- what any attack may know --------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self._classifier.num_classes

    @property
    def device(self) -> torch.device:
        return self._classifier.device

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._classifier.input_size

    @property
    def name(self) -> str:
        return self._classifier.name

    # -- queries ---------------------------------------------------------------------------------

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits: torch.Tensor = self._classifier(images.detach())
        self.queries += int(images.shape[0])
        return logits

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The logits of a batch, one query per image; ``scores`` access only.

        Shape:
            - Input: (B, 3, H, W) in [0, 1].
            - Output: (B, num_classes), detached.
        """
        if self.access != "scores":
            raise AccessError(
                f"this attack was given {self.access} access; it may not read the model's scores"
            )
        return self._forward(images)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of a batch, one query per image; ``scores`` access only."""
        return self.logits(images).softmax(dim=1)

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """The top-1 class of each image, one query per image.

        Shape:
            - Input: (B, 3, H, W) in [0, 1].
            - Output: (B,) long.
        """
        return self._forward(images).argmax(dim=1)
