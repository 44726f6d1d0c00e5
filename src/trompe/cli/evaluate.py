"""``trompe evaluate``: robust accuracy of a model on a data set, with the AutoAttack-grade
cascade, records written as it goes, resumable, sharded or under ``torchrun``.

The budget flags are in 0-255 pixel levels (L2: the norm in 0-255 units), as for ``trompe
attack``; :func:`trompe.api.evaluation_budgets` checks them and converts them, and
:func:`trompe.api.evaluate` runs the evaluation. Only what the parser needs is imported at the
top: ``trompe --help`` builds every sub-parser.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_OK, budgets, device, positive_int, seed
from trompe.cli._console import printable
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from rich.console import Console

    from trompe.cli import Parser, Verbs
    from trompe.evaluation import EvalProgress, EvaluationReport

__all__ = ["add_evaluate", "run_evaluate", "shard_spec"]

#: The output folder when --out is not given.
DEFAULT_OUT = "trompe-eval"
#: Without a terminal, a progress line at most this often (seconds), or every tenth of the work.
_LINE_EVERY = 30.0

_EPILOG = """examples:
  trompe evaluate --model digits_robust --data digits --eps 16,32    the shipped robust model
  trompe evaluate --model efficientnet_lite0 --data ./val/ --eps 1,2,4 --n 1000 --out eval/
  trompe evaluate -m efficientnet_lite0 --data foolbox:imagenet --eps 1 --attacks fast
  trompe evaluate -m digits_robust --data digits --eps 255 --norm l2  L2: 0-255 units
  trompe evaluate ... --attacks apgd-ce,square                       your own cascade
  trompe evaluate ... --out eval/ --resume                           continue an interrupted run
  trompe evaluate ... --out eval/ --shard 0/4    (and 1/4, 2/4, 3/4), then:
  trompe evaluate --merge eval/                                      one summary of all shards
  torchrun --nproc-per-node 4 -m trompe evaluate ... --images 1000   data-parallel, one result
data: a folder of class subfolders (named by index or class name), a .csv/.jsonl manifest of
path,label rows, or a built-in: digits, foolbox:imagenet, foolbox:cifar10, foolbox:mnist, ...
exit code 0 whatever the robust accuracy; see docs/evaluate.md for the cascade and the checks
"""


def shard_spec(text: str) -> tuple[int, int]:
    """``--shard I/N``: shard I of N, counted from 0 (``0/4`` to ``3/4``)."""
    index_text, slash, count_text = text.strip().partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not slash or not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"expected I/N with 0 <= I < N (0/4 is the first of 4 shards), got "
            f"{printable(repr(text))}"
        )
    return index, count


def add_evaluate(verbs: Verbs, common: Parser) -> None:
    """Add ``evaluate`` to the sub-commands."""
    parser = verbs.add_parser(
        "evaluate",
        parents=[common],
        help="robust accuracy of a model on a data set",
        description="Robust accuracy of a model on a data set at each budget: every image the\n"
        "model gets right is attacked by each attack of the cascade in turn (AutoAttack's\n"
        "standard one by default) until one breaks it; a success counts only on the 8-bit\n"
        "image within the budget, re-predicted in float32. Budgets (--eps) are in 0-255 pixel\n"
        "levels (L2: the norm in 0-255 units). Writes records/ (one JSON line per image, as it\n"
        "goes), summary.json and figure.png into --out.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        "-d",
        metavar="SOURCE",
        help="a folder of class subfolders, a .csv/.jsonl manifest, or a built-in (digits, "
        "foolbox:imagenet, foolbox:cifar10, foolbox:mnist...)",
    )
    parser.add_argument(
        "--eps",
        type=budgets,
        help="the budgets in 0-255 pixel levels (L2: 0-255 units), e.g. 8 or 1,2,4",
    )
    parser.add_argument(
        "--norm", choices=["linf", "l2"], default="linf", help="threat model (default linf)"
    )
    parser.add_argument(
        "--attacks",
        default="standard",
        metavar="CASCADE",
        help="standard (default: APGD-CE, APGD-T, FAB-T, Square), fast (APGD-CE, APGD-T), or "
        "attack names in order: apgd-ce,square",
    )
    parser.add_argument(
        "--n",
        "--images",
        dest="n",
        type=positive_int,
        metavar="N",
        help="evaluate N images (a fixed subset spread over the classes); under torchrun write "
        "--images N (torchrun reads --n as an abbreviation of its own options)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=100,
        help="images per chunk: the unit of work and of resume (default 100)",
    )
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default="fp32",
        help="attacks under autocast in bf16/fp16 (successes re-checked in fp32; default fp32)",
    )
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--out", "-o", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run recorded in --out")
    parser.add_argument(
        "--force", action="store_true", help="start over in an --out that holds a run"
    )
    parser.add_argument(
        "--shard",
        type=shard_spec,
        metavar="I/N",
        help="evaluate shard I of N only (0/4 ... 3/4), for job arrays; then --merge",
    )
    parser.add_argument(
        "--merge",
        metavar="DIR",
        help="merge the shards written into DIR into one summary and figure",
    )
    parser.add_argument(
        "--save-adversarial",
        action="store_true",
        help="also write the adversarial images into --out",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="an unreadable image is an error (default: skipped and listed)",
    )
    parser.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    parser.add_argument(
        "--json", action="store_true", help="print the summary JSON on stdout (progress: stderr)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    add_model_options(parser)
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate (or merge shards) and show the outcome; exit 0 whatever the robust accuracy."""
    import warnings

    from trompe.cli.attack import _show_warning

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        if args.merge is not None:
            return _merge(args)
        return _evaluate(args)


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _check_out(text: str, flag: str) -> Path:
    """Refuse, before any work, an output folder that cannot be one."""
    if not text.strip():
        raise InvalidArgumentError(f"{flag} is empty; give a folder, e.g. {flag} eval/")
    if "\x00" in text:
        raise InvalidArgumentError(f"{flag} holds a NUL character, which no path can")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"{flag} {printable(repr(text))} is a file, not a folder; choose another"
        )
    return out


def _evaluate(args: argparse.Namespace) -> int:
    if args.data is None:
        raise InvalidArgumentError(
            "give --data: a folder of class subfolders, a .csv/.jsonl manifest, or a built-in "
            "(digits, foolbox:imagenet...)"
        )
    if args.eps is None:
        raise InvalidArgumentError(
            "give --eps, the budgets in 0-255 levels (--eps 8, or --eps 1,2,4 for several)"
        )
    if args.resume and args.force:
        raise InvalidArgumentError(
            "--resume continues the run in --out, --force starts it over: give one of them"
        )
    out = _check_out(args.out, "--out")

    from trompe.api import evaluate, evaluation_budgets, evaluation_device

    eps = evaluation_budgets(args.eps, args.norm, levels=True, eps_name="--eps")
    err = _stderr()
    where = evaluation_device(args.device)
    clf = model_from_args(args, device=None if where is None else str(where))
    rank = _rank()
    show = rank == 0 and not args.no_progress
    with _Display(err, eps, args.norm, enabled=show) as display:
        report = evaluate(
            clf,
            args.data,
            eps=eps,
            norm=args.norm,
            attacks=args.attacks,
            n=args.n,
            batch_size=args.batch_size,
            seed=args.seed,
            precision=args.precision,
            out=out,
            resume=args.resume,
            force=args.force,
            shard=args.shard,
            checks=not args.no_checks,
            save_adversarial=args.save_adversarial,
            strict=args.strict,
            progress=display,
        )
    if rank != 0:
        return EXIT_OK  # rank 0 merges and speaks for all
    return _show(report, args)


def _merge(args: argparse.Namespace) -> int:
    given = [
        flag
        for flag, value in (
            ("--data", args.data),
            ("--eps", args.eps),
            ("--n", args.n),
            ("--shard", args.shard),
            ("--resume", args.resume or None),
            ("--save-adversarial", args.save_adversarial or None),
        )
        if value is not None
    ]
    if given:
        raise InvalidArgumentError(
            f"--merge DIR reads the configuration from the shards' records; it takes no "
            f"{', '.join(given)}"
        )
    folder = _check_out(args.merge, "--merge")
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"--merge {printable(repr(args.merge))}: no such folder; give the --out of the shards"
        )

    from trompe.evaluation import merge

    return _show(merge(folder, force=args.force), args)


def _stderr() -> Console:
    from trompe.cli._console import console

    return console(stderr=True)


def _written(out: Path | None) -> list[str]:
    """The files and folders in the output folder, folders with a slash."""
    if out is None or not out.is_dir():
        return []
    return sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())


def _show(report: EvaluationReport, args: argparse.Namespace) -> int:
    from trompe.cli._console import print_json

    summary = report.summary()
    if args.json:
        summary["out"] = None if report.out_dir is None else str(report.out_dir)
        summary["files"] = _written(report.out_dir)
        print_json(summary)
        return EXIT_OK
    _print_table(report)
    return EXIT_OK


def _print_table(report: EvaluationReport) -> None:
    from rich.table import Table

    from trompe.cli._console import console, shown

    out = console()
    summary = report.summary()
    config = summary["config"]
    stages = [s["attack"] for s in config["stages"]]
    evaluated = int(summary["evaluated"])
    norm = {"linf": "L-inf", "l2": "L2"}.get(config["norm"], config["norm"])
    model = config["model"].get("id", "model")
    data = config["data"].get("source", config["data"].get("kind", "data"))
    cascade = ", ".join(stages)
    if config.get("cascade") in ("standard", "fast"):
        cascade = f"{config['cascade']} cascade ({cascade})"
    table = Table(
        title=f"{shown(model)} on {shown(data)}: {evaluated} images, {norm}, {shown(cascade)}",
        title_justify="left",
    )
    table.add_column("budget" + (" (0-255 units)" if config["norm"] == "l2" else ""))
    table.add_column("accuracy", justify="right")
    for stage in stages:
        table.add_column(f"broken by {shown(stage)}", justify="right")
    table.add_column("model calls", justify="right")
    table.add_row(
        "clean",
        f"{summary['clean_accuracy']:.1%} ({summary['correct']}/{evaluated})",
        *([""] * len(stages)),
        "",
    )
    for budget in summary["budgets"]:
        name = budget["eps_text"] if config["norm"] == "linf" else f"{budget['eps_levels']:.4g}"
        table.add_row(
            name,
            f"{budget['robust_accuracy']:.1%} ({budget['robust']}/{evaluated})",
            *(str(budget["broken_by"].get(stage, 0)) for stage in stages),
            f"{budget['forwards']:,} fwd, {budget['gradients']:,} grad",
        )
    out.print(table)
    skipped = summary.get("skipped") or []
    if skipped:
        listed = ", ".join(f"{shown(s['id'])} ({shown(s['reason'])})" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        out.print(f"skipped {len(skipped)} unreadable: {listed}{more} (listed in summary.json)")
    rejected = sum(int(b.get("rejected", 0)) for b in summary["budgets"])
    if rejected:
        out.print(
            f"{rejected} candidate(s) an attack reported as successful were not adversarial on "
            "the 8-bit image re-predicted in float32: not counted"
        )
    warnings = summary.get("warnings") or []
    for warning in warnings:
        out.print(f"[yellow]warning[/yellow] {shown(warning['code'])}: {shown(warning['message'])}")
    if not warnings and config.get("checks", True):
        out.print("[green]no sign of gradient masking[/green] (see docs/evaluate.md, checks)")
    out.print(f"time: {_duration(float(summary.get('seconds', 0.0)))}")
    files = _written(report.out_dir)
    if files:
        out.print(f"files in {shown(report.out_dir)}/: {shown(', '.join(files))}")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Display:
    """The progress of an evaluation on stderr: a bar with the running accuracies and the time
    left on a terminal; without one (a log file, a job), a line every tenth of the work or every
    half minute. Silent when disabled."""

    def __init__(self, err: Console, eps: tuple[float, ...], norm: str, *, enabled: bool) -> None:
        from trompe.units import format_budget

        self.err = err
        self.enabled = enabled
        self.tty = enabled and err.is_terminal
        self.names = [format_budget(e, norm) if norm == "linf" else f"{e * 255:.4g}" for e in eps]
        self.bar: Any = None
        self.task: Any = None
        self.first: tuple[int, float] | None = None
        self.last_line: tuple[int, float] | None = None

    def __enter__(self) -> _Display:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("[bold]evaluating"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[accuracy]}"),
                TextColumn("{task.fields[time]}"),
                TextColumn("[dim]{task.fields[stage]}"),
                console=self.err,
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("evaluate", total=None, accuracy="", time="", stage="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _accuracy(self, p: EvalProgress) -> str:
        if p.done == 0:
            return ""
        parts = [f"clean {p.correct / p.done:.1%}"]
        pairs = zip(self.names, p.robust, strict=False)
        parts += [f"{name} {count / p.done:.1%}" for name, count in pairs]
        return ", ".join(parts)

    def _left(self, p: EvalProgress) -> float | None:
        """Seconds left, from the pace since the first report (resumed images excluded)."""
        if self.first is None:
            return None
        done, seconds = self.first
        if p.done <= done or p.seconds <= seconds:
            return None
        pace = (p.seconds - seconds) / (p.done - done)
        return pace * max(p.total - p.done, 0)

    def __call__(self, p: EvalProgress) -> None:
        if not self.enabled:
            return
        if self.first is None:
            self.first = (p.done, p.seconds)
        left = self._left(p)
        time_text = _duration(p.seconds)
        if left is not None and p.done < p.total:
            time_text += f", ~{_duration(left)} left"
        if self.tty:
            self.bar.update(
                self.task,
                completed=p.done,
                total=p.total,
                accuracy=self._accuracy(p),
                time=time_text,
                stage=p.stage,
            )
            return
        if p.stage or p.done == 0:
            return  # lines only between chunks, once there is something to say
        if self.last_line is not None:
            done, when = self.last_line
            if p.done == done:
                return
            step = max(p.total // 10, 1)
            if p.done < p.total and p.done - done < step and time.monotonic() - when < _LINE_EVERY:
                return
        self.last_line = (p.done, time.monotonic())
        line = f"trompe: {p.done}/{p.total} images"
        world = os.environ.get("WORLD_SIZE", "1")
        if world not in ("", "1"):
            line += f" of rank {_rank()}'s shard ({world} processes)"
        accuracy = self._accuracy(p)
        if accuracy:
            line += f", {accuracy}"
        print(f"{line}, {time_text}", file=sys.stderr, flush=True)
