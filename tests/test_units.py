"""Units (0-255 levels for people, [0, 1] for the API, pixels for L0) and the budget policy."""

from __future__ import annotations

import math

import pytest

from trompe import units
from trompe.api import Budget, budget_from_levels, check_budget
from trompe.errors import InvalidArgumentError, UnknownAttackError


def test_levels_and_units_convert_both_ways() -> None:
    assert units.to_unit(10) == 10 / 255 and units.to_unit(255) == 1.0
    assert units.to_levels(10 / 255) == pytest.approx(10.0)
    for levels in (0.5, 1, 8, 255):
        assert units.to_levels(units.to_unit(levels)) == pytest.approx(levels)


def test_l0_budgets_are_pixels_in_both_units() -> None:
    assert units.budget_to_unit(100, "l0") == 100.0
    assert units.budget_from_unit(100, "l0") == 100.0
    assert units.budget_to_unit(3, "l2") == 3 / 255
    assert units.budget_from_unit(3 / 255, "linf") == pytest.approx(3.0)


def test_parse_levels_and_budgets() -> None:
    assert units.parse_levels("10") == 10.0 and units.parse_levels("0.5") == 0.5
    assert units.parse_budgets("1, 2,4,8") == [1.0, 2.0, 4.0, 8.0]
    assert units.parse_budgets("8,") == [8.0]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("ten", "a number of pixel levels"),
        ("0", "above 0"),
        ("-3", "above 0"),
        ("nan", "above 0"),
        ("inf", "above 0"),
    ],
)
def test_parse_levels_refuses(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        units.parse_levels(text)


def test_parse_budgets_refuses_an_empty_list_and_a_bad_item() -> None:
    with pytest.raises(ValueError, match="a budget"):
        units.parse_budgets(" , ")
    with pytest.raises(ValueError, match="'x'"):
        units.parse_budgets("4,x")


# -- the budget policy of api.py --------------------------------------------------------------


def test_one_level_is_a_budget_several_are_a_sweep() -> None:
    one = budget_from_levels("pgd", [8])
    assert one == Budget(attack="pgd", norm="linf", eps=8 / 255)
    sweep = budget_from_levels("PGD", [1, 2, 4], norm="l2")
    assert sweep.attack == "pgd" and sweep.norm == "l2" and sweep.eps is None
    assert sweep.sweep == (1 / 255, 2 / 255, 4 / 255)
    assert sweep.kwargs()["sweep"] == [1 / 255, 2 / 255, 4 / 255]
    assert "sweep" not in one.kwargs() and one.kwargs()["eps"] == 8 / 255
    assert budget_from_levels("pgd-l0", [20]).eps == 20.0  # pixels stay pixels
    assert budget_from_levels("cw", None) == Budget(attack="cw", norm="l2")
    assert budget_from_levels("pgd", [16], min_eps=True).min_eps


@pytest.mark.parametrize(
    ("attack", "levels", "kwargs", "words"),
    [
        ("pgd", [300], {}, "--eps is in 0-255 pixel levels; got 300"),
        ("pgd", [0], {}, "above 0"),
        ("pgd", [math.nan], {}, "above 0"),
        ("pgd-l0", [2.5], {}, "whole number of pixels"),
        ("cw", [5], {}, "takes no --eps"),
        ("cw", None, {"min_eps": True}, "takes no --min-eps"),
        ("pgd", [2, 4], {"min_eps": True}, "give --min-eps one largest budget"),
        ("pgd", None, {"norm": "l1"}, "supports the linf, l2 threat model, not 'l1'"),
        ("cw", None, {"norm": "linf"}, "threat model"),
        ("pgd", None, {"norm": "l3"}, "norm must be one of"),
    ],
)
def test_budget_from_levels_refuses(
    attack: str, levels: list[float] | None, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        budget_from_levels(attack, levels, eps_name="--eps", min_eps_name="--min-eps", **kwargs)


def test_a_minimum_norm_attack_takes_a_sweep() -> None:
    budget = budget_from_levels("cw", [100, 200])
    assert budget.sweep == (100 / 255, 200 / 255) and budget.eps is None


def test_check_budget_speaks_the_python_names() -> None:
    with pytest.raises(InvalidArgumentError, match="either a sweep of budgets or eps"):
        check_budget("pgd", eps=0.1, sweep=[0.1, 0.2])
    with pytest.raises(InvalidArgumentError, match="takes no eps"):
        check_budget("ddn", eps=0.5)
    with pytest.raises(InvalidArgumentError, match="give min_eps one largest budget"):
        check_budget("pgd", sweep=[0.1], min_eps=True)
    with pytest.raises(UnknownAttackError, match="pgd"):
        check_budget("pgdd")
    assert check_budget("fab").norm == "linf"


def test_api_attack_applies_the_same_checks_before_any_work() -> None:
    """No model or image is loaded for a refused budget: a missing file does not matter."""
    import trompe

    with pytest.raises(InvalidArgumentError, match="takes no eps"):
        trompe.attack("no-such-photo.jpg", attack="cw", eps=0.1)
    with pytest.raises(InvalidArgumentError, match="threat model"):
        trompe.attack("no-such-photo.jpg", attack="pgd", norm="l0")
