"""Tables of the real-world checks for the terminal: survival and transfer, from their JSON.

They are drawn from the ``to_json`` records (what result.json holds), so that ``trompe check``,
``trompe attack --survive`` and ``--transfer-to`` show what the files say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trompe.cli._console import shown

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["survival_table", "transfer_table"]


def _mark(met: object) -> str:
    return "[green]✓[/green]" if met else "[red]✗[/red]"


def survival_table(record: Mapping[str, Any], title: str) -> Table:
    """One row per real transform: ✓/✗, the transform and setting, the goal's probability and
    the top-1 class (from :meth:`Survival.to_json`)."""
    from rich.table import Table

    goal = record.get("goal", {})
    kind = "target" if goal.get("targeted") else "true class"
    table = Table(
        title=f"{title}: {kind} {shown(goal.get('class_name', ''))} under "
        f"{shown(record.get('transforms', ''))}",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("transform")
    table.add_column("setting")
    table.add_column(f"p({kind})", justify="right")
    table.add_column("top-1")
    for row in record.get("rows", []):
        top = row.get("top1", {})
        table.add_row(
            _mark(row.get("met")),
            shown(row.get("name", "")),
            shown(row.get("setting", "")),
            f"{100 * float(row.get('goal_prob', 0.0)):.1f} %",
            f"{shown(top.get('label', ''))} {100 * float(top.get('prob', 0.0)):.1f} %",
        )
    return table


def survival_verdict(record: Mapping[str, Any]) -> str:
    """``survives every transform`` or ``fails N of M``, coloured."""
    rows = record.get("rows", [])
    failed = sum(not row.get("met") for row in rows)
    if not failed:
        return f"[green]survives[/green] all {len(rows)} rows (the PNG and every transform)"
    return f"[red]does not survive[/red]: goal missed on {failed} of {len(rows)} rows"


def transfer_table(record: Mapping[str, Any], title: str) -> Table:
    """The held-out models' view of the result (from ``Transfer.to_json``): per model, goal
    met or not, the goal class's probability, its top-1 now and on the clean photo."""
    from rich.table import Table

    rows = record.get("models") or []
    rate = record.get("rate")
    if isinstance(rate, int | float):
        title += f": goal met on {100 * float(rate):.0f} % of the held-out models"
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("", "left"),
        ("model", "left"),
        ("p(goal class)", "right"),
        ("top-1", "left"),
        ("top-1 of the clean photo", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        top1 = row.get("top1") or {}
        clean = row.get("clean_top1") or {}
        table.add_row(
            _mark(bool(row.get("met"))),
            shown(row.get("model", "")),
            f"{100 * float(row.get('goal_prob', 0.0)):.1f} %",
            f"{shown(top1.get('label', ''))} {100 * float(top1.get('prob', 0.0)):.1f} %",
            shown(clean.get("label", "")),
        )
    return table
