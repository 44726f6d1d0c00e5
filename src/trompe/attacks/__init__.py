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

from trompe.attacks.base import Attack, FixedBudgetAttack, IterativeAttack, Norm, Progress
from trompe.attacks.cw import CarliniWagnerL2
from trompe.attacks.fgsm import FGSM
from trompe.attacks.goal import DEFAULT_TARGET_CONFIDENCE, Goal, Targeted, Untargeted
from trompe.attacks.mifgsm import MIFGSM
from trompe.attacks.pgd import PGD
from trompe.attacks.result import AttackResult, Norms, measure
from trompe.attacks.search import MinimalEps
from trompe.errors import UnknownAttackError

__all__ = [
    "ATTACKS",
    "DEFAULT_TARGET_CONFIDENCE",
    "FGSM",
    "MIFGSM",
    "PGD",
    "Attack",
    "AttackInfo",
    "AttackResult",
    "CarliniWagnerL2",
    "FixedBudgetAttack",
    "Goal",
    "IterativeAttack",
    "MinimalEps",
    "Norm",
    "Norms",
    "Progress",
    "Targeted",
    "Untargeted",
    "get_attack",
    "list_attacks",
    "measure",
]


@dataclass(frozen=True)
class AttackInfo:
    """What the registry knows of one attack.

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


ATTACKS: dict[str, AttackInfo] = {
    info.name: info
    for info in (
        AttackInfo(
            "pgd",
            PGD,
            PGD.norms,
            True,
            "gradients",
            False,
            "projected gradient descent (Madry et al. 2018), random start, early stopping",
        ),
        AttackInfo(
            "fgsm",
            FGSM,
            FGSM.norms,
            True,
            "gradients",
            False,
            "fast gradient sign method: one step to the edge of the budget (2015)",
        ),
        AttackInfo(
            "mifgsm",
            MIFGSM,
            MIFGSM.norms,
            True,
            "gradients",
            False,
            "iterative FGSM with momentum (Dong et al. 2018)",
        ),
        AttackInfo(
            "cw",
            CarliniWagnerL2,
            CarliniWagnerL2.norms,
            True,
            "gradients",
            True,
            "smallest L2 change by optimisation with Adam (Carlini & Wagner 2017 style)",
        ),
    )
}


def list_attacks() -> list[AttackInfo]:
    """Every registered attack."""
    return list(ATTACKS.values())


def get_attack(name: str) -> AttackInfo:
    """The registry entry of an attack; names are case-insensitive, '_' and '-' alike.

    Raises:
        UnknownAttackError: no such attack; the message lists the known ones.
    """
    key = name.strip().lower().replace("_", "-")
    aliases = {"mi-fgsm": "mifgsm", "carlini-wagner": "cw", "cw-l2": "cw"}
    key = aliases.get(key, key)
    if key not in ATTACKS:
        close = difflib.get_close_matches(key, list(ATTACKS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttackError(
            f"unknown attack {name!r}; {hint}known attacks: {', '.join(ATTACKS)}"
        )
    return ATTACKS[key]
