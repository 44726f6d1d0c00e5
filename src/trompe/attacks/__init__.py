"""Attacks: the engine, the goals, the results, one file per attack family, and the registry.

Every attack is built from hyper-parameters (keyword-only) and called with a classifier, a
batch of images in [0, 1] and a goal::

    attack = PGD(eps=10 / 255, steps=40)
    result = attack(clf, images, Targeted([951], confidence=0.99))

Each attack class registers itself under its kebab-case name when its module is imported
(:mod:`trompe.attacks.registry`): adding an attack is one new module and one import line below
(see ``docs/adding-an-attack.md``).
"""

from __future__ import annotations

from trompe.attacks.apgd import APGD, APGDDLR, APGDT
from trompe.attacks.base import Attack, FixedBudgetAttack, IterativeAttack, Norm, Progress
from trompe.attacks.boundary import BoundaryAttack
from trompe.attacks.cw import CarliniWagnerL2
from trompe.attacks.ddn import DDN
from trompe.attacks.deepfool import DeepFool
from trompe.attacks.difgsm import DIFGSM
from trompe.attacks.ead import EAD
from trompe.attacks.fab import FAB
from trompe.attacks.fgsm import FGSM
from trompe.attacks.fmn import FMN
from trompe.attacks.goal import DEFAULT_TARGET_CONFIDENCE, Goal, Targeted, Untargeted
from trompe.attacks.hsj import HopSkipJump
from trompe.attacks.mifgsm import MIFGSM
from trompe.attacks.onepixel import OnePixel
from trompe.attacks.oracle import Oracle
from trompe.attacks.pgd import PGD
from trompe.attacks.registry import ATTACKS, AttackInfo, create_attack, get_attack, list_attacks
from trompe.attacks.result import AttackResult, Norms, measure
from trompe.attacks.search import MinimalEps
from trompe.attacks.simba import SimBA
from trompe.attacks.sparse import JSMA, PGDL0
from trompe.attacks.square import Square
from trompe.attacks.sweep import SweepResult, sweep
from trompe.attacks.tracker import Tracker

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "DDN",
    "DEFAULT_TARGET_CONFIDENCE",
    "DIFGSM",
    "EAD",
    "FAB",
    "FGSM",
    "FMN",
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
    "Tracker",
    "Untargeted",
    "create_attack",
    "get_attack",
    "list_attacks",
    "measure",
    "sweep",
]
