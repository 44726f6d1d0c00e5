"""An ensemble of classifiers that is itself a classifier: attack several models at once.

Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018,
arXiv:1710.06081, section 3.2: an adversarial image that fools several models at once is more
likely to fool a model it was never made on. They fuse the members in their logits (the mean
logits go through one softmax), in their predictions, or in their losses; logits worked best.

Because :class:`Ensemble` is a :class:`~trompe.models.classifier.Classifier`, every attack, the
engine's 8-bit checks, reports and evaluations take it unchanged. Each member keeps its own
preprocessing: the ensemble passes the full image on (``input_size`` is ``None``, its
``preprocess`` is the identity) and every member crops, resizes and normalises it as it would
alone, so EfficientNet-Lite0 sees 224 px and Lite1 240 px of the same photo, and the gradient
reaches the photo's pixels through each member's own crop and resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import torch
from torch import nn

from trompe.errors import AccessError, InvalidArgumentError
from trompe.models.classifier import ACCESS_LEVELS, Classifier


class _Goal(Protocol):
    """What :meth:`Ensemble.loss` needs of a goal (:class:`trompe.attacks.Goal`; the models
    sit below the attacks and do not import them)."""

    def loss(self, logits: torch.Tensor) -> torch.Tensor: ...


__all__ = ["Combine", "Ensemble"]

#: How the members' outputs are fused: their mean logits, or their mean log-probabilities.
Combine = Literal["logits", "loss"]


class Ensemble(Classifier):
    """Several classifiers of the same classes, fused into one.

    ``combine="logits"`` (Dong et al.'s best): the ensemble's logits are the mean of the
    members' logits. ``combine="loss"``: its logits are the mean of the members'
    log-probabilities (log-softmax), so that its margins are the members' mean margins in
    log-probability; and the gradient attacks that ascend the cross-entropy (FGSM, PGD,
    MI-FGSM, DI-FGSM, PGD-L0 and the gradient hook) ascend exactly the mean of the members'
    cross-entropies, Dong et al.'s loss ensemble (:meth:`loss`), not the cross-entropy of the
    fused logits.

    The ensemble's access is its members' lowest (an ensemble with a score-only member gives
    scores only).

    Args:
        members: the classifiers, at least two, with the same classes (same count, same names
            in the same order); each keeps its own preprocessing.
        combine: ``"logits"`` or ``"loss"``.
        name: a name for reports; default the members' names joined by ``+``.

    Raises:
        InvalidArgumentError: fewer than two members, something that is not a Classifier,
            members of other classes, or an unknown ``combine``.

    Shape:
        - Input: (B, 3, H, W), float, RGB in [0, 1], at the photo's size.
        - Output: (B, num_classes) logits.

    Example:
        >>> ensemble = Ensemble([load_model("efficientnet_lite0"),
        ...                      load_model("efficientnet_lite1")])    # doctest: +SKIP
        >>> ensemble.name                                               # doctest: +SKIP
        'efficientnet_lite0+efficientnet_lite1'
        >>> PGD(eps=16 / 255)(ensemble, images, Untargeted(labels))     # doctest: +SKIP
    """

    def __init__(
        self,
        members: Sequence[Classifier],
        *,
        combine: Combine = "logits",
        name: str | None = None,
    ) -> None:
        members = list(members)
        if len(members) < 2:
            raise InvalidArgumentError(
                f"an ensemble needs at least two models, got {len(members)}; use the model alone"
            )
        for member in members:
            if not isinstance(member, Classifier):
                raise InvalidArgumentError(
                    f"an ensemble's members are trompe Classifiers, got {type(member).__name__}"
                )
        if combine not in get_args(Combine):
            raise InvalidArgumentError(
                f"combine must be one of {', '.join(get_args(Combine))}, got {combine!r}"
            )
        first = members[0]
        for other in members[1:]:
            if other.num_classes != first.num_classes:
                raise InvalidArgumentError(
                    f"an ensemble's models must share their classes: {first.name!r} has "
                    f"{first.num_classes}, {other.name!r} {other.num_classes}; pick models of "
                    "the same data set"
                )
            differ = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(first.labels, other.labels, strict=True))
                    if a != b
                ),
                None,
            )
            if differ is not None:
                raise InvalidArgumentError(
                    f"an ensemble's models must share their classes: class {differ} is "
                    f"{first.labels[differ]!r} for {first.name!r} but "
                    f"{other.labels[differ]!r} for {other.name!r}; give them the same labels"
                )
        access = max(members, key=lambda m: ACCESS_LEVELS.index(m.access)).access
        super().__init__(
            nn.ModuleList(members),
            labels=first.labels,
            input_size=None,
            name=name or "+".join(m.name for m in members),
            access=access,
        )
        self.combine: Combine = combine
        self.source = "ensemble"

    @property
    def members(self) -> tuple[Classifier, ...]:
        """The member classifiers, in order."""
        assert isinstance(self.model, nn.ModuleList)
        return tuple(m for m in self.model if isinstance(m, Classifier))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.member_logits(images))

    def member_logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each member's logits of the full ``images`` (each with its own preprocessing)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise InvalidArgumentError(
                f"a Classifier takes images of shape (B, 3, H, W), got {tuple(images.shape)}"
            )
        if self.access != "gradients" and torch.is_grad_enabled() and images.requires_grad:
            raise AccessError(
                f"model {self.name!r} gives {self.access} only, no gradients; use an attack "
                "that needs no gradients (see `trompe attacks`)"
            )
        return [member(images) for member in self.members]

    def fuse(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble's logits from its members' (see ``combine``)."""
        if self.combine == "loss":
            logits = [item.log_softmax(dim=-1) for item in logits]
        return torch.stack(list(logits)).mean(dim=0)

    def loss(self, goal: _Goal, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, loss)``: the fused logits and the per-image objective a gradient attack
        ascends; with ``combine="loss"`` the mean of the members' ``goal.loss`` (the loss
        ensemble), else ``goal.loss`` of the fused logits. Shape: (B, num_classes), (B,)."""
        parts = self.member_logits(images)
        logits = self.fuse(parts)
        if self.combine == "loss":
            return logits, torch.stack([goal.loss(part) for part in parts]).mean(dim=0)
        return logits, goal.loss(logits)

    # -- what differs from a single classifier --------------------------------------------------

    @torch.no_grad()
    def probs(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities; a list of images of different sizes is classified one by
        one (each member brings each image to its own size)."""
        if isinstance(images, torch.Tensor):
            return super().probs(images)
        items = list(images)
        sizes = {tuple(item.shape[-2:]) for item in items if isinstance(item, torch.Tensor)}
        if len(sizes) <= 1:
            return super().probs(items)
        return torch.cat([super(Ensemble, self).probs(item) for item in items])

    @property
    def preprocessing(self) -> dict[str, object]:
        """The members' preprocessing, by member (the ensemble itself passes images on)."""
        return {
            "input_size": None,
            "members": {member.name: member.preprocessing for member in self.members},
        }

    def describe(self, *, num_classes: int | None = None) -> dict[str, object]:
        """As :meth:`Classifier.describe`, with ``combine`` and each member's description
        under ``members``."""
        out = super().describe(num_classes=num_classes)
        out["combine"] = self.combine
        out["members"] = [member.describe(num_classes=num_classes) for member in self.members]
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, combine={self.combine!r}, access={self.access!r}"
