"""The command line against hostile input, a hostile terminal and a hostile OS.

The contract: exit code 0, 1 (failure at run time), 2 (usage), 130 (Ctrl-C), 143 (SIGTERM) or
141 (the reader of stdout went away); at most one line on stderr for an error, never a
traceback, control characters shown escaped; the output folder holds all of its files or none,
never a temporary; the input photo is never an output.

Most tests run ``python -m trompe`` in a subprocess, as a user runs it. The property-based tests
run :func:`trompe.cli.main` in this process with stdout and stderr captured, because a
subprocess per example would import torch each time (3 s x 25 examples); they check the same
contract on the same code path.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import trompe.cli
from trompe._files import TEMPORARY_PATTERN, _host_tag, remove_stale_temporaries, signals_deferred
from trompe.cli._console import printable, shown
from trompe.images import example_path

OUTPUTS = {"adversarial.png", "perturbation.png", "report.png", "result.json"}
#: The cheapest attack that runs the whole pipeline: one PGD step on the model-size crop.
QUICK = ("--resolution", "model", "--steps", "1", "--no-progress")


def run(*args: str, cwd: Path | None = None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "trompe", *args], text=True, timeout=300, cwd=cwd, **kwargs
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_all_or_nothing(folder: Path) -> None:
    names = {p.name for p in folder.iterdir()} if folder.exists() else set()
    assert names in (set(), OUTPUTS), sorted(names)


# -- files: the input is never an output; output paths checked first, with the true reason ----


@pytest.mark.parametrize("how", ["same name", "hard link"])
def test_the_input_photo_is_never_overwritten_even_with_force(tmp_path: Path, how: str) -> None:
    photo = tmp_path / ("adversarial.png" if how == "same name" else "photo.png")
    shutil.copy(example_path("chelsea"), photo)
    if how == "hard link":
        os.link(photo, tmp_path / "report.png")
    before = photo.read_bytes()
    result = run("attack", str(photo), "--out", str(tmp_path), "--force", *QUICK)
    one_line(result, 2, "input photo", "--out")
    assert photo.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_paths_are_refused_with_the_true_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "taken" / "report.png").mkdir(parents=True)
    cases = [
        ("file/out", 1, ("'file'", "is a file, not a folder")),
        ("dangling", 1, ("link", "does not exist")),
        ("dangling/out", 1, ("link", "does not exist")),
        ("", 2, ("--out is empty",)),
        ("taken", 1, ("report.png", "is a folder")),
    ]
    for out, code, words in cases:
        line = one_line(run("attack", "--out", out, *QUICK, cwd=tmp_path), code, *words)
        assert "permission" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "file", "taken"]
    assert (tmp_path / "file").read_text() == "mine"


# -- the terminal: markup and control characters are shown as typed ---------------------------


def test_names_with_markup_and_escape_sequences_are_shown_as_typed(tmp_path: Path) -> None:
    names = ["[bold red]x.png", "\x1b]0;pwned\x07y.png", "\x1b[31mred.png"]
    for name in names:
        shutil.copy(example_path("chelsea"), tmp_path / name)
    result = run("classify", *names, "--top", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[bold red]x.png" in result.stdout
    assert "\\x1b]0;pwned\\x07y.png" in result.stdout and "\\x1b[31mred.png" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    missing = run("classify", "\x1b]0;gone\x07.png", cwd=tmp_path)
    line = one_line(missing, 1, "\\x1b]0;gone\\x07.png")
    assert "\x1b" not in line


def test_attack_into_a_markup_folder_cleans_only_its_own_stale_temporaries(
    tmp_path: Path,
) -> None:
    out = tmp_path / "res[" / "bold]ults"  # shown as .../res[/bold]ults/, a closing tag
    out.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = _host_tag()
    stale = out / f".report.png.{host}-{dead.pid}-0123abcd.trompe.tmp"
    stale.write_bytes(b"half a png")
    keep = [
        out / f".report.png.{host}-{os.getpid()}-0123abcd.trompe.tmp",  # alive: this test
        out / f".report.png.{'0' if host != '000000' else '1'}00000-{dead.pid}-0123abcd.trompe.tmp",
        out / ".report.png.1234abcd.png.tmp",  # not trompe's pattern
        out / "notes.txt",
    ]
    for path in keep:
        path.write_text("not trompe's to delete")
    link = out / f".x.{host}-{dead.pid}-0123abcd.trompe.tmp"
    link.symlink_to(out / "notes.txt")
    result = run("attack", "--target", "tiger cat", "--out", str(out), *QUICK)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and "MarkupError" not in result.stderr
    assert "res[/bold]ults/" in result.stdout
    assert not stale.exists()
    assert all(p.read_text() == "not trompe's to delete" for p in keep)
    assert link.is_symlink()
    assert {p.name for p in out.iterdir()} == OUTPUTS | {p.name for p in [*keep, link]}


# -- the OS: stdout on a full disk, a closed pipe, a closed descriptor; memory; devices --------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_disk_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        result = run("labels", "--json", stdout=full, stderr=subprocess.PIPE)
    one_line(result, 1, "No space left")


def test_a_reader_that_goes_away_ends_the_run_quietly() -> None:
    for args in (("labels",), ("labels", "--json")):
        process = subprocess.Popen(
            [sys.executable, "-m", "trompe", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.close()  # the reader is gone before the first byte
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 141, stderr
        assert stderr == b""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
def test_a_closed_stdout_is_written_to_nowhere() -> None:
    command = 'exec "$@" >&-'
    result = subprocess.run(
        ["sh", "-c", command, "sh", sys.executable, "-m", "trompe", "labels", "lemon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--device", "meta", ("cpu, cuda, cuda:N", "mps")),
        ("--device", "xpu", ("cpu, cuda, cuda:N",)),
        ("--device", "cuda:77", ("cuda:77",)),
        ("--seed", "1e23", ("--seed", "whole number")),
        ("--seed", "1" + "0" * 23, ("--seed", "2**63 - 1")),
        ("--steps", "9" * 30, ("--steps", "2,147,483,647")),
        ("-O", "seed=" + "9" * 25, ("seed", "2**63 - 1")),
    ],
)
def test_odd_devices_and_huge_numbers_are_usage_errors(
    tmp_path: Path, flag: str, value: str, words: tuple[str, ...]
) -> None:
    out = tmp_path / "out"
    one_line(run("attack", f"{flag}={value}", "--out", str(out), *QUICK), 2, *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 432000000 bytes. Error code 12"
        ),
        pytest.param("torch", id="torch.OutOfMemoryError"),
    ],
)
def test_out_of_memory_is_one_line_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: object
) -> None:
    """The mapping at the CLI boundary, in this process; the subprocess test below runs out of
    memory for real."""
    import torch

    from trompe.cli import classify

    raised = error
    if error == "torch":
        raised = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    def exhausted(args: object) -> int:
        assert isinstance(raised, BaseException)
        raise raised

    monkeypatch.setattr(classify, "run_classify", exhausted)
    assert trompe.cli.main(["classify"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("trompe: error: out of memory")
    assert "--resolution model" in err and "--max-pixels" in err and "internal" not in err


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as on Linux")
def test_a_photo_too_large_for_memory_is_one_line(tmp_path: Path) -> None:
    import resource

    from conftest import write_huge_bilevel_png

    limit = 2 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    probe = subprocess.run(
        [sys.executable, "-c", "import torch, trompe; torch.zeros(1000)"],
        preexec_fn=cap,
        capture_output=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip("this torch needs more than 2 GiB of address space to start")
    photo = tmp_path / "large.png"
    write_huge_bilevel_png(photo, 6000, 6000)
    out = tmp_path / "out"
    result = run("attack", str(photo), "--steps", "1", "--out", str(out), preexec_fn=cap)
    one_line(result, 1, "out of memory", "--resolution model")
    assert not out.exists()


# -- signals: SIGTERM as SIGINT; all or nothing at every instant --------------------------------


def attack_process(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trompe", "attack", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def temporaries(folder: Path) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if TEMPORARY_PATTERN.match(n)]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)],
    ids=["SIGINT", "SIGTERM", "SIGINT twice"],
)
def test_a_signal_during_the_save_leaves_all_files_or_none(
    tmp_path: Path, signals: tuple[signal.Signals, ...]
) -> None:
    out = tmp_path / "out"
    process = attack_process(out, "--target", "tiger cat", *QUICK)
    deadline = time.monotonic() + 120
    seen = False
    while process.poll() is None and time.monotonic() < deadline:
        if temporaries(out):  # the save has begun: its first file is staged
            seen = True
            for signum in signals:
                process.send_signal(signum)
                time.sleep(0.01)
            break
        time.sleep(0.001)
    _, stderr = process.communicate(timeout=120)
    assert seen, "the save was never seen: poll faster"
    assert "Traceback" not in stderr
    expected = 128 + signals[0]
    if seen and process.returncode == expected:
        lines = stderr.strip().splitlines()
        assert lines[-1] in ("trompe: interrupted", "trompe: terminated"), stderr
    else:  # it finished before the signal landed
        assert process.returncode in (0, 1), stderr
    assert_all_or_nothing(out)
    assert temporaries(out) == []


@pytest.mark.parametrize(("signum", "delay"), [(signal.SIGINT, 2.0), (signal.SIGTERM, 6.0)])
def test_a_signal_at_start_up_or_mid_attack_ends_in_one_line(
    tmp_path: Path, signum: signal.Signals, delay: float
) -> None:
    out = tmp_path / "out"
    # half a pixel level rounds to no change at all: this attack can never succeed
    process = attack_process(out, "--eps", "0.4", "--steps", "100000", "--no-progress")
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    *warned, last = stderr.strip().splitlines()
    assert last == f"trompe: {word}", stderr
    # once the attack is built (timing-dependent), the one-line warning that a budget under one
    # level changes nothing may come first; nothing else may
    assert all(line.startswith("trompe: warning: ") for line in warned), stderr
    assert not out.exists()


#: What pip writes for the ``trompe`` console script (``[project.scripts]``).
CONSOLE_SCRIPT = """\
import re
import sys
from trompe.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def interrupt_at_start(command: list[str], delay: float) -> tuple[int, str]:
    """Start ``command`` (a Python command line for trompe) with ``-X importtime``; send it
    SIGINT ``delay`` seconds after trompe's first module, trompe._version, is imported (the
    handler is installed before it); return the exit code and stderr without the import times."""
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.split("|")[-1].strip() == "trompe._version":
                started.set()
        started.set()  # ended before: the assertions say so

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(120), "trompe never started"
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=60)
    return process.returncode, "".join(ln for ln in lines if not ln.startswith("import time:"))


@pytest.mark.parametrize("delay", [0.0, 0.005, 0.01, 0.03, 0.1])
@pytest.mark.parametrize("form", ["python -m trompe", "console script"])
def test_ctrl_c_at_start_up_is_one_line_and_130(tmp_path: Path, form: str, delay: float) -> None:
    """From trompe's first line on, Ctrl-C at any instant of the start-up (the imports of
    trompe.cli, before main() installs its handler; the parsing; the imports of torch) ends in
    "trompe: interrupted" and 130, never a traceback. Earlier than that is Python's own start
    (site, runpy), which trompe cannot reach."""
    if form == "console script":
        script = tmp_path / "trompe"
        script.write_text(CONSOLE_SCRIPT)
        program = [str(script)]
    else:
        program = ["-m", "trompe"]
    out = tmp_path / "out"
    # half a pixel level rounds to no change at all: this attack can never succeed
    args = ["attack", "--out", str(out), "--eps", "0.4", "--steps", "100000", "--no-progress"]
    code, stderr = interrupt_at_start([*program, *args], delay)
    assert "Traceback" not in stderr, stderr
    assert code == trompe.cli.EXIT_INTERRUPTED, stderr
    *warned, last = stderr.strip().splitlines()
    assert last == "trompe: interrupted", stderr
    assert all(line.startswith("trompe: warning: ") for line in warned), stderr
    assert not out.exists()


def test_importing_trompe_in_a_program_of_ones_own_changes_no_handler() -> None:
    check = (
        "import signal, trompe, trompe.cli; "
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=120)


def test_signals_deferred_delivers_after_the_step() -> None:
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert received == []
        assert received == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is not None
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_remove_stale_temporaries_touches_nothing_else(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = _host_tag()
    stale = tmp_path / f".a.png.{host}-{dead.pid}-00000000.trompe.tmp"
    stale.write_bytes(b"")
    folder = tmp_path / f".b.png.{host}-{dead.pid}-00000001.trompe.tmp"
    folder.mkdir()
    alive = tmp_path / f".c.png.{host}-{os.getppid()}-00000002.trompe.tmp"
    alive.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert folder.is_dir() and alive.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_shown_strings_render_as_typed(text: str) -> None:
    from rich.text import Text

    visible = printable(text)
    assert visible.isprintable()
    assert visible == text or not text.isprintable()
    # As the CLI uses it, followed by markup of its own (alone, rich doubles a last backslash).
    assert Text.from_markup(shown(text) + "[bold]|[/bold]").plain == visible + "|"


HOSTILE = ["", " ", "[bold red]x", "res[/bold]ults", "\x1b[31m", "\x1b]0;t\x07", "-1", "a\tb"]


def values(valid: list[str | None], odd: list[str]) -> st.SearchStrategy[str | None]:
    """A valid value 7 times in 10 (so that some runs reach the attack and the save), else an
    odd or hostile one."""
    hostile = st.sampled_from([*odd, *HOSTILE]) | st.text(max_size=8)
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(valid) if n < 7 else hostile)


@settings(
    # TROMPE_HOSTILE_EXAMPLES=500 for a longer hunt; 20 keep CI fast (~15 s).
    max_examples=int(os.environ.get("TROMPE_HOSTILE_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    eps=values([None, "8", "0.5,1"], ["0", "300", "nan", "inf", "1e309", "4,x", "1,,2"]),
    target=values([None, "tiger cat", "281"], ["1000", "99999999999999999999", "lemmon"]),
    seed=values([None, "0", "7"], ["1e23", "9" * 25, "-1"]) | st.integers(-(2**70), 2**70).map(str),
    device=values([None, "cpu"], ["meta", "xpu", "cuda:99", "cpu:1"]),
    out=values([None, "out", "[bold]o", "res[/bold]ults", "a\x1bb"], ["file/sub", "dangling"]),
    image=st.none() | st.sampled_from(["[x].png", "\x1b]0;t\x07.png", "missing.png", "file"]),
)
def test_hostile_attack_arguments_keep_the_contract(
    eps: str | None,
    target: str | None,
    seed: str | None,
    device: str | None,
    out: str | None,
    image: str | None,
) -> None:
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        (root / "file").write_text("mine")
        (root / "dangling").symlink_to(root / "nowhere")
        for photo in ("[x].png", "\x1b]0;t\x07.png"):
            shutil.copy(example_path("chelsea"), root / photo)
        argv = ["attack", *QUICK]
        if image is not None:
            argv.append(str(root / image))
        for flag, value in (("eps", eps), ("target", target), ("seed", seed), ("device", device)):
            if value is not None:
                argv.append(f"--{flag}={value}")
        folder = root / "trompe-out"
        if out is not None:
            # Relative to the temporary folder, never above it: "/", "." and ".." replaced.
            if out not in ("file/sub", "res[/bold]ults"):
                out = out.replace("/", "_").replace("\\", "_")
            if out in (".", ".."):
                out = "dots"
            if out.strip() and "\x00" not in out:
                folder = root / out
            argv.append(f"--out={out}")
        before = {p: p.read_bytes() for p in root.iterdir() if p.is_file()}
        listing = sorted(os.listdir(root))
        stdout, stderr = io.StringIO(), io.StringIO()
        cwd = Path.cwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = trompe.cli.main(argv)
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            os.chdir(cwd)
        err = stderr.getvalue()
        event(f"exit {code}")  # --hypothesis-show-statistics: how many reached the attack
        assert code in (0, 1, 2), (argv, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        for text in (stdout.getvalue(), err):
            assert "\x1b" not in text and "\x07" not in text, (argv, text)
        errors = [line for line in err.splitlines() if line.startswith("trompe")]
        if code == 2:
            assert len(errors) == 1, (argv, err)
        assert len(errors) <= 1, (argv, err)
        for path, data in before.items():
            assert path.read_bytes() == data
        if folder.is_dir() and not folder.is_symlink():
            assert_all_or_nothing(folder)
            assert temporaries(folder) == []
        if code == 2:
            assert sorted(os.listdir(root)) == listing, argv
