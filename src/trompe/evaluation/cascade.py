"""The cascade: each attack in turn on the images still robust, budget after budget.

Owner: the cascade helper. Interface fixed by the skeleton; see the docstrings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from trompe.evaluation._types import Chunk, EvalConfig, ImageRecord, Stage
from trompe.models.classifier import Classifier

__all__ = ["CASCADES", "ChunkOutcome", "resolve_cascade", "run_chunk"]

#: The named cascades. ``standard``: AutoAttack's standard version (APGD-CE, APGD-T over the 9
#: classes ranked next, FAB-T over the same, Square with 5000 queries), 100 iterations each.
#: ``fast``: a documented cheaper cascade.
CASCADES: dict[str, tuple[Stage, ...]] = {
    "standard": (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("apgd-t", {"steps": 100, "targets": 9}),
        Stage("fab-t", {"steps": 100, "targets": 9}),
        Stage("square", {"queries": 5000, "p_init": 0.8}),
    ),
    "fast": (
        Stage("apgd-ce", {"steps": 100, "restarts": 1}),
        Stage("apgd-t", {"steps": 100, "targets": 3}),
    ),
}


def resolve_cascade(
    attacks: str | Sequence[str | Stage], norm: str
) -> tuple[str, tuple[Stage, ...]]:
    """The cascade's name and stages from ``"standard"``, ``"fast"``, ``"apgd-ce,square"`` or a
    list of names or :class:`Stage` values; each attack must exist and support ``norm``.

    Raises:
        UnknownAttackError: an unknown attack name.
        InvalidArgumentError: an attack without the ``norm`` threat model, an empty cascade, or
            one that names an attack twice.
    """
    raise NotImplementedError


@dataclass(frozen=True, eq=False)
class ChunkOutcome:
    """One chunk evaluated.

    Attributes:
        records: one per image of the chunk (skipped ones included), in position order.
        adversarial: per budget index, (b, 3, H, W) images on the 8-bit grid: the adversarial
            image of every broken image, the original of a robust one (b = readable images).
        seconds: per stage attack name, wall-clock time spent in it.
    """

    records: tuple[ImageRecord, ...]
    adversarial: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_chunk(
    model: Classifier,
    chunk: Chunk,
    config: EvalConfig,
    *,
    keep_adversarial: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> ChunkOutcome:
    """Evaluate one chunk: clean predictions, then for each budget in ascending order each
    stage on the images still robust.

    Every candidate an attack returns is projected into the budget, rounded to 8 bits within
    it, and re-predicted in float32 (outside any autocast); only then does the image count as
    broken. An image broken at a budget is broken at every larger one (its image is reused:
    ``carried``), so robust accuracy never rises with the budget. Seeds come from
    :func:`~trompe.evaluation._types.chunk_seed` (config seed, chunk, budget, stage), so a chunk
    gives the same records in any process.

    Args:
        model: the classifier, on its device.
        chunk: the images.
        config: budgets, norm, stages, seed, precision.
        keep_adversarial: fill ``ChunkOutcome.adversarial``.
        on_stage: called with a short description before each stage.
    """
    raise NotImplementedError
