"""``trompe serve`` as a user runs it: a subprocess on 127.0.0.1 and a free port, stopped by
Ctrl-C (SIGINT) or SIGTERM, leaving no process behind; bad flags are one line and exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from _helpers import one_line_error, run_cli
from _web import alive, descendants


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the worker processes")
@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-server"],
)
def test_serve_starts_answers_and_stops(tmp_path: Path, signum: int, group: bool) -> None:
    results = tmp_path / "results"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trompe",
            "serve",
            "--port",
            "0",
            "--default-model",
            "digits_robust",
            "--results",
            str(results),
            "--queue",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("trompe serve: http://127.0.0.1:"), (line, server.stderr)
        assert line.rstrip().endswith("(Ctrl-C stops)")
        base = line.split()[2]
        health = httpx.get(f"{base}/api/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["queue"]["queue_size"] == 2
        assert httpx.get(f"{base}/api/models", timeout=30).json()["default"] == "digits_robust"
        # One small job, so that a worker process runs, then the signal.
        job = httpx.post(
            f"{base}/api/jobs",
            data={"sample": "chelsea", "resolution": "model", "options": '{"steps": 2}'},
            timeout=30,
        ).json()
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = httpx.get(f"{base}{job['urls']['self']}", timeout=30).json()
        assert job["status"] == "done", job
        assert (results / job["id"] / "adversarial.png").is_file()
        workers = set(descendants(server.pid))
        assert workers
        if group:  # Ctrl-C in a terminal: the server and its workers all get SIGINT
            os.killpg(server.pid, signum)
        else:
            server.send_signal(signum)
        _, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:  # a failed test: nothing of it may outlive it
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "worker processes left behind"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--port", "70000"], ["--port", "65535"]),
        (["--port", "http"], ["--port"]),
        (["--workers", "0"], ["--workers", "whole number"]),
        (["--queue", "-1"], ["--queue"]),
        (["--job-timeout", "-5"], ["--job-timeout", "seconds"]),
        (["--result-ttl", "nan"], ["--result-ttl"]),
        (["--max-upload", "lots"], ["--max-upload", "MiB"]),
        (["--disk-quota", "0"], ["--disk-quota"]),
        (["--max-pixels", "0"], ["--max-pixels"]),
        (["--max-steps", "1.5"], ["--max-steps"]),
        (["--allow-origin", "evil.example"], ["--allow-origin", "origin"]),
        (["--allow-origin", "https://example.org/path"], ["--allow-origin"]),
        (["--device", "tpu"], ["--device"]),
        (["--model", ""], ["--model"]),
        (["--bogus"], ["unrecognized"]),
    ],
)
def test_bad_flags_are_one_line(flags: list[str], words: list[str]) -> None:
    one_line_error(run_cli("serve", *flags), 2, *words)


def test_without_the_web_extra() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None; from trompe.cli import main; "
        "sys.exit(main(['serve', '--port', '0']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    one_line_error(result, 1, 'pip install "trompe[web]"')


def test_port_in_use_is_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--default-model", "digits_robust")
    one_line_error(result, 1, f"127.0.0.1:{port}", "--port")


def test_help_does_not_import_the_web_framework() -> None:
    code = (
        "import sys; from trompe.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    assert "--max-steps" in result.stdout and "--allow-origin" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _loopback_namespace() -> list[str] | None:
    """A command prefix that runs inside a new network namespace holding only loopback, or
    ``None`` where unshare cannot make one (then a test binding 0.0.0.0 is skipped: it must
    never listen on the machine's real interfaces)."""
    import shutil

    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return None
    return ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


@pytest.mark.slow
def test_listening_beyond_loopback_warns(tmp_path: Path) -> None:
    prefix = _loopback_namespace()
    if prefix is None:
        pytest.skip("needs unshare -rn: 0.0.0.0 is bound only inside a loopback-only namespace")
    server = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "trompe",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--default-model",
            "digits_robust",
            "--results",
            str(tmp_path / "results"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stderr is not None and server.stdout is not None
        warning = server.stderr.readline()
        assert warning.startswith("trompe serve: warning: listening on 0.0.0.0, so anyone")
        assert "--host 127.0.0.1" in warning
        assert server.stdout.readline().startswith("trompe serve: http://127.0.0.1:")
    finally:
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(timeout=60) == 0
