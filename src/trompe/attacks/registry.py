"""The registry of attacks: one entry per concrete attack class, filled by the classes themselves.

A subclass of :class:`~trompe.attacks.base.Attack` that sets its own ``name`` registers itself
when its module is imported (``Attack.__init_subclass__`` calls :func:`register`); its
``aliases``, ``family`` and ``rank`` class attributes give the other names it answers to and its
place in listings. The library, the command line and the web page read the same entries, so they
cannot disagree; :meth:`AttackInfo.create` builds an attack from a budget and options the same
way for all of them.

Example:
    >>> from trompe.attacks import get_attack
    >>> info = get_attack("MI-FGSM")
    >>> info.name, info.cls.__name__, info.aliases
    ('mifgsm', 'MIFGSM', ('mi-fgsm',))
    >>> attack = info.create(eps=8 / 255, steps=5)
    >>> attack.steps, attack.norm
    (5, 'linf')
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trompe.attacks._options import Option, attack_options, check_option_names
from trompe.errors import InvalidArgumentError, UnknownAttackError

if TYPE_CHECKING:
    from trompe.attacks.base import Attack, Norm

__all__ = [
    "ATTACKS",
    "FAMILIES",
    "AttackInfo",
    "Family",
    "create_attack",
    "get_attack",
    "list_attacks",
    "register",
]

#: How `trompe attacks` groups the attacks, in this order.
Family = Literal["gradient", "minimum-norm", "sparse", "scores", "labels"]
FAMILIES: tuple[Family, ...] = ("gradient", "minimum-norm", "sparse", "scores", "labels")


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
        aliases: other names :func:`get_attack` accepts (``mi-fgsm``).
        family: its group in listings (see :data:`FAMILIES`).
        rank: its place within the family (lower first).
    """

    name: str
    cls: type[Attack]
    norms: tuple[Norm, ...]
    targeted: bool
    access: str
    minimum_norm: bool
    summary: str
    aliases: tuple[str, ...] = ()
    family: Family = "gradient"
    rank: int = 100

    @classmethod
    def of(cls, attack: type[Attack]) -> AttackInfo:
        """The entry of an attack class (registered or not)."""
        return cls(
            attack.name,
            attack,
            attack.norms,
            attack.supports_targeted,
            attack.access,
            attack.minimum_norm,
            attack.summary,
            tuple(attack.__dict__.get("aliases", ())),
            attack.family,
            attack.rank,
        )

    def _parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.cls.__init__).parameters)

    @property
    def default_eps(self) -> float | None:
        """The attack's own default budget (one-pixel: 1 pixel), or ``None`` if it has none
        (then the caller picks one, as :func:`trompe.attack` does per norm)."""
        parameter = self._parameters().get("eps")
        if parameter is None or parameter.default in (inspect.Parameter.empty, None):
            return None  # none, or an optional one (FAB's eps: a minimum-norm attack's cap)
        return float(parameter.default)

    def options(self) -> list[Option]:
        """The hyper-parameters other than ``eps`` and ``norm``, documented (for listings)."""
        return attack_options(self.cls)

    def create(
        self, *, eps: float | None = None, norm: Norm | None = None, **options: Any
    ) -> Attack:
        """Build the attack: the one place that knows which attacks take a budget or a norm.

        Args:
            eps: the budget in [0, 1] units (L0: pixels) of a fixed-budget attack; ``None``
                takes the attack's own default when it has one. Minimum-norm attacks take none.
            norm: the threat model; default the attack's first.
            **options: the attack's other hyper-parameters (validated by the attack).

        Returns:
            The attack, ready to call with a model, images and a goal.

        Raises:
            InvalidArgumentError: a budget for a minimum-norm attack, none for a fixed-budget
                attack without a default, a threat model the attack lacks, or a bad option.

        Example:
            >>> cw = get_attack("cw").create(steps=50)  # minimum norm: no budget
            >>> type(cw).__name__, cw.norm, cw.steps
            ('CarliniWagnerL2', 'l2', 50)
            >>> get_attack("pgd").create(eps=8 / 255, norm="l2", steps=20).norm
            'l2'
        """
        # One sentence, not the constructor's TypeError; ``gradient`` (the gradient hook of the
        # iterative attacks, GradientOptions) is no user option but is taken where it exists.
        hook = ("gradient",) if "gradient" in inspect.signature(self.cls).parameters else ()
        check_option_names(self.cls, options, also=hook)
        norm = norm or self.norms[0]
        if self.minimum_norm:
            if eps is not None:
                raise InvalidArgumentError(
                    f"attack {self.name!r} finds the smallest change by itself; it takes no eps"
                )
            if norm not in self.norms:
                raise InvalidArgumentError(
                    f"attack {self.name!r} supports the {', '.join(self.norms)} threat model, "
                    f"not {norm!r}"
                )
            if "norm" in self._parameters():
                options = {**options, "norm": norm}
            return self.cls(**options)
        if eps is None:
            eps = self.default_eps
            if eps is None:
                raise InvalidArgumentError(
                    f"attack {self.name!r} needs a budget: give eps (in [0, 1] units; L0: pixels)"
                )
        return self.cls(eps=eps, norm=norm, **options)  # type: ignore[call-arg]

    def describe(self) -> dict[str, Any]:
        """The entry as JSON-ready data (`trompe attacks --json`, the web page)."""
        return {
            "name": self.name,
            "class": self.cls.__name__,
            "norms": list(self.norms),
            "targeted": self.targeted,
            "access": self.access,
            "minimum_norm": self.minimum_norm,
            "summary": self.summary,
            "options": [
                {
                    "name": o.name,
                    "type": o.kind,
                    "default": None if o.required else o.default,
                    "required": o.required,
                    "help": o.help,
                }
                for o in self.options()
            ],
        }


#: Every registered attack by name, in listing order (family, then rank).
ATTACKS: dict[str, AttackInfo] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _same_class(a: type, b: type) -> bool:
    # A module imported again (importlib.reload) re-creates its classes: replace, not clash.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(attack: type[Attack]) -> AttackInfo:
    """Add an attack class to the registry (``Attack.__init_subclass__`` calls this).

    Raises:
        TypeError: the class has no name, an abstract method left, a family not in
            :data:`FAMILIES`, or a name or alias another attack holds already.
    """
    info = AttackInfo.of(attack)
    if not info.name or _key(info.name) != info.name:
        raise TypeError(f"{attack.__qualname__}.name must be a kebab-case key, got {info.name!r}")
    if info.family not in FAMILIES:
        raise TypeError(f"{attack.__qualname__}.family must be one of {FAMILIES}")
    if _ALIASES.get(info.name, info.name) != info.name:
        raise TypeError(f"attack name {info.name!r} is an alias of {_ALIASES[info.name]!r}")
    old = ATTACKS.get(info.name)
    if old is not None and not _same_class(old.cls, attack):
        raise TypeError(
            f"attack name {info.name!r} of {attack.__qualname__} is taken by {old.cls.__qualname__}"
        )
    for alias in map(_key, info.aliases):
        holder = _ALIASES.get(alias, alias if alias in ATTACKS else None)
        if holder is not None and holder != info.name:
            raise TypeError(f"alias {alias!r} of attack {info.name!r} is taken by {holder!r}")
    if old is not None:
        for alias in old.aliases:
            _ALIASES.pop(_key(alias), None)
    entries = {**ATTACKS, info.name: info}
    order = sorted(entries.values(), key=lambda i: (FAMILIES.index(i.family), i.rank))
    ATTACKS.clear()
    ATTACKS.update((i.name, i) for i in order)
    _ALIASES.update((_key(alias), info.name) for alias in info.aliases)
    return info


def list_attacks() -> list[AttackInfo]:
    """Every registered attack, in listing order."""
    return list(ATTACKS.values())


def get_attack(name: str) -> AttackInfo:
    """The registry entry of an attack; names are case-insensitive, '_' and '-' alike.

    Raises:
        UnknownAttackError: no such attack; the message lists the known ones.
    """
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in ATTACKS:
        close = difflib.get_close_matches(key, list(ATTACKS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UnknownAttackError(
            f"unknown attack {name!r}; {hint}known attacks: {', '.join(ATTACKS)}"
        )
    return ATTACKS[key]


def create_attack(
    name: str, *, eps: float | None = None, norm: Norm | None = None, **options: Any
) -> Attack:
    """Build a registered attack by name: ``get_attack(name).create(eps=..., norm=..., ...)``."""
    return get_attack(name).create(eps=eps, norm=norm, **options)
