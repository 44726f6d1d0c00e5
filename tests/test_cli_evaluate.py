"""``trompe evaluate`` run as a user runs it: in a subprocess, reading stdout, stderr, exit code.

The shipped robust digits model (8x8 images, milliseconds a batch) and APGD-CE alone keep each
run to seconds; the cascades themselves are tested in the evaluation's own tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from _helpers import one_line_error, run_cli
from trompe.models.digits import DigitsData

PNG = b"\x89PNG\r\n\x1a\n"
#: A cheap evaluation of 40 digits in 2 chunks, at 16 and 32 levels.
CHEAP = (
    "evaluate",
    "--model",
    "digits_robust",
    "--data",
    "digits",
    "--n",
    "40",
    "--batch-size",
    "20",
    "--attacks",
    "apgd-ce",
)


def evaluate(out: Path, *args: str, eps: str = "16,32") -> subprocess.CompletedProcess[str]:
    return run_cli(*CHEAP, "--eps", eps, "--out", str(out), *args)


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One finished evaluation, shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("eval") / "run"
    return out, evaluate(out)


def records(out: Path) -> list[dict[str, object]]:
    lines = []
    for part in sorted((out / "records").glob("*.jsonl")):
        rows = [json.loads(line) for line in part.read_text().splitlines() if line.strip()]
        lines += [row for row in rows if "position" in row]  # not the header, chunk ends
    return lines


def test_help_answers_without_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trompe", "evaluate", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: trompe evaluate" in result.stdout and "--resume" in result.stdout
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {"torch", "matplotlib", "numpy"}, sorted(imported)


def test_an_evaluation_writes_its_files_and_prints_the_table(
    done: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, result = done
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluated"] == 40
    assert [b["eps_text"] for b in summary["budgets"]] == ["16/255", "32/255"]
    small, large = (b["robust_accuracy"] for b in summary["budgets"])
    assert large <= small <= summary["clean_accuracy"]
    assert (out / "figure.png").read_bytes().startswith(PNG)
    lines = records(out)
    assert sorted(r["position"] for r in lines) == sorted({r["position"] for r in lines})
    assert len(lines) == 40
    # The table: clean and robust accuracy as the summary has them, the attack, the files.
    text = result.stdout
    assert "digits_robust" in text and "clean" in text and "broken by apgd-ce" in text
    assert f"{summary['clean_accuracy']:.1%}" in text
    for budget in summary["budgets"]:
        assert budget["eps_text"] in text and f"{budget['robust_accuracy']:.1%}" in text
    assert "summary.json" in text and "figure.png" in text
    # Without a terminal, progress is a few plain lines on stderr, the last at 40 of 40.
    progress = [line for line in result.stderr.splitlines() if line.startswith("trompe: ")]
    assert progress and "40/40 images" in progress[-1]
    assert "\x1b[" not in result.stderr  # no terminal codes in a log file


def test_json_puts_only_the_summary_on_stdout(tmp_path: Path) -> None:
    result = evaluate(tmp_path / "run", "--json", "--no-checks", eps="32")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["evaluated"] == 40 and data["config"]["eps"] == [32 / 255]
    assert {"summary.json", "figure.png", "records/"} <= set(data["files"])
    assert data == {
        **json.loads((tmp_path / "run" / "summary.json").read_text()),
        "out": data["out"],
        "files": data["files"],
    }


def test_an_existing_run_is_kept_unless_resume_or_force(
    done: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, first = done
    assert first.returncode == 0, first.stderr
    before = (out / "summary.json").read_bytes()
    one_line_error(evaluate(out), 2, "--resume", "--force")
    assert (out / "summary.json").read_bytes() == before  # nothing lost
    # A resume of the finished run has nothing left to do and gives the same numbers.
    again = evaluate(out, "--resume", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["budgets"] == json.loads(before)["budgets"]


def test_a_resume_with_other_budgets_names_the_difference(
    done: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, first = done
    assert first.returncode == 0, first.stderr
    line = one_line_error(evaluate(out, "--resume", eps="8,32"), 2, "eps")
    assert "8/255" in line or str(8 / 255)[:6] in line


@pytest.mark.slow
def test_ctrl_c_exits_130_and_resume_finishes_with_the_same_numbers(
    done: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    single, first = done
    assert first.returncode == 0, first.stderr
    out = tmp_path / "run"
    command = [sys.executable, "-m", "trompe", *CHEAP, "--eps", "16,32", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = out / "records" / "part-0-of-1.jsonl"
    deadline = time.monotonic() + 240
    # Interrupt once the first of the two chunks is recorded, while the second runs.
    while process.poll() is None and time.monotonic() < deadline:
        if part.exists() and '"done": 0' in part.read_text():
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "trompe: interrupted" and stdout == ""
    assert not (out / "summary.json").exists()
    assert {r["chunk"] for r in records(out)} == {0}  # the finished chunk is kept
    resumed = evaluate(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    mine = json.loads((out / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    for key in ("fingerprint", "evaluated", "correct", "budgets", "per_class", "warnings"):
        assert mine[key] == reference[key], key


@pytest.mark.slow
def test_shards_merge_into_the_single_run(
    done: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    single, first = done
    assert first.returncode == 0, first.stderr
    out = tmp_path / "sharded"
    for shard in ("0/2", "1/2"):
        result = evaluate(out, "--shard", shard, "--no-checks")
        assert result.returncode == 0, result.stderr
    merged = run_cli("evaluate", "--merge", str(out), "--json")
    assert merged.returncode == 0, merged.stderr
    data = json.loads(merged.stdout)
    reference = json.loads((single / "summary.json").read_text())
    for key in ("evaluated", "correct", "clean_accuracy", "per_class"):
        assert data[key] == reference[key], key
    for mine, theirs in zip(data["budgets"], reference["budgets"], strict=True):
        assert mine["robust"] == theirs["robust"] and mine["broken_by"] == theirs["broken_by"]
    assert (out / "figure.png").read_bytes().startswith(PNG)


@pytest.mark.slow
def test_torchrun_runs_the_command_and_rank_0_speaks(
    done: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    from test_eval_distributed import free_loopback_port, loopback_only

    single, first = done
    assert first.returncode == 0, first.stderr
    out = tmp_path / "torchrun"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_loopback_port()),
        "-m", "trompe", *CHEAP[:5], "--images", "40", *CHEAP[7:],
        "--eps", "16,32", "--out", str(out), "--json",
    ]  # fmt: skip
    assert CHEAP[5] == "--n"  # replaced: torchrun reads --n as its own --nnodes, --nproc...
    environ = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(
        loopback_only(command), env=environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)  # one summary: rank 0 alone prints
    reference = json.loads((single / "summary.json").read_text())
    assert data["fingerprint"] == reference["fingerprint"]  # the same configuration
    for key in ("evaluated", "correct", "clean_accuracy", "per_class", "warnings"):
        assert data[key] == reference[key], key
    for mine, theirs in zip(data["budgets"], reference["budgets"], strict=True):
        assert mine["robust"] == theirs["robust"] and mine["broken_by"] == theirs["broken_by"]
    assert sorted(p.name for p in (out / "records").iterdir()) == [
        "part-0-of-2.jsonl",
        "part-1-of-2.jsonl",
    ]


# -- bad input: one line, the exit code the README gives, nothing on stdout ---------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--eps", "0"), 2, ["--eps", "above 0"]),
        (("--eps", "-2"), 2, ["--eps"]),
        (("--eps", "300"), 2, ["--eps", "255"]),
        (("--eps", "8", "--attacks", "apgd-xx"), 2, ["apgd-xx"]),
        (("--eps", "8", "--shard", "2/2"), 2, ["--shard"]),
        (("--eps", "8", "--resume", "--force"), 2, ["--resume", "--force"]),
        (("--eps", "8", "--norm", "l1"), 2, ["--norm"]),
        (("--eps", "8", "--precision", "fp8"), 2, ["--precision"]),
        ((), 2, ["--eps"]),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, args: tuple[str, ...], code: int, words: list[str]
) -> None:
    result = run_cli(*CHEAP, "--out", str(tmp_path / "run"), *args)
    one_line_error(result, code, *words)
    assert not (tmp_path / "run").exists()


def test_an_l2_budget_beyond_any_change_is_refused(tmp_path: Path) -> None:
    # 8x8 RGB: no change is larger than sqrt(192) x 255 = 3533 in 0-255 units.
    result = evaluate(tmp_path / "run", "--norm", "l2", eps="4000")
    one_line_error(result, 2, "L2", "larger than any change")


def test_unknown_data_and_an_empty_folder_are_one_line(tmp_path: Path) -> None:
    unknown = run_cli(
        "evaluate", "-m", "digits_robust", "--data", "no-such-data", "--eps", "8",
        "--attacks", "apgd-ce", "--out", str(tmp_path / "a"),
    )  # fmt: skip
    one_line_error(unknown, 2, "no-such-data")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(
        "evaluate", "-m", "digits_robust", "--data", str(empty), "--eps", "8",
        "--attacks", "apgd-ce", "--out", str(tmp_path / "b"),
    )  # fmt: skip
    one_line_error(result, 2, "empty")


def test_an_unreadable_image_is_skipped_and_listed_or_with_strict_an_error(
    tmp_path: Path, digits: DigitsData
) -> None:
    data = tmp_path / "digits"
    for k in range(6):
        label = int(digits.test_labels[k])
        folder = data / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.test_images[k] * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{k}.png")
    (data / str(int(digits.test_labels[0])) / "broken.png").write_bytes(b"\x89PNG not really")
    args = ["evaluate", "-m", "digits_robust", "--data", str(data), "--eps", "16"]
    args += ["--attacks", "apgd-ce", "--no-checks"]
    result = run_cli(*args, "--out", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable" in result.stdout and "broken.png" in result.stdout
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["evaluated"] == 6 and len(summary["skipped"]) == 1
    assert summary["skipped"][0]["id"].endswith("broken.png")
    strict = run_cli(*args, "--strict", "--out", str(tmp_path / "b"))
    one_line_error(strict, 1, "broken.png")


def test_merge_takes_no_evaluation_flags(tmp_path: Path) -> None:
    one_line_error(run_cli("evaluate", "--merge", str(tmp_path), "--eps", "8"), 2, "--eps")
    one_line_error(run_cli("evaluate", "--merge", str(tmp_path / "none")), 2, "--merge")


def test_an_output_path_through_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("not a folder")
    one_line_error(evaluate(file), 2, "not a folder")
