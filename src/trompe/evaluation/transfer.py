"""Transfer: what models the attacker never saw make of adversarial images.

An adversarial image made on one model (or an :class:`~trompe.models.ensemble.Ensemble`) is
shown to held-out models: does it fool them too? This is the black-box threat of Papernot et
al. ("Transferability in Machine Learning", 2016, arXiv:1605.07277) and the measure of the
transfer attacks (MI-FGSM, DI, TI, VT; see :mod:`trompe.attacks.gradient`).

Success on a held-out model is the top-1 criterion of the transfer literature, without the
source's confidence: targeted, the target is its top-1; untargeted, its top-1 is not the
goal's class, or, given the clean images, not its own clean top-1 (a held-out model may have
seen the clean photo as another class than the source did).

- :func:`check_transfer`: one batch of 8-bit images and held-out models (``trompe attack
  --transfer-to``, :func:`trompe.attack`'s ``transfer_to``).
- :func:`measure_transfer` / :class:`TransferReport`: a folder of photos, attacked one by one
  on the source and measured on the saved 8-bit PNG by the source, its members and each
  held-out model (``trompe transfer``, :func:`trompe.transfer`).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trompe.attacks.base import Attack
from trompe.attacks.goal import Goal, Targeted, Untargeted
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier
from trompe.models.ensemble import Ensemble

__all__ = [
    "PhotoTransfer",
    "Transfer",
    "TransferProgress",
    "TransferReport",
    "check_transfer",
    "measure_transfer",
]


@dataclass(frozen=True)
class Transfer:
    """Per held-out model and image: its top-1, the goal class's probability, goal met.

    Attributes:
        models: the held-out models' names, in order.
        labels: each model's class names (for the top-1's label).
        goal: the goal the images were made for (the source's).
        top1: (M, B) each model's top-1 class of each image.
        top1_prob: (M, B) its probability.
        goal_prob: (M, B) the probability of the goal's class (the target, or the true class
            of an untargeted goal: low is good then).
        met: (M, B) whether the image fools the model (see the module's criterion).
        clean_top1: (M, B) each model's top-1 of the clean images, when they were given.
    """

    models: tuple[str, ...]
    labels: tuple[Any, ...] = field(repr=False)
    goal: Goal
    top1: torch.Tensor
    top1_prob: torch.Tensor
    goal_prob: torch.Tensor
    met: torch.Tensor
    clean_top1: torch.Tensor | None = None

    @property
    def rate(self) -> torch.Tensor:
        """(B,) the fraction of held-out models each image fools."""
        return self.met.float().mean(dim=0)

    def to_json(self, index: int = 0) -> dict[str, Any]:
        """The check of image ``index``, JSON-ready, for result.json: ``{"models": [{model,
        met, goal_prob, top1: {index, label, prob}} per held-out model], "rate"}`` (and
        ``clean_top1`` per model when the clean images were given)."""
        if not -self.met.shape[1] <= index < self.met.shape[1]:
            raise InvalidArgumentError(
                f"image index {index} is out of range for {self.met.shape[1]} images"
            )
        rows = []
        for m, name in enumerate(self.models):
            top = int(self.top1[m, index])
            row: dict[str, Any] = {
                "model": name,
                "met": bool(self.met[m, index]),
                "goal_prob": round(float(self.goal_prob[m, index]), 6),
                "top1": {
                    "index": top,
                    "label": str(self.labels[m][top]),
                    "prob": round(float(self.top1_prob[m, index]), 6),
                },
            }
            if self.clean_top1 is not None:
                clean = int(self.clean_top1[m, index])
                row["clean_top1"] = {"index": clean, "label": str(self.labels[m][clean])}
            rows.append(row)
        return {"models": rows, "rate": round(float(self.rate[index]), 6)}


def _fooled(goal: Goal, logits: torch.Tensor, clean: torch.Tensor | None = None) -> torch.Tensor:
    """The transfer criterion on one model's logits: target top-1, or top-1 moved away from
    the goal's class (``clean``: from the model's own clean top-1)."""
    top1 = logits.argmax(dim=1).cpu()
    if goal.targeted:
        return top1 == goal.classes.cpu()
    reference = goal.classes.cpu() if clean is None else clean
    return top1 != reference


def check_transfer(
    models: Sequence[Classifier],
    images: torch.Tensor,
    goal: Goal,
    *,
    original: torch.Tensor | None = None,
) -> Transfer:
    """Classify the 8-bit ``images`` with each held-out model and judge ``goal`` on each.

    Args:
        models: the held-out classifiers (of the goal's classes).
        images: (B, 3, H, W) adversarial images in [0, 1]; rounded to 8 bits here (they are
            already, when they come from an attack result).
        goal: the goal they were made for.
        original: the clean images; with an untargeted goal each model is then judged against
            its own clean top-1 rather than the source's.

    Raises:
        InvalidArgumentError: no model, a model of fewer classes than the goal's, or a goal of
            another batch size.

    Example:
        >>> check = check_transfer([load_model("efficientnet_lite2")],
        ...                        result.adversarial, result.goal)          # doctest: +SKIP
        >>> check.to_json(0)["rate"]                                         # doctest: +SKIP
        1.0
    """
    if not models:
        raise InvalidArgumentError("give at least one held-out model")
    if len(goal) != len(images):
        raise InvalidArgumentError(
            f"the goal has {len(goal)} classes for {len(images)} images; give one each"
        )
    images = quantize(images.detach().float())
    classes = goal.classes.cpu()
    top1, top1_prob, goal_prob, met, clean_top1 = [], [], [], [], []
    for model in models:
        if int(classes.max()) >= model.num_classes:
            raise InvalidArgumentError(
                f"held-out model {model.name!r} has {model.num_classes} classes, fewer than "
                "the source's; give models of the same classes"
            )
        with torch.no_grad():
            logits = model(images.to(model.device)).float().cpu()
            clean = None
            if original is not None and not goal.targeted:
                clean = model(original.to(model.device)).argmax(dim=1).cpu()
                clean_top1.append(clean)
        probs = logits.softmax(dim=1)
        best = probs.max(dim=1)
        top1.append(best.indices)
        top1_prob.append(best.values)
        goal_prob.append(probs.gather(1, classes[:, None]).squeeze(1))
        met.append(_fooled(goal, logits, clean))
    return Transfer(
        models=tuple(model.name for model in models),
        labels=tuple(model.labels for model in models),
        goal=goal.to(torch.device("cpu")),
        top1=torch.stack(top1),
        top1_prob=torch.stack(top1_prob),
        goal_prob=torch.stack(goal_prob),
        met=torch.stack(met),
        clean_top1=torch.stack(clean_top1) if clean_top1 else None,
    )


# -- a folder of photos ------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferProgress:
    """Where a folder run is: photo ``done`` of ``total`` finished, ``name`` the last one."""

    done: int
    total: int
    name: str


@dataclass(frozen=True)
class PhotoTransfer:
    """One photo of a folder run.

    Attributes:
        name: its file name.
        size: (width, height).
        goal: ``{"targeted", "class", "label"}``: the target, or the source's clean top-1.
        models: per model (the source, its members, the held-out ones), what it sees in the
            saved 8-bit PNG: ``{"met", "goal_prob", "top1": {index, label, prob},
            "clean_top1": {index, label, prob}}``.
        linf_255: the largest change of a pixel, in 0-255 levels, on the PNG.
        seconds: the attack's time.
        adversarial: the adversarial image as saved (8-bit), (3, H, W).
    """

    name: str
    size: tuple[int, int]
    goal: dict[str, Any]
    models: dict[str, dict[str, Any]]
    linf_255: float
    seconds: float
    adversarial: torch.Tensor = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": list(self.size),
            "goal": self.goal,
            "linf_255": self.linf_255,
            "seconds": round(self.seconds, 3),
            "models": self.models,
        }


@dataclass(frozen=True)
class TransferReport:
    """Transfer rates over a folder: per model, the share of photos whose saved adversarial
    PNG meets the goal (see the module's criterion).

    Attributes:
        attack: the attack's registry name; ``params`` its hyper-parameters.
        source: the attacked model's name; ``members`` its members' (an ensemble), else ().
        held_out: the held-out models' names.
        target: ``{"index", "label"}`` of a targeted run, else ``None`` (untargeted).
        photos: one :class:`PhotoTransfer` per photo, in order.
        seconds: the whole run's time.
    """

    attack: str
    params: dict[str, Any]
    source: str
    members: tuple[str, ...]
    held_out: tuple[str, ...]
    target: dict[str, Any] | None
    photos: tuple[PhotoTransfer, ...]
    seconds: float
    model_info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def models(self) -> tuple[str, ...]:
        """The columns: the source, its members, then the held-out models."""
        return (self.source, *self.members, *self.held_out)

    def rate(self, model: str) -> float:
        """The share of photos that fool ``model`` (one of :attr:`models`)."""
        if model not in self.models:
            raise InvalidArgumentError(
                f"no model {model!r} in this report; it has {', '.join(self.models)}"
            )
        if not self.photos:
            return 0.0
        return sum(bool(p.models[model]["met"]) for p in self.photos) / len(self.photos)

    @property
    def rates(self) -> dict[str, float]:
        """:meth:`rate` of every model, in column order."""
        return {model: self.rate(model) for model in self.models}

    @property
    def label(self) -> str:
        """The row's name in the figure: attack on source."""
        return f"{self.attack} on {self.source}"

    def to_json(self) -> dict[str, Any]:
        """result.json's content (without the command line and versions the writer adds)."""
        return {
            "kind": "transfer",
            "attack": self.attack,
            "params": self.params,
            "source": self.source,
            "members": list(self.members),
            "held_out": list(self.held_out),
            "targeted": self.target is not None,
            "target": self.target,
            "criterion": "targeted: the target is top-1; untargeted: top-1 differs from the "
            "model's own clean top-1; on the saved 8-bit PNG",
            "rates": {model: round(rate, 6) for model, rate in self.rates.items()},
            "photos": [photo.to_json() for photo in self.photos],
            "seconds": round(self.seconds, 3),
            "model_info": self.model_info,
        }

    def figure_png(self) -> bytes:
        """The transfer matrix as PNG bytes (:func:`trompe.report.transfer.render_transfer`)."""
        from trompe.report.transfer import transfer_png_bytes

        return transfer_png_bytes(
            rows=[(self.label, self.rates)],
            models=list(self.models),
            held_out=list(self.held_out),
            photos=[
                (p.name, {m: bool(p.models[m]["met"]) for m in self.models}) for p in self.photos
            ],
            title=self._title(),
        )

    def _title(self) -> str:
        eps = self.params.get("eps_255")
        budget = f", eps {eps:g}/255" if isinstance(eps, int | float) else ""
        goal = f"target {self.target['label']}" if self.target else "untargeted"
        count = len(self.photos)
        return f"transfer of {self.attack} ({goal}{budget}) from {self.source}, {count} photos"

    def _repr_png_(self) -> bytes:
        return self.figure_png()

    def save(
        self,
        out: str | Path,
        *,
        force: bool = False,
        save_adversarial: bool = False,
        extra: dict[str, Any] | None = None,
        inputs: Sequence[Path] = (),
    ) -> dict[str, Path]:
        """Write ``transfer.png``, ``result.json`` and, with ``save_adversarial``, the
        adversarial PNGs (``adversarial/NAME.png``) into ``out``: all or nothing, never over a
        file without ``force``, never over an input photo (``inputs``).

        Returns:
            ``{"figure", "json", "adversarial/NAME.png"...}``: the paths written.

        Raises:
            OutputExistsError: a file is there already and ``force`` is off.
            InvalidArgumentError: ``out`` is a file, or an output would replace an input.
        """
        from trompe._files import (
            all_or_nothing,
            exists_error,
            move_into_place,
            prepare_directory,
            stage,
        )
        from trompe.images import png_bytes
        from trompe.report.record import _versions

        folder = Path(out)
        targets = check_outputs(
            folder,
            [p.name for p in self.photos] if save_adversarial else [],
            force=force,
            inputs=inputs,
        )
        record = self.to_json()
        record["versions"] = _versions()
        record.update(extra or {})
        contents: dict[str, bytes] = {"figure": self.figure_png()}
        if save_adversarial:
            for photo, key in zip(self.photos, list(targets)[2:], strict=True):
                contents[key] = png_bytes(photo.adversarial)
        contents["json"] = (json.dumps(record, indent=2, allow_nan=False) + "\n").encode()
        created: list[Path] = []
        with all_or_nothing(created) as (staged, placed):
            prepare_directory(folder, into=created)
            if save_adversarial:
                prepare_directory(folder / "adversarial", into=created)
            temporaries = {
                key: stage(targets[key].parent, targets[key], data, staged)
                for key, data in contents.items()
            }
            for key, temporary in temporaries.items():
                if not force and targets[key].exists():
                    raise exists_error(targets[key])
                move_into_place(temporary, targets[key], force, placed)
        return targets


def adversarial_name(name: str) -> str:
    """The file name of a photo's adversarial PNG: its stem, ``.png``."""
    return Path(name).stem + ".png"


def check_outputs(
    folder: Path, names: Sequence[str], *, force: bool, inputs: Sequence[Path] = ()
) -> dict[str, Path]:
    """The files a run writes into ``folder`` (``figure``, ``json``, then one per adversarial
    name), refused before any work when one exists without ``force``, is a folder, or is an
    input photo; two photos with one stem are refused too (their PNGs would collide).

    Raises:
        OutputExistsError, InvalidArgumentError: one line naming the file.
    """
    from trompe.errors import OutputExistsError

    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"out '{folder}' is a file, not a folder; choose another")
    targets = {"figure": folder / "transfer.png", "json": folder / "result.json"}
    seen: dict[str, str] = {}
    for name in names:
        png = adversarial_name(name)
        if png in seen:
            raise InvalidArgumentError(
                f"photos '{seen[png]}' and '{name}' would both be saved as adversarial/{png}; "
                "rename one"
            )
        seen[png] = name
        targets[f"adversarial/{png}"] = folder / "adversarial" / png
    for target in targets.values():
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_dir():
            raise InvalidArgumentError(f"'{target}' is a folder; remove it or choose another out")
        for source in inputs:
            if source.exists() and target.exists() and source.samefile(target):
                raise InvalidArgumentError(
                    f"'{target}' is an input photo; the output never replaces an input, "
                    "choose another out"
                )
        if not force:
            raise OutputExistsError(
                f"'{target}' exists already; pass force=True (CLI: --force) to overwrite it, "
                "or choose another out"
            )
    return targets


def _reread(image: torch.Tensor) -> torch.Tensor:
    """The image as a PNG file holds it: encoded and decoded again (lossless, 8-bit)."""
    from PIL import Image

    from trompe.images import load_image, png_bytes

    with Image.open(io.BytesIO(png_bytes(image)), formats=("PNG",)) as opened:
        return load_image(opened.convert("RGB"))


def _top(model: Classifier, logits: torch.Tensor) -> dict[str, Any]:
    probs = logits.softmax(dim=1)[0]
    index = int(probs.argmax())
    return {
        "index": index,
        "label": str(model.labels[index]),
        "prob": round(float(probs[index]), 6),
    }


def measure_transfer(
    photos: Sequence[tuple[str, torch.Tensor]],
    source: Classifier,
    held_out: Sequence[Classifier],
    attack: Attack,
    *,
    target: int | None = None,
    confidence: float | None = None,
    progress: Callable[[TransferProgress], None] | None = None,
) -> TransferReport:
    """Attack each photo on ``source`` and measure the saved 8-bit PNG on every model.

    Args:
        photos: ``(name, (3, H, W) image)`` pairs.
        source: the attacked classifier (an :class:`~trompe.models.ensemble.Ensemble` for an
            ensemble attack: its members are measured too).
        held_out: the models the attack never sees.
        attack: the attack, built.
        target: the target class, or ``None`` for untargeted (away from the source's clean
            top-1).
        confidence: the probability the source must give the target (targeted only).
        progress: called after each photo.

    Returns:
        The :class:`TransferReport`.
    """
    members = source.members if isinstance(source, Ensemble) else ()
    judges: list[Classifier] = [source, *members, *held_out]
    names = [model.name for model in judges]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise InvalidArgumentError(
            f"model {twice!r} is both attacked and held out; hold out a model the attack never sees"
        )
    start = time.perf_counter()
    rows = []
    for done, (name, photo) in enumerate(photos, start=1):
        images = photo.unsqueeze(0).to(source.device)
        with torch.no_grad():
            clean_logits = {model.name: model(images.to(model.device)).cpu() for model in judges}
        if target is None:
            goal: Goal = Untargeted(clean_logits[source.name].argmax(dim=1))
        else:
            goal = Targeted(torch.tensor([target]), confidence)
        result = attack(source, images, goal)
        saved = _reread(result.adversarial[0]).unsqueeze(0)
        judged: dict[str, dict[str, Any]] = {}
        for model in judges:
            with torch.no_grad():
                logits = model(saved.to(model.device)).float().cpu()
            clean = clean_logits[model.name].argmax(dim=1)
            met = _fooled(goal, logits, clean)
            judged[model.name] = {
                "met": bool(met[0]),
                "goal_prob": round(float(logits.softmax(dim=1)[0, int(goal.classes[0])]), 6),
                "top1": _top(model, logits),
                "clean_top1": _top(model, clean_logits[model.name]),
            }
        goal_class = int(goal.classes[0])
        linf = float((saved - photo.unsqueeze(0).cpu()).abs().max()) * 255
        rows.append(
            PhotoTransfer(
                name=name,
                size=(int(photo.shape[-1]), int(photo.shape[-2])),
                goal={
                    "targeted": goal.targeted,
                    "class": goal_class,
                    "label": str(source.labels[goal_class]),
                },
                models=judged,
                linf_255=round(linf, 3),
                seconds=result.seconds,
                adversarial=saved[0],
            )
        )
        if progress is not None:
            progress(TransferProgress(done, len(photos), name))
    return TransferReport(
        attack=attack.name,
        params=_params(attack),
        source=source.name,
        members=tuple(m.name for m in members),
        held_out=tuple(m.name for m in held_out),
        target=None
        if target is None
        else {"index": int(target), "label": str(source.labels[int(target)])},
        photos=tuple(rows),
        seconds=time.perf_counter() - start,
        model_info=source.describe(),
    )


def _params(attack: Attack) -> dict[str, Any]:
    """The attack's parameters, with the budget also in 0-255 levels."""
    params = dict(attack.params())
    eps = params.get("eps")
    if isinstance(eps, float) and params.get("norm") in ("linf", "l2", "l1"):
        params["eps_255"] = round(eps * 255, 6)
    return params
