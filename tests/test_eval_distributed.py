"""Data-parallel evaluation under torchrun: two gloo processes on 127.0.0.1 equal one process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import trompe
from test_eval_run import SCRIPT, SRC, comparable, setup
from trompe.errors import InvalidArgumentError, OutputExistsError
from trompe.evaluation import EvalConfig, ImageRecord, run_evaluation
from trompe.evaluation._store import ChunkRecord, Store, read_part
from trompe.evaluation.distributed import DistributedEnv, detect

pytest.importorskip("torch.distributed")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_only(command: list[str]) -> list[str]:
    """``command`` in a network namespace of its own, where only 127.0.0.1 exists, when the
    system allows one: torch's rendezvous store listens on every interface otherwise."""
    if shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(
            ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    return command


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path: Path) -> None:
    model = trompe.load_model("digits_robust")
    data, config = setup(model, n=24, batch=6)
    reference = run_evaluation(model, data, config)

    script = tmp_path / "evaluate.py"
    script.write_text(SCRIPT)
    out = tmp_path / "eval"
    port = free_loopback_port()
    environ = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "TORCHELASTIC_ERROR_FILE": str(tmp_path / "error.json"),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        str(script),
        "24",
        "6",
        str(out),
        "run",
    ]
    result = subprocess.run(
        loopback_only(command), env=environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Each rank wrote its own part; every rank returned the whole report.
    chunks = {
        name: [c.index for c in read_part(out / "records" / name).chunks]
        for name in ("part-0-of-2.jsonl", "part-1-of-2.jsonl")
    }
    assert chunks == {"part-0-of-2.jsonl": [0, 2], "part-1-of-2.jsonl": [1, 3]}
    for rank in (0, 1):
        rows = json.loads((tmp_path / f"records-{rank}.json").read_text())
        assert tuple(ImageRecord.from_json(r) for r in rows) == reference.records
    summary = json.loads((out / "summary.json").read_text())
    assert comparable(summary) == comparable(reference.summary())
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_detect_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert detect() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert detect() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert detect() == DistributedEnv(rank=3, world=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InvalidArgumentError, match="outside WORLD_SIZE"):
        detect()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(InvalidArgumentError, match="integers"):
        detect()


def test_shard_and_torchrun_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = trompe.load_model("digits_robust")
    data, config = setup(model, n=8, batch=8)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(InvalidArgumentError, match="use one of them"):
        run_evaluation(model, data, config, shard=(0, 2))


def test_first_process_owns_the_folder_the_others_join_it(tmp_path: Path) -> None:
    """What torchrun's processes do with the output folder, one after the other."""
    model = trompe.load_model("digits_robust")
    data, config = setup(model, n=16, batch=8)
    record = run_evaluation(model, data, config).records[8:]
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def start(rank: int, **options: bool) -> list[ChunkRecord]:
        store = Store(out, (rank, 2))
        done = store.open(config, labels=None, **options)
        if rank == 1 and not done:
            store.append_chunk(ChunkRecord(1, list(record)))
        store.close()
        return done

    # The first process checks the whole folder as a single process would.
    with pytest.raises(OutputExistsError, match="--force"):
        start(0, resume=False, force=False, whole=True)
    start(0, resume=False, force=True, whole=True)
    assert start(1, resume=False, force=False, join=True) == []
    # Started over with force: the other process's old part goes too; the user's file stays.
    start(0, resume=False, force=True, whole=True)
    assert not (out / "records" / "part-1-of-2.jsonl").exists()
    assert (out / "notes.txt").read_text() == "mine"
    start(1, resume=False, force=False, join=True)
    # Resumed: each process finds its own chunks.
    start(0, resume=True, force=False, whole=True)
    resumed = start(1, resume=True, force=False, join=True)
    assert [c.index for c in resumed] == [1]
    assert tuple(resumed[0].records) == record
    other = EvalConfig.from_dict({**config.to_dict(), "norm": "l2"})
    with pytest.raises(InvalidArgumentError, match="norm"):
        Store(out, (1, 2)).open(other, labels=None, resume=True, force=False, join=True)
