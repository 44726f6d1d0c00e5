"""Budget units: 0-255 pixel levels for people, [0, 1] for the Python API; L0 counts pixels.

The command line (and the web page) take budgets as a person reads an 8-bit image: ``--eps 10``
is ten pixel levels. The Python API, the attacks and the tensors work on images in [0, 1], where
the same budget is ``10 / 255``. An L0 budget is a number of changed pixels in both. This module
is where those units are converted; it imports nothing heavy, so that a command line can parse
its arguments without torch.

Example:
    >>> from trompe import units
    >>> units.to_unit(10) == 10 / 255, units.to_levels(10 / 255)
    (True, 10.0)
    >>> units.budget_to_unit(100, "l0"), units.parse_budgets("1, 2,4")
    (100.0, [1.0, 2.0, 4.0])
    >>> units.format_budget(10 / 255, "linf"), units.format_budget(5, "l0")
    ('10/255', '5 pixels')
"""

from __future__ import annotations

import math

__all__ = [
    "LEVELS",
    "budget_from_unit",
    "budget_to_unit",
    "format_budget",
    "max_budget",
    "parse_budgets",
    "parse_levels",
    "to_levels",
    "to_unit",
]

#: 8-bit images have levels 0 to 255: one unit of the [0, 1] scale is 255 levels.
LEVELS = 255


def to_unit(levels: float) -> float:
    """A quantity in 0-255 pixel levels, in [0, 1] units (``10`` -> ``10 / 255``)."""
    return float(levels) / LEVELS


def to_levels(value: float) -> float:
    """A quantity in [0, 1] units, in 0-255 pixel levels (``10 / 255`` -> ``10.0``)."""
    return float(value) * LEVELS


def budget_to_unit(levels: float, norm: str) -> float:
    """A budget given in levels, in the Python API's units: [0, 1], or pixels for L0."""
    return float(levels) if norm == "l0" else to_unit(levels)


def budget_from_unit(value: float, norm: str) -> float:
    """A budget in the Python API's units, in levels (L0 budgets are pixels in both)."""
    return float(value) if norm == "l0" else to_levels(value)


def format_budget(value: float, norm: str) -> str:
    """A budget in the Python API's units, written for people in its own unit.

    L-inf: levels out of 255 (``"10/255"``); L2 and L1: the norm of the change in 0-255 units
    (``"765 (0-255 units)"``); L0: pixels (``"5 pixels"``), never scaled by 255.
    """
    if norm == "l0":
        count = float(value)
        return f"{count:g} pixel" + ("" if count == 1 else "s")
    levels = f"{round(to_levels(value), 3):g}"
    return f"{levels}/{LEVELS}" if norm == "linf" else f"{levels} (0-{LEVELS} units)"


def max_budget(norm: str, shape: tuple[int, ...]) -> float:
    """The largest budget that can still matter for images of ``shape`` (C, H, W), in the
    Python API's units: every value changed by the whole range ([0, 1] units; L0: pixels).

    Example:
        >>> max_budget("linf", (3, 8, 8)), max_budget("l0", (3, 8, 8)), max_budget("l1", (3, 2, 2))
        (1.0, 64.0, 12.0)
    """
    values = math.prod(shape)
    if norm == "l0":
        return float(math.prod(shape[1:]))
    return {"linf": 1.0, "l2": math.sqrt(values), "l1": float(values)}[norm]


def parse_levels(text: str) -> float:
    """A positive, finite number of pixel levels written as text (``"10"``, ``"0.5"``).

    Raises:
        ValueError: not a number, or not above 0, or not finite; the message says which.
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of pixel levels, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"expected a number of 0-255 levels above 0, got {text}")
    return value


def parse_budgets(text: str) -> list[float]:
    """One budget in levels, or a comma-separated list of them (``"1,2,4,8"``, a sweep).

    Raises:
        ValueError: an empty list, or a value that :func:`parse_levels` refuses.
    """
    values = [parse_levels(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"expected a budget in 0-255 levels, got {text!r}")
    return values
