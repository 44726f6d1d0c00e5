"""Attacks: the engine, the goals, the results, one file per attack family, and the registry.

Every attack is built from hyper-parameters (keyword-only) and called with a classifier, a
batch of images in [0, 1] and a goal::

    attack = PGD(eps=10 / 255, steps=40)
    result = attack(clf, images, Targeted([951], confidence=0.99))

The registry maps the kebab-case names used by the command line to the classes.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from trompe.attacks.apgd import APGD, APGDDLR, APGDT
from trompe.attacks.base import Attack, FixedBudgetAttack, IterativeAttack, Norm, Progress
from trompe.attacks.boundary import BoundaryAttack
from trompe.attacks.cw import CarliniWagnerL2
from trompe.attacks.ddn import DDN
from trompe.attacks.deepfool import DeepFool
from trompe.attacks.ead import EAD
from trompe.attacks.fab import FAB
from trompe.attacks.fgsm import FGSM
from trompe.attacks.goal import DEFAULT_TARGET_CONFIDENCE, Goal, Targeted, Untargeted
from trompe.attacks.hsj import HopSkipJump
from trompe.attacks.mifgsm import MIFGSM
from trompe.attacks.onepixel import OnePixel
from trompe.attacks.oracle import Oracle
from trompe.attacks.pgd import PGD
from trompe.attacks.result import AttackResult, Norms, measure
from trompe.attacks.search import MinimalEps
from trompe.attacks.simba import SimBA
from trompe.attacks.sparse import JSMA, PGDL0
from trompe.attacks.square import Square
from trompe.attacks.sweep import SweepResult, sweep
from trompe.errors import UnknownAttackError

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "DDN",
    "DEFAULT_TARGET_CONFIDENCE",
    "EAD",
    "FAB",
    "FGSM",
    "JSMA",
    "MIFGSM",
    "PGD",
    "PGDL0",
    "Attack",
    "AttackInfo",
    "AttackResult",
    "BoundaryAttack",
    "CarliniWagnerL2",
    "DeepFool",
    "FixedBudgetAttack",
    "Goal",
    "HopSkipJump",
    "IterativeAttack",
    "MinimalEps",
    "Norm",
    "Norms",
    "OnePixel",
    "Oracle",
    "Progress",
    "SimBA",
    "Square",
    "SweepResult",
    "Targeted",
    "Untargeted",
    "get_attack",
    "list_attacks",
    "measure",
    "sweep",
]


@dataclass(frozen=True)
class AttackInfo:
    """What the registry knows of one attack (read from the attack class).

    Attributes:
        name: the kebab-case key (``pgd``).
        cls: the attack class.
        norms: supported threat models.
        targeted: whether it accepts a target class.
        access: what it needs of the model: ``"gradients"``, ``"scores"`` or ``"labels"``.
        minimum_norm: whether it searches the smallest change (no eps budget).
        summary: one line for listings.
    """

    name: str
    cls: type[Attack]
    norms: tuple[Norm, ...]
    targeted: bool
    access: str
    minimum_norm: bool
    summary: str

    @classmethod
    def of(cls, attack: type[Attack]) -> AttackInfo:
        return cls(
            attack.name,
            attack,
            attack.norms,
            attack.supports_targeted,
            attack.access,
            attack.minimum_norm,
            attack.summary,
        )


#: Every attack, in the order `trompe attacks` lists them: fixed budget, minimum norm, sparse,
#: score-based, decision-based.
_CLASSES: tuple[type[Attack], ...] = (
    FGSM,
    PGD,
    MIFGSM,
    APGD,
    APGDDLR,
    APGDT,
    DeepFool,
    CarliniWagnerL2,
    DDN,
    FAB,
    EAD,
    PGDL0,
    JSMA,
    Square,
    SimBA,
    OnePixel,
    HopSkipJump,
    BoundaryAttack,
)

ATTACKS: dict[str, AttackInfo] = {c.name: AttackInfo.of(c) for c in _CLASSES}


def list_attacks() -> list[AttackInfo]:
    """Every registered attack."""
    return list(ATTACKS.values())


def get_attack(name: str) -> AttackInfo:
    """The registry entry of an attack; names are case-insensitive, '_' and '-' alike.

    Raises:
        UnknownAttackError: no such attack; the message lists the known ones.
    """
    key = name.strip().lower().replace("_", "-")
    aliases = {
        "mi-fgsm": "mifgsm",
        "carlini-wagner": "cw",
        "cw-l2": "cw",
        "elastic-net": "ead",
        "ead-l1": "ead",
        "apgd": "apgd-ce",
        "apgdt": "apgd-t",
        "hopskipjump": "hsj",
        "onepixel": "one-pixel",
        "pixel": "one-pixel",
        "pgdl0": "pgd-l0",
        "square-attack": "square",
    }
    key = aliases.get(key, key)
    if key not in ATTACKS:
        close = difflib.get_close_matches(key, list(ATTACKS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttackError(
            f"unknown attack {name!r}; {hint}known attacks: {', '.join(ATTACKS)}"
        )
    return ATTACKS[key]
