"""The registry (self-registration, aliases, order, the factory, descriptions) and the engine's
checks of what an attack returns: a broken attack raises, it never passes as a success."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from trompe.attacks import (
    ATTACKS,
    FGSM,
    PGD,
    Attack,
    AttackInfo,
    CarliniWagnerL2,
    Goal,
    MinimalEps,
    OnePixel,
    Tracker,
    Untargeted,
    create_attack,
    get_attack,
    list_attacks,
)
from trompe.attacks._options import Option, parse_option
from trompe.attacks.base import MAX_COUNT, MAX_SEED
from trompe.attacks.registry import register
from trompe.attacks.tracker import ProgressCallback
from trompe.errors import InvalidArgumentError, UnknownAttackError
from trompe.images import quantize
from trompe.models import Classifier

#: `trompe attacks` listed them in this order before the registry read it from the classes.
LISTING = [
    "fgsm",
    "pgd",
    "mifgsm",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "deepfool",
    "cw",
    "ddn",
    "fab",
    "ead",
    "pgd-l0",
    "jsma",
    "square",
    "simba",
    "one-pixel",
    "hsj",
    "boundary",
]

#: The aliases `get_attack` accepted when they were a table inside it.
ALIASES = {
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


def test_listing_order_is_kept() -> None:
    names = [info.name for info in list_attacks()]
    assert [n for n in names if n in LISTING] == LISTING
    assert list(ATTACKS) == names


@pytest.mark.parametrize(("alias", "name"), sorted(ALIASES.items()))
def test_aliases_come_from_the_classes(alias: str, name: str) -> None:
    assert get_attack(alias).name == name
    assert get_attack(alias.upper().replace("-", "_")).name == name
    assert alias in get_attack(name).aliases


def test_unknown_attack_suggests_a_name() -> None:
    with pytest.raises(UnknownAttackError, match="did you mean pgd"):
        get_attack("pgdd")


def test_a_subclass_registers_itself_unless_told_not_to() -> None:
    class Quiet(PGD, register=False):
        name = "quiet-pgd"

    assert "quiet-pgd" not in ATTACKS
    # Subclasses inherit neither a registration nor the aliases of their parent.
    assert FGSM.__dict__.get("aliases") is None and get_attack("fgsm").aliases == ()
    with pytest.raises(TypeError, match="taken by"):
        register(type("PGDAgain", (PGD,), {"name": "pgd", "__module__": __name__}))
    with pytest.raises(TypeError, match="alias 'apgd'"):
        register(
            type("Clash", (PGD,), {"name": "clash", "aliases": ("apgd",), "__module__": __name__})
        )
    assert "clash" not in ATTACKS and set(ATTACKS) >= set(LISTING)


def test_create_gives_budget_norm_and_options_where_they_belong() -> None:
    pgd = get_attack("pgd").create(eps=0.1, norm="l2", steps=7)
    assert isinstance(pgd, PGD) and (pgd.eps, pgd.norm, pgd.steps) == (0.1, "l2", 7)
    assert get_attack("pgd").create(eps=0.1).norm == "linf"  # the attack's first norm
    cw = get_attack("cw").create(norm="l2", steps=5)
    assert isinstance(cw, CarliniWagnerL2) and cw.steps == 5
    pixel = create_attack("one-pixel")  # the attack's own default budget: 1 pixel
    assert isinstance(pixel, OnePixel) and pixel.eps == 1
    assert get_attack("one-pixel").default_eps == 1 and get_attack("pgd").default_eps is None
    with pytest.raises(InvalidArgumentError, match="takes no eps"):
        get_attack("cw").create(eps=0.1)
    with pytest.raises(InvalidArgumentError, match="threat model"):
        get_attack("cw").create(norm="linf")
    with pytest.raises(InvalidArgumentError, match="needs a budget"):
        get_attack("pgd").create()
    with pytest.raises(InvalidArgumentError, match="threat model"):
        get_attack("pgd").create(eps=0.1, norm="l1")


def test_describe_lists_options_with_defaults() -> None:
    data = get_attack("mifgsm").describe()
    assert data["name"] == "mifgsm" and data["class"] == "MIFGSM"
    assert data["norms"] == ["linf", "l2"] and data["targeted"] and not data["minimum_norm"]
    options = {o["name"]: o for o in data["options"]}
    assert "eps" not in options and "norm" not in options
    assert options["steps"]["default"] == 10 and not options["steps"]["required"]
    assert options["decay"]["type"] == "float" and options["decay"]["help"]


def test_the_command_lines_json_is_describe() -> None:
    """`trompe attacks --json` prints the registry's descriptions, not a copy of its own."""
    out = subprocess.run(
        [sys.executable, "-m", "trompe", "attacks", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [info.describe() for info in list_attacks()]


# -- the engine's checks of what _run returns ------------------------------------------------


class _Broken(PGD, register=False):
    """PGD whose ``_run`` spoils its result in one of several ways (a test double of a bug)."""

    name = "broken"

    def __init__(self, *, eps: float, norm: Any = "linf", spoil: str) -> None:
        super().__init__(eps=eps, norm=norm, steps=2)
        self.spoil = spoil

    def _run(
        self, model: Any, images: torch.Tensor, goal: Goal, progress: ProgressCallback | None
    ) -> Tracker:
        tracker = super()._run(model, images, goal, progress)
        if self.spoil == "budget":  # twice the budget, still on the grid and in [0, 1]
            tracker.adversarial = quantize((images + 2 * self.eps).clamp(0, 1))
        elif self.spoil == "grid":
            tracker.adversarial = (images + 0.3 / 255).clamp(0, 1)
        elif self.spoil == "range":
            tracker.adversarial = images * 2 - 0.5
        elif self.spoil == "l2":
            tracker.adversarial = quantize(images + 0.5 * (images < 0.5))
        return tracker


@pytest.mark.parametrize(
    ("spoil", "norm", "message"),
    [
        ("budget", "linf", "left its budget"),
        ("grid", "linf", "8-bit grid"),
        ("range", "linf", r"outside \[0, 1\]"),
        ("l2", "l2", "left its budget"),
        ("none", "linf", None),
    ],
)
def test_an_attack_that_leaves_its_budget_raises(
    spoil: str,
    norm: str,
    message: str | None,
    digits_clf: Classifier,
    digits_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = digits_batch[0][:4], digits_batch[1][:4]
    attack = _Broken(eps=0.1, norm=norm, spoil=spoil)
    if message is None:  # the double itself is sound when it spoils nothing
        result = attack(digits_clf, images, Untargeted(labels))
        assert (result.norms.linf <= 0.1 * 255 + 1e-4).all()
        return
    with pytest.raises(RuntimeError, match=message):
        attack(digits_clf, images, Untargeted(labels))


def test_the_budget_check_allows_the_rounding_of_an_original_off_the_grid(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # A resized tensor is not on the 8-bit grid: no 8-bit image lies exactly eps away from it.
    images = (digits_batch[0][:4] * 0.9 + 0.05).clamp(0, 1)
    labels = digits_batch[1][:4]
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        result = PGD(eps=eps, norm=norm, steps=5)(digits_clf, images, Untargeted(labels))
        assert result.adversarial.shape == images.shape


def test_info_of_an_unregistered_class_still_creates_it() -> None:
    info = AttackInfo.of(_Broken)
    attack = info.create(eps=0.1, spoil="none")
    assert isinstance(attack, _Broken) and isinstance(attack, Attack)


# -- the guide's example attack, run as written ------------------------------------------------


def _guide_example() -> type[Attack]:
    guide = Path(__file__).parents[1] / "docs" / "adding-an-attack.md"
    text = guide.read_text(encoding="utf-8")
    start = text.index("```python\n# attacks/randomsigns.py\n") + len("```python\n")
    code = text[start : text.index("```", start)]
    # Defined here as a test double: it must not join the registry of the whole session.
    code = code.replace("(FixedBudgetAttack):", "(FixedBudgetAttack, register=False):")
    namespace: dict[str, Any] = {"__name__": "guide_example"}
    exec(compile(code, str(guide), "exec"), namespace)
    cls: type[Attack] = namespace["RandomSigns"]
    return cls


def test_the_guides_example_attack_keeps_the_contract(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    cls = _guide_example()
    assert "random-signs" not in ATTACKS
    info = AttackInfo.of(cls)
    assert (info.family, info.access, info.aliases) == ("scores", "scores", ("random",))
    assert [o.name for o in info.options()] == ["queries", "seed"]
    assert all(o.help for o in info.options())
    images, labels = digits_batch[0][:16], digits_batch[1][:16]
    attack = info.create(eps=0.3, queries=50)
    result = attack(digits_clf.with_access("scores"), images, Untargeted(labels))
    assert (result.norms.linf <= 0.3 * 255 + 1e-4).all()
    assert int(result.queries.sum()) == int(result.forwards.sum()) - 2 * len(images)
    assert bool(result.success.any())
    with torch.no_grad():
        again = digits_clf(result.adversarial).argmax(dim=1) != labels
    assert torch.equal(result.success, again)


def test_the_budget_is_checked_inside_the_smallest_budget_search(
    digits_clf: Classifier, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    images, labels = digits_batch[0][:2], digits_batch[1][:2]
    search = MinimalEps(_Broken, max_eps=0.2, spoil="budget")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="left its budget"):
        search(digits_clf, images, Untargeted(labels))


# -- every option's range is checked, whatever the value -----------------------------------------

#: Texts that `-O NAME=VALUE` may carry: out of range, not finite, huge, of the wrong type.
_ODD_TEXTS = [
    *("-1", "0", "1", "0.5", "1e30", "-1e30", "1e308", "nan", "inf", "-inf", "-0.1", "abc", ""),
    *("true", "none", str(2**31), str(2**63), str(10**30), str(-(10**30))),
]
_ODD_VALUES = st.one_of(
    st.sampled_from(_ODD_TEXTS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
_ALL_OPTIONS = [(info, option) for info in list_attacks() for option in info.options()]


def _create(info: AttackInfo, **options: Any) -> Attack:
    if info.minimum_norm:
        return info.create(**options)
    return info.create(eps=3 if info.norms[0] == "l0" else 8 / 255, **options)


def _in_range_or_one_line_error(info: AttackInfo, option: Option, text: str) -> bool:
    """`-O NAME=VALUE` as the command line reads it (parse_option, then the attack's own
    checks): a value out of its range is one line that names the option and what it takes;
    what is accepted is finite, and a count fits torch's loops. Returns whether accepted."""
    try:
        name, value = parse_option(info.cls, f"{option.name}={text}")
        attack = _create(info, **{name: value})
    except InvalidArgumentError as error:
        message = str(error)
        assert "\n" not in message and option.name in message, message
        return False
    held = getattr(attack, name, value)
    for number in (value, held):
        if isinstance(number, float):
            assert math.isfinite(number), (info.name, option.name, text)
        if isinstance(number, int) and not isinstance(number, bool):
            limit = MAX_SEED if name == "seed" else MAX_COUNT
            assert 0 <= number <= limit, (info.name, option.name, text)
    return True


@pytest.mark.parametrize(
    ("info", "option"), _ALL_OPTIONS, ids=[f"{i.name}-{o.name}" for i, o in _ALL_OPTIONS]
)
def test_every_option_refuses_odd_values_in_one_line(info: AttackInfo, option: Option) -> None:
    for text in _ODD_TEXTS:
        _in_range_or_one_line_error(info, option, text)


@settings(max_examples=500, deadline=None)
@given(choice=st.sampled_from(_ALL_OPTIONS), text=_ODD_VALUES)
def test_every_option_value_is_in_range_or_a_one_line_error_naming_it(
    choice: tuple[AttackInfo, Option], text: str
) -> None:
    event("accepted" if _in_range_or_one_line_error(*choice, text) else "refused")


@settings(max_examples=100, deadline=None)
@given(info=st.sampled_from(list_attacks()), name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_an_unknown_option_is_a_one_line_error_listing_the_known_ones(
    info: AttackInfo, name: str
) -> None:
    known = {o.name for o in info.options()}
    if name in known or name in ("eps", "norm"):
        return
    with pytest.raises(InvalidArgumentError, match=f"has no option {name!r}") as caught:
        parse_option(info.cls, f"{name}=1")
    assert "\n" not in str(caught.value)
    assert all(o in str(caught.value) for o in known)
