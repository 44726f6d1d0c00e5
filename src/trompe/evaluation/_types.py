"""The values an evaluation passes between its parts: configuration, data chunks, records.

Everything here is plain data that survives a round trip through JSON, so that a run written to
disk by one process (or one shard of a job array) can be resumed or merged by another, and the
final numbers are computed from the records alone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

__all__ = [
    "PRECISIONS",
    "BudgetOutcome",
    "CheckWarning",
    "Chunk",
    "EvalConfig",
    "EvalProgress",
    "ImageRecord",
    "Precision",
    "Stage",
    "chunk_seed",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Stage:
    """One attack of a cascade: a registry name and the options it is built with.

    ``attack`` is a key of :mod:`trompe.attacks.registry` (``"apgd-ce"``, ``"apgd-t"``,
    ``"fab-t"``, ``"square"``); ``options`` are its hyper-parameters other than ``eps``,
    ``norm`` and ``seed`` (which the cascade sets).
    """

    attack: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.attack, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage:
        return cls(str(data["attack"]), dict(data.get("options", {})))


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines an evaluation's numbers; a resume or a merge must match it.

    Attributes:
        model: the classifier's description (:meth:`~trompe.Classifier.describe`).
        data: the data set's description (:attr:`trompe.evaluation.data.EvalData.description`,
            with its fingerprint over ids and labels).
        norm: ``"linf"`` or ``"l2"``.
        eps: the budgets in [0, 1] units, ascending, without repeats.
        stages: the cascade, in order.
        cascade: the cascade's name (``"standard"``, ``"fast"``) or ``"custom"``.
        batch_size: images per chunk; chunks are the unit of work, of seeding and of resume.
        seed: the seed every chunk's attacks derive theirs from (:func:`chunk_seed`).
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` for the attacks under autocast (the
            final success of every image is re-checked in float32).
        checks: whether the gradient-masking checks run.
    """

    model: Mapping[str, Any]
    data: Mapping[str, Any]
    norm: str
    eps: tuple[float, ...]
    stages: tuple[Stage, ...]
    cascade: str = "custom"
    batch_size: int = 100
    seed: int = 0
    precision: Precision = "fp32"
    checks: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": dict(self.model),
            "data": dict(self.data),
            "norm": self.norm,
            "eps": list(self.eps),
            "stages": [s.to_dict() for s in self.stages],
            "cascade": self.cascade,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "precision": self.precision,
            "checks": self.checks,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalConfig:
        return cls(
            model=dict(data["model"]),
            data=dict(data["data"]),
            norm=str(data["norm"]),
            eps=tuple(float(e) for e in data["eps"]),
            stages=tuple(Stage.from_dict(s) for s in data["stages"]),
            cascade=str(data.get("cascade", "custom")),
            batch_size=int(data["batch_size"]),
            seed=int(data["seed"]),
            precision=data.get("precision", "fp32"),
            checks=bool(data.get("checks", True)),
        )

    def identity(self) -> dict[str, Any]:
        """The JSON form without what names the data but does not define it: the data set's
        ``source`` as typed (``./val`` or ``/abs/val``, another mount on another node of a job
        array); its fingerprint over ids and labels stands for it."""
        data = self.to_dict()
        data["data"] = {k: v for k, v in data["data"].items() if k != "source"}
        return data

    def fingerprint(self) -> str:
        """A SHA-256 over :meth:`identity` (keys sorted): equal configurations, equal prints."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def differences(self, other: EvalConfig) -> list[str]:
        """What differs from ``other``, one short phrase per field (``"eps: [..] vs [..]"``),
        for the error that refuses to resume or merge runs of different configurations (the
        data's source path may differ: see :meth:`identity`)."""
        mine, theirs = self.identity(), other.identity()
        found = []
        for key in mine:
            if mine[key] != theirs.get(key):
                a, b = _short(mine[key]), _short(theirs.get(key))
                found.append(f"{key}: {a} vs {b}")
        return found


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def chunk_seed(seed: int, chunk: int, *salt: int) -> int:
    """The seed of one chunk's attacks: the same for a chunk whichever process, shard or
    resumed run attacks it, and different between chunks (and between ``salt`` values: the
    budget and stage indices)."""
    text = ":".join(str(v) for v in (seed, chunk, *salt))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True, eq=False)
class Chunk:
    """A fixed slice of the data set: the unit of work, seeding and resume.

    Attributes:
        index: the chunk's number (chunk ``k`` holds positions ``k * batch_size`` onwards).
        positions: (b,) the images' positions in the data set.
        ids: the images' ids (file paths relative to the data root, or ``"#<position>"``).
        images: (b, 3, H, W) floats in [0, 1] on the 8-bit grid, at the model's input size.
        labels: (b,) true classes.
        skipped: (position, id, reason) of the images of this slice that could not be read
            (not in ``images``).
    """

    index: int
    positions: tuple[int, ...]
    ids: tuple[str, ...]
    images: torch.Tensor
    labels: torch.Tensor
    skipped: tuple[tuple[int, str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class BudgetOutcome:
    """One image at one budget.

    Attributes:
        eps: the budget, [0, 1] units.
        robust: the model still gives the true class on every adversarial candidate tried
            (8-bit, within the budget, re-predicted in float32). False for an image the model
            gets wrong to begin with.
        broken_by: the stage's attack name that broke it, ``"clean"`` for an image misclassified
            unattacked, ``None`` while robust.
        carried: broken at a smaller budget, whose adversarial image is reused here (the sweep
            is monotone by construction).
        prediction: the model's class for the adversarial image (the clean prediction when
            robust).
        norms: the change of the adversarial image, 8-bit, in 0-255 units (``linf``, ``l2``,
            ``l1``; ``l0`` in pixels); ``None`` when robust or misclassified clean.
        forwards: model evaluations spent on this image at this budget.
        gradients: backward passes spent on this image at this budget.
        rejected: candidates an attack reported as successful that the float32 re-check on the
            8-bit image within the budget did not confirm.
    """

    eps: float
    robust: bool
    broken_by: str | None = None
    carried: bool = False
    prediction: int | None = None
    norms: Mapping[str, float] | None = None
    forwards: int = 0
    gradients: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class ImageRecord:
    """Everything an evaluation found out about one image: one JSON line of the records.

    Attributes:
        position: the image's position in the data set.
        id: its id.
        label: the true class.
        chunk: the chunk it belongs to.
        clean_prediction: the model's class for the image unattacked (``None`` if skipped).
        budgets: one outcome per budget, in the configuration's order (empty if skipped).
        skipped: why the image was not evaluated (unreadable), else ``None``.
    """

    position: int
    id: str
    label: int
    chunk: int
    clean_prediction: int | None
    budgets: tuple[BudgetOutcome, ...] = ()
    skipped: str | None = None

    @property
    def correct(self) -> bool:
        """The model gives the true class unattacked."""
        return self.skipped is None and self.clean_prediction == self.label

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["budgets"] = [_outcome_json(b) for b in self.budgets]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRecord:
        return cls(
            position=int(data["position"]),
            id=str(data["id"]),
            label=int(data["label"]),
            chunk=int(data["chunk"]),
            clean_prediction=(
                None if data.get("clean_prediction") is None else int(data["clean_prediction"])
            ),
            budgets=tuple(BudgetOutcome(**b) for b in data.get("budgets", ())),
            skipped=data.get("skipped"),
        )


def _outcome_json(outcome: BudgetOutcome) -> dict[str, Any]:
    data = asdict(outcome)
    if outcome.norms is not None:
        # JSON has no infinity; a norm is always finite here, but never write NaN either.
        data["norms"] = {k: float(v) for k, v in outcome.norms.items() if math.isfinite(v)}
    return data


@dataclass(frozen=True)
class CheckWarning:
    """A named warning of the gradient-masking checks (or of the evaluation itself).

    Attributes:
        code: a stable kebab-case name (``"black-box-beats-white-box"``).
        message: one sentence for people: what was seen and what it suggests.
        details: the numbers behind it, JSON-ready.
    """

    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": dict(self.details)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckWarning:
        return cls(str(data["code"]), str(data["message"]), dict(data.get("details", {})))


@dataclass(frozen=True)
class EvalProgress:
    """Where a running evaluation stands, given to its progress callback after each chunk (and
    after each stage within a chunk).

    Attributes:
        done: images finished (all budgets), skipped ones included, resumed ones included.
        total: images to evaluate in this process (its shard).
        correct: finished images the model classifies correctly unattacked.
        robust: per budget, finished images still robust.
        seconds: wall-clock time of this process so far.
        stage: what runs now (``"apgd-t at 8/255"``), or ``""`` between chunks.
    """

    done: int
    total: int
    correct: int
    robust: Sequence[int]
    seconds: float
    stage: str = ""
