"""``trompe transfer`` as a user runs it: a real ensemble on two small photos, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import trompe
from _helpers import run_cli
from trompe.images import load_image


def small_photos(folder: Path) -> Path:
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        with Image.open(trompe.example_path(name)) as image:
            photo = image.convert("RGB")
        photo.thumbnail((64, 64))
        photo.save(folder / f"{name}.png")
    return folder


@pytest.mark.slow
def test_transfer_from_an_ensemble_to_a_held_out_model(tmp_path: Path) -> None:
    photos = small_photos(tmp_path / "photos")
    out = tmp_path / "out"
    args = ["transfer", str(photos), "-m", "efficientnet_lite0,efficientnet_lite1"]
    args += ["--to", "efficientnet_lite2", "--steps", "2", "--save-adversarial"]
    done = run_cli(*args, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record == json.loads((out / "result.json").read_text())
    assert record["source"] == "efficientnet_lite0+efficientnet_lite1"
    assert record["members"] == ["efficientnet_lite0", "efficientnet_lite1"]
    assert record["held_out"] == ["efficientnet_lite2"]
    assert record["params"]["eps_255"] == 16 and record["params"]["steps"] == 2
    assert [m["id"] for m in record["model_info"]["members"]] == record["members"]
    assert set(record["rates"]) == {record["source"], *record["members"], "efficientnet_lite2"}
    held_out = trompe.load_model("efficientnet_lite2")
    for photo in record["photos"]:
        row = photo["models"]["efficientnet_lite2"]
        saved = load_image(out / "adversarial" / photo["name"])
        top = held_out.predict(saved, k=1)[0][0]
        assert row["top1"]["index"] == top.index  # what the saved PNG shows the held-out model
        assert row["met"] == (top.index != row["clean_top1"]["index"])
        assert photo["linf_255"] <= 16
    assert (out / "transfer.png").stat().st_size > 0
    # again without --force: refused at once, nothing touched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = run_cli(*args, "--out", str(out))
    assert again.returncode != 0 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--to", "efficientnet_lite9"], "unknown model 'efficientnet_lite9'"),
        (["--to", "digits_robust"], "both attacked and held out"),
        (["--eps", "300"], "--eps is in 0-255"),
    ],
)
def test_bad_models_and_budgets_write_nothing(tmp_path: Path, extra: list[str], words: str) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(photos / "red.png")
    out = tmp_path / "out"
    done = run_cli("transfer", str(photos), "-m", "digits_robust", *extra, "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_or_missing_folder_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photo here")
    for folder, words in ((tmp_path / "empty", "holds no photos"), (tmp_path / "nope", "no such")):
        done = run_cli("transfer", str(folder), "-m", "digits_robust", "--out", str(tmp_path / "o"))
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()
