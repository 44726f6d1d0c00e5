"""Running an evaluation: records on disk, resume after a kill, refusals, shards and merge.

Every test evaluates the shipped robust digits CNN on a few dozen test digits with a cheap
cascade (5 APGD-CE steps, 50 Square queries), so each run takes well under a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import trompe
from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.evaluation import EvalConfig, EvalProgress, Stage, load_data, merge, run_evaluation
from trompe.evaluation._store import adversarial_name, budget_folder, read_part
from trompe.images import load_image
from trompe.models.classifier import Classifier
from trompe.models.digits import load_digits

STAGES = (Stage("apgd-ce", {"steps": 5}), Stage("square", {"queries": 50}))
EPS = (32 / 255, 64 / 255)
SRC = Path(__file__).resolve().parents[1] / "src"

# The script of the subprocess tests: the same data and configuration as setup() below.
SCRIPT = """
import json, os, sys, time
from pathlib import Path
import torch
import trompe
from trompe.evaluation import EvalConfig, Stage, load_data, run_evaluation
from trompe.models.digits import load_digits

n, batch, out, mode = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
model = trompe.load_model("digits_robust")
digits = load_digits()
data = load_data((digits.test_images[:n], digits.test_labels[:n]), model)
config = EvalConfig(
    model=model.describe(), data=data.description, norm="linf",
    eps=(32 / 255, 64 / 255),
    stages=(Stage("apgd-ce", {"steps": 5}), Stage("square", {"queries": 50})),
    batch_size=batch, seed=0, checks=True,
)

def stall(progress):
    # Once two chunks are on disk, say so and wait to be killed.
    if mode == "stall" and progress.done >= 2 * batch and not progress.stage:
        (out.parent / "stalled").write_text("1")
        time.sleep(600)

report = run_evaluation(model, data, config, out=out, progress=stall)
rank = os.environ.get("RANK", "0")
(out.parent / f"records-{rank}.json").write_text(
    json.dumps([r.to_json() for r in report.records])
)
"""


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return trompe.load_model("digits_robust")


def setup(model: Classifier, n: int = 24, batch: int = 8, checks: bool = True) -> Any:
    digits = load_digits()
    data = load_data((digits.test_images[:n], digits.test_labels[:n]), model)
    config = EvalConfig(
        model=model.describe(),
        data=data.description,
        norm="linf",
        eps=EPS,
        stages=STAGES,
        batch_size=batch,
        seed=0,
        checks=checks,
    )
    return data, config


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary as JSON, without the wall-clock time (the only number that may differ)."""
    data: dict[str, Any] = json.loads(json.dumps(summary))
    data.pop("seconds")
    return data


@pytest.fixture(scope="module")
def reference(robust: Classifier) -> Any:
    """One uninterrupted in-memory run: what every other way of running must equal."""
    data, config = setup(robust)
    return run_evaluation(robust, data, config)


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT)
    environ = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([sys.executable, str(script), *args], env=environ)


# -- one process -----------------------------------------------------------------------------


def test_in_memory_run_counts_every_image_and_reports_progress(
    robust: Classifier, reference: Any
) -> None:
    data, config = setup(robust)
    seen: list[EvalProgress] = []
    report = run_evaluation(robust, data, config, progress=seen.append)
    assert report.records == reference.records
    assert [r.position for r in report.records] == list(range(24))
    assert report.out_dir is None
    assert 0.8 < report.clean_accuracy <= 1.0
    robust_acc = list(report.robust_accuracy.values())
    assert robust_acc == sorted(robust_acc, reverse=True)  # monotone by construction
    assert robust_acc[-1] < report.clean_accuracy  # 64/255 breaks some of them
    after_chunks = [p for p in seen if not p.stage]
    assert [p.done for p in after_chunks] == [0, 8, 16, 24]
    assert all(p.total == 24 for p in seen)
    assert any(p.stage for p in seen)  # the stages are announced too
    last = after_chunks[-1]
    assert last.correct == report.summary()["correct"]
    assert list(last.robust) == [b["robust"] for b in report.summary()["budgets"]]


def test_output_folder_layout(robust: Classifier, reference: Any, tmp_path: Path) -> None:
    data, config = setup(robust)
    out = tmp_path / "eval"
    report = run_evaluation(robust, data, config, out=out)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "figure.png",
        "records",
        "summary.json",
    ]
    written = json.loads((out / "config.json").read_text())
    assert written.pop("trompe") == trompe.__version__
    assert EvalConfig.from_dict(written).fingerprint() == config.fingerprint()
    assert json.loads((out / "summary.json").read_text()) == json.loads(
        json.dumps(report.summary())
    )
    assert comparable(report.summary()) == comparable(reference.summary())
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.out_dir == out

    lines = [
        json.loads(x) for x in (out / "records" / "part-0-of-1.jsonl").read_text().splitlines()
    ]
    assert lines[0]["header"]["fingerprint"] == config.fingerprint()
    assert lines[0]["header"]["shard"] == [0, 1]
    records = [x for x in lines if "position" in x]
    assert records == [r.to_json() for r in reference.records]
    assert [x["done"] for x in lines if "done" in x] == [0, 1, 2]
    # No temporary left behind.
    assert not [p for p in out.rglob(".*")]


@pytest.mark.parametrize(
    "signum", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_resume_after_a_kill_equals_an_uninterrupted_run(
    robust: Classifier, reference: Any, tmp_path: Path, signum: int
) -> None:
    out = tmp_path / "eval"
    process = run_script(tmp_path, "24", "8", str(out), "stall")
    try:
        for _ in range(600):
            if (tmp_path / "stalled").exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "stalled").exists(), "the run never reached its second chunk"
        process.send_signal(signum)
        code = process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert code != 0
    # Nothing half-written: no temporary, no summary, no figure.
    assert sorted(p.name for p in out.rglob("*")) == ["config.json", "part-0-of-1.jsonl", "records"]
    part = out / "records" / "part-0-of-1.jsonl"
    assert [c.index for c in read_part(part).chunks] == [0, 1]
    # A kill in the middle of the next chunk's write leaves a torn line.
    with open(part, "ab") as file:
        file.write(b'{"position": 16, "id": "#16", "lab')

    data, config = setup(robust)
    seen: list[EvalProgress] = []
    report = run_evaluation(robust, data, config, out=out, resume=True, progress=seen.append)
    assert seen[0].done == 16  # two chunks resumed
    assert report.records == reference.records
    assert comparable(report.summary()) == comparable(reference.summary())
    assert comparable(json.loads((out / "summary.json").read_text())) == comparable(
        reference.summary()
    )
    assert [c.index for c in read_part(part).chunks] == [0, 1, 2]
    assert read_part(part).torn == 0


def test_half_written_chunk_is_done_again(
    robust: Classifier, reference: Any, tmp_path: Path
) -> None:
    data, config = setup(robust)
    out = tmp_path / "eval"
    run_evaluation(robust, data, config, out=out)
    part = out / "records" / "part-0-of-1.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    # Drop the last chunk's closing line and half of one of its records.
    cut = "".join(lines[:-1]) + lines[-2][:20]
    part.write_text(cut)
    assert [c.index for c in read_part(part).chunks] == [0, 1]

    seen: list[EvalProgress] = []
    report = run_evaluation(robust, data, config, out=out, resume=True, progress=seen.append)
    assert seen[0].done == 16
    assert report.records == reference.records
    assert comparable(report.summary()) == comparable(reference.summary())


def test_resume_of_another_configuration_is_refused_naming_the_difference(
    robust: Classifier, tmp_path: Path
) -> None:
    data, config = setup(robust, n=16)
    out = tmp_path / "eval"
    run_evaluation(robust, data, config, out=out)
    before = (out / "records" / "part-0-of-1.jsonl").read_bytes()
    other = EvalConfig.from_dict({**config.to_dict(), "eps": [8 / 255]})
    with pytest.raises(InvalidArgumentError) as caught:
        run_evaluation(robust, data, other, out=out, resume=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "eps:" in message and "cannot resume" in message
    assert "seed" not in message  # only what differs
    # Nothing lost.
    assert (out / "records" / "part-0-of-1.jsonl").read_bytes() == before


def test_existing_output_refused_without_resume_or_force(
    robust: Classifier, reference: Any, tmp_path: Path
) -> None:
    data, config = setup(robust)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError) as caught:
        run_evaluation(robust, data, config, out=out)
    assert "--resume" in str(caught.value) and "--force" in str(caught.value)
    assert "\n" not in str(caught.value)

    # --force starts over and keeps the user's own files.
    (out / "records").mkdir()
    (out / "records" / "part-0-of-1.jsonl").write_text("old\n")
    (out / "records" / "README").write_text("also mine")
    report = run_evaluation(robust, data, config, out=out, force=True)
    assert report.records == reference.records
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "records" / "README").read_text() == "also mine"
    assert [c.index for c in read_part(out / "records" / "part-0-of-1.jsonl").chunks] == [0, 1, 2]

    with pytest.raises(InvalidArgumentError, match="give one"):
        run_evaluation(robust, data, config, out=out, resume=True, force=True)


def test_resume_of_a_finished_run_changes_nothing(
    robust: Classifier, reference: Any, tmp_path: Path
) -> None:
    data, config = setup(robust)
    out = tmp_path / "eval"
    run_evaluation(robust, data, config, out=out, resume=True)  # nothing to resume: starts
    part = (out / "records" / "part-0-of-1.jsonl").read_bytes()
    report = run_evaluation(robust, data, config, out=out, resume=True)
    assert report.records == reference.records
    assert (out / "records" / "part-0-of-1.jsonl").read_bytes() == part


# -- shards and merge --------------------------------------------------------------------------


def test_two_shards_merged_equal_one_run(
    robust: Classifier, reference: Any, tmp_path: Path
) -> None:
    data, config = setup(robust)
    out = tmp_path / "eval"
    first = run_evaluation(robust, data, config, out=out, shard=(0, 2))
    assert [r.chunk for r in first.records] == [0] * 8 + [2] * 8
    assert not (out / "summary.json").exists()
    with pytest.raises(InvalidArgumentError) as caught:
        merge(out)
    message = str(caught.value)
    assert "\n" not in message
    assert "1 of 3 chunks are missing" in message and "shards 1 of 2" in message

    second = run_evaluation(robust, data, config, out=out, shard=(1, 2))
    assert [r.chunk for r in second.records] == [1] * 8
    assert sorted((out / "records").iterdir()) == [
        out / "records" / "part-0-of-2.jsonl",
        out / "records" / "part-1-of-2.jsonl",
    ]
    report = merge(out)
    assert report.records == reference.records
    assert comparable(report.summary()) == comparable(reference.summary())
    assert comparable(json.loads((out / "summary.json").read_text())) == comparable(
        reference.summary()
    )
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        merge(out)
    assert merge(out, force=True).records == reference.records

    # A shard started again refuses to overwrite its part.
    with pytest.raises(OutputExistsError):
        run_evaluation(robust, data, config, out=out, shard=(1, 2))


def test_merge_refuses_parts_of_different_configurations(
    robust: Classifier, tmp_path: Path
) -> None:
    data, config = setup(robust, n=16)
    out = tmp_path / "eval"
    run_evaluation(robust, data, config, out=out, shard=(0, 2))
    other = EvalConfig.from_dict({**config.to_dict(), "seed": 1})
    with pytest.raises(InvalidArgumentError, match="seed"):
        run_evaluation(robust, data, other, out=out, shard=(1, 2))
    with pytest.raises(InvalidArgumentError, match="shard 2/2 does not exist"):
        run_evaluation(robust, data, config, out=out, shard=(2, 2))


# -- adversarial examples ----------------------------------------------------------------------


def test_saved_adversarial_images_are_what_the_records_say(
    robust: Classifier, tmp_path: Path
) -> None:
    data, config = setup(robust, n=16, checks=False)
    out = tmp_path / "eval"
    report = run_evaluation(robust, data, config, out=out, save_adversarial=True)
    checked = 0
    for k, eps in enumerate(config.eps):
        folder = out / "adversarial" / budget_folder(eps, "linf")
        for record in report.records:
            outcome = record.budgets[k]
            path = folder / adversarial_name(record.position, record.id)
            if outcome.robust or outcome.broken_by == "clean":
                assert not path.exists()
                continue
            image = load_image(path)
            original = data.chunk(record.chunk, config.batch_size)
            row = original.positions.index(record.position)
            change = (image - original.images[row]).abs().max().item() * 255
            assert change <= round(eps * 255) + 1e-3
            with torch.no_grad():
                predicted = int(robust(image.unsqueeze(0)).argmax(1))
            assert predicted == outcome.prediction != record.label
            checked += 1
    assert checked > 0
    assert budget_folder(32 / 255, "linf") == "linf-32"


def test_adversarial_names_never_leave_the_folder() -> None:
    for image_id in ("../../etc/passwd", "/abs/cat.jpg", "a/b\\c d.png", "..", ""):
        name = adversarial_name(7, image_id)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name.endswith(".png") and name.startswith("000007")
    assert adversarial_name(1, "a/b") != adversarial_name(2, "a/b")
