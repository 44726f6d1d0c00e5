"""Start-up time of the ``trompe`` command line.

Runs each command as a user types it (the ``trompe`` console script, in a fresh process, output
thrown away) ``--repeats`` times after one warm-up run, and prints the minimum and the median
wall-clock time of each, with the machine's load average before and after. The minimum is the
best estimate of the cost itself on a shared machine (other processes only ever add time); the
median shows what a user waits for typically.

With several ``--src`` folders (each put on ``PYTHONPATH``, e.g. a checkout of the previous
version and this one), the runs are interleaved, command by command, so that the load of other
processes falls on both alike, and the table gives the ratio of their medians.

With ``--importtime`` it also prints the modules that ``import <module>`` spends the most time
on, from ``python -X importtime`` (cumulative microseconds, as the interpreter reports them).

Usage::

    python benchmarks/bench_startup.py                         # 10 runs of each command
    python benchmarks/bench_startup.py --repeats 20 --importtime
    mkdir -p /tmp/before && git archive REV src | tar -x -C /tmp/before   # REV: the old version
    python benchmarks/bench_startup.py --src /tmp/before/src --src src
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The commands of the issue: help and version, then the three listings.
COMMANDS = (
    "trompe --help",
    "trompe --version",
    "trompe attack --help",
    "trompe labels lemon",
    "trompe attacks",
    "trompe models",
)


def _trompe_script() -> str:
    """The console script installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name("trompe")
    if beside.exists():
        return str(beside)
    found = shutil.which("trompe")
    if found is None:
        sys.exit("bench_startup: no `trompe` script beside this Python or on PATH")
    return found


def run_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one run of ``argv``; exits if the command fails."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_startup: {shlex.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


def time_commands(
    commands: list[list[str]], sources: list[str | None], repeats: int
) -> dict[tuple[int, int], list[float]]:
    """Seconds of each (command, source) pair, ``repeats`` times after one warm-up run.

    The runs are interleaved: each repeat runs every command with every source in turn, so that
    a change of load on a shared machine hits all of them alike.
    """
    envs = []
    for src in sources:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = src
        envs.append(env)
    times: dict[tuple[int, int], list[float]] = {
        (c, s): [] for c in range(len(commands)) for s in range(len(sources))
    }
    for repeat in range(repeats + 1):
        for c, argv in enumerate(commands):
            for s, env in enumerate(envs):
                elapsed = run_once(argv, env)
                if repeat > 0:
                    times[c, s].append(elapsed)
    return times


def import_offenders(module: str, top: int, src: str | None) -> list[tuple[int, int, str]]:
    """The ``top`` imports of ``module`` with the largest cumulative time (self, total, name)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, total_us, name = line.removeprefix("import time:").split("|")
        rows.append((int(self_us), int(total_us), name.strip()))
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows[:top]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per command")
    parser.add_argument(
        "--command",
        action="append",
        help="a command to time instead of the default list (repeatable), e.g. 'trompe models'",
    )
    parser.add_argument(
        "--src",
        action="append",
        metavar="DIR",
        help="time the trompe found in DIR (set as PYTHONPATH) instead of the installed one; "
        "repeat it to compare checkouts, run for run (e.g. --src old/src --src src)",
    )
    parser.add_argument(
        "--importtime", action="store_true", help="also list the slowest imports of trompe.cli"
    )
    parser.add_argument("--module", default="trompe.cli", help="the module for --importtime")
    parser.add_argument("--top", type=int, default=15, help="how many imports to list")
    args = parser.parse_args()

    script = _trompe_script()
    sources: list[str | None] = [os.path.abspath(src) for src in args.src or []] or [None]
    names = [src or "installed" for src in sources]
    texts = args.command or list(COMMANDS)
    commands = []
    for text in texts:
        argv = shlex.split(text)
        if argv[0] == "trompe":
            argv[0] = script
        commands.append(argv)

    print(f"trompe script: {script}; {args.repeats} runs of each command after 1 warm-up")
    for i, name in enumerate(names):
        print(f"source {i + 1}: {name}")
    print(f"load before: {_load()}")
    times = time_commands(commands, sources, args.repeats)
    print(f"load after: {_load()}")
    print()
    header = "| command |" + "".join(f" min {i + 1} | median {i + 1} |" for i in range(len(names)))
    if len(names) > 1:
        header += " median 1 / median 2 |"
    print(header)
    print("|---|" + "---:|---:|" * len(names) + ("---:|" if len(names) > 1 else ""))
    for c, text in enumerate(texts):
        row = f"| `{text}` |"
        medians = []
        for s in range(len(names)):
            runs = times[c, s]
            medians.append(statistics.median(runs))
            row += f" {min(runs):.2f} | {medians[-1]:.2f} |"
        if len(names) > 1:
            row += f" {medians[0] / medians[1]:.1f}x |"
        print(row)

    if args.importtime:
        for src, name in zip(sources, names, strict=True):
            print()
            print(f"slowest imports of `import {args.module}` from {name} (cumulative ms):")
            for self_us, total_us, module in import_offenders(args.module, args.top, src):
                print(f"  {total_us / 1000:8.1f}  (self {self_us / 1000:7.1f})  {module}")


if __name__ == "__main__":
    main()
