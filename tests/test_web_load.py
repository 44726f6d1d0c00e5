"""Load: 50 clients at once against a real server with one worker and a queue of four.

A real server (``trompe serve``, in its own process, on 127.0.0.1) runs small jobs on
the built-in ``digits_robust`` model (an 8x8 digit, PGD with a few steps). Fifty client threads
submit one job each at the same moment and poll the accepted ones to the end, while a prober
asks ``GET /api/health`` every 50 ms. The issue's promises, checked on that run:

- the server stays responsive while its worker is busy: the health p99 is bounded (the issue's
  aim is 200 ms; on a shared 2-core CI machine the test asserts :data:`HEALTH_P99_BOUND_S` and
  ``benchmarks/bench_web.py`` records the true figure);
- a submission beyond the queue gets 429 with a ``Retry-After`` at once: a lone one to the full
  queue within :data:`REFUSAL_BOUND_S` (a job takes a second or more), the last of the burst's
  within :data:`BURST_REFUSAL_BOUND_S`; accepted + refused = 50;
- every accepted job ends ``done`` with all its files downloadable;
- memory stays bounded: the server process and its children (the worker) hold no more than
  :data:`RSS_GROWTH_BOUND_MB` more after the fifty clients than after a warm-up round.

Bounded in count (two warm-up jobs, 50 submissions, three lone ones; at most ``1 + queue_size``
jobs accepted from the burst, plus the few that a finishing job makes room for) and in time
(:data:`DEADLINE_S` for everything after the server's start). The server is stopped by SIGINT
and must exit 0 without leaving its worker behind.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _web import alive, descendants, digit_png
from trompe.web.jobs import FILES

pytestmark = pytest.mark.slow

CLIENTS = 50
#: Four waiting jobs (five accepted with the running one): the run stays well under a minute on
#: a loaded machine, where a job takes 1 to 3 s (most of it drawing report.png).
QUEUE_SIZE = 4
#: The prober's period.
PROBE_EVERY_S = 0.05
#: The issue's aim for the health p99 while the worker is busy is 0.2 s; the test allows more,
#: because two shared CI cores also run the worker, fifty client threads and other jobs.
HEALTH_P99_BOUND_S = 1.0
#: A 429 must come back at once, before the upload is read and far sooner than a job takes to
#: free a slot (a job takes a second or more): a lone submission to a full queue...
REFUSAL_BOUND_S = 0.5
#: ... and the last of the 429s of fifty submissions at once, which wait for each other.
BURST_REFUSAL_BOUND_S = 2.0
#: The growth allowed to the server and its worker between the warm-up and the end.
RSS_GROWTH_BOUND_MB = 64
#: The warm-up, the burst and every accepted job to its files.
DEADLINE_S = 60.0
#: Each job: a few PGD steps on an 8x8 digit (tens of milliseconds of attack).
JOB_FIELDS = {
    "model": "digits_robust",
    "attack": "pgd",
    "target": "3",
    "eps": str(32 / 255),
    "options": json.dumps({"steps": 5, "seed": 0}),
}


def tree_rss_kb(pid: int) -> int:
    """The resident memory of a process and all its descendants, in kB (``VmRSS`` of
    ``/proc/PID/status``; a process that exits meanwhile counts as zero)."""
    total = 0
    for current in [pid, *descendants(pid)]:
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank: a p99 of fewer than 100 samples is their
    maximum."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


@dataclass
class Prober:
    """Asks ``GET /api/health`` every :data:`PROBE_EVERY_S` in a thread; keeps each answer's
    latency and whether the queue was busy (a job running or waiting) by its own account."""

    url: str
    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Prober:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            next_at = time.perf_counter()
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    response = client.get("/api/health")
                    elapsed = time.perf_counter() - start
                    queue = response.json()["queue"]
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                else:
                    if response.status_code != 200:
                        self.errors.append(f"health answered {response.status_code}")
                    elif queue["running"] or queue["waiting"]:
                        self.busy.append(elapsed)
                    else:
                        self.idle.append(elapsed)
                next_at += PROBE_EVERY_S
                self._stop.wait(max(0.0, next_at - time.perf_counter()))


@dataclass
class Outcome:
    """What one client saw."""

    status: int = 0
    submit_s: float = 0.0
    retry_after: str | None = None
    job: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


def submit(client: httpx.Client, png: bytes) -> httpx.Response:
    return client.post(
        "/api/jobs", data=JOB_FIELDS, files={"image": ("digit.png", png, "image/png")}
    )


def wait_done(client: httpx.Client, job_id: str, deadline: float) -> dict[str, Any]:
    """Poll a job every 100 ms until it is finished (or the deadline passes)."""
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def fetch_files(client: httpx.Client, job: dict[str, Any]) -> dict[str, bytes]:
    files = {}
    for name, url in job["files"].items():
        response = client.get(url)
        response.raise_for_status()
        files[name] = response.content
    return files


def one_client(
    url: str, png: bytes, start: threading.Barrier, deadline: float, out: Outcome
) -> None:
    """Submit one job when every client is ready; if accepted, poll it and fetch its files."""
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            start.wait(timeout=30)
            begin = time.perf_counter()
            response = submit(client, png)
            out.submit_s = time.perf_counter() - begin
            out.status = response.status_code
            out.retry_after = response.headers.get("retry-after")
            if response.status_code != 202:
                return
            out.job = wait_done(client, response.json()["id"], deadline)
            if out.job["status"] == "done":
                out.files = fetch_files(client, out.job)
    except Exception as error:  # reported by the test, with the client's number
        out.error = f"{type(error).__name__}: {error}"


@dataclass
class Served:
    """A ``trompe serve`` process: its base URL and its pid."""

    url: str
    pid: int


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    """``trompe serve`` as a user runs it, in its own process: one worker, a queue of
    :data:`QUEUE_SIZE`, on 127.0.0.1 and a free port; stopped by SIGINT at the end.

    Not the in-process server of ``_web.py``: here the server's event loop must not share an
    interpreter lock with the fifty client threads that load it, or the health latency would
    measure the test, and the resident memory of the server must not hold the clients'.
    """
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trompe",
                "serve",
                "--port",
                "0",
                "--default-model",
                "digits_robust",
                "--workers",
                "1",
                "--queue",
                str(QUEUE_SIZE),
                "--results",
                str(tmp_path / "results"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to kill whole if it hangs
        )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not log.read_text().startswith("trompe serve: http://"):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no address within 60 s: {log.read_text()}"
            time.sleep(0.05)
        yield Served(log.read_text().split()[2], process.pid)
    finally:
        workers = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    assert process.returncode == 0, log.read_text()
    # multiprocessing's resource tracker leaves once it sees the server gone: a moment later.
    give_up = time.monotonic() + 10
    while (left := [pid for pid in workers if alive(pid)]) and time.monotonic() < give_up:
        time.sleep(0.1)
    assert not left, f"the server left processes behind: {left}"


def test_fifty_clients_against_one_worker(server: Served) -> None:
    deadline = time.monotonic() + DEADLINE_S
    url, pid = server.url, server.pid
    png = digit_png()

    # Warm-up: the worker starts, loads the model, runs two jobs; the memory then is the base.
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(2):
            response = submit(client, png)
            assert response.status_code == 202, response.text
            job = wait_done(client, response.json()["id"], deadline)
            assert job["status"] == "done", job
            fetch_files(client, job)
    rss_before = tree_rss_kb(pid)

    outcomes = [Outcome() for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS + 1)
    threads = [
        threading.Thread(target=one_client, args=(url, png, start, deadline, out), daemon=True)
        for out in outcomes
    ]
    lone: list[tuple[int, float]] = []
    extra: list[str] = []
    with Prober(url) as prober, httpx.Client(base_url=url, timeout=30) as client:
        for thread in threads:
            thread.start()
        start.wait(timeout=30)  # every client is ready: all submit at once
        began = time.perf_counter()
        while any(o.status == 0 and o.error is None for o in outcomes):
            assert time.monotonic() < deadline, "submissions still unanswered at the deadline"
            time.sleep(0.01)
        # The queue is full now (its jobs take seconds): lone submissions, without a burst to
        # wait behind, must be refused at once. One may be taken if a job just finished.
        for _ in range(3):
            begin = time.perf_counter()
            response = submit(client, png)
            lone.append((response.status_code, time.perf_counter() - begin))
            if response.status_code == 202:
                extra.append(response.json()["id"])
        for thread in threads:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
        extra_jobs = [wait_done(client, job_id, deadline) for job_id in extra]
        extra_files = [fetch_files(client, job) for job in extra_jobs if job["status"] == "done"]
        elapsed = time.perf_counter() - began
    rss_after = tree_rss_kb(pid)

    errors = [f"client {i}: {o.error}" for i, o in enumerate(outcomes) if o.error]
    assert not errors, errors
    assert all(not thread.is_alive() for thread in threads), "clients still running at the deadline"

    accepted = [o for o in outcomes if o.status == 202]
    refused = [o for o in outcomes if o.status == 429]
    assert len(accepted) + len(refused) == CLIENTS, sorted(o.status for o in outcomes)
    # The queue took at least its size, and refused the rest of a burst it could not hold.
    assert len(accepted) >= QUEUE_SIZE
    assert refused, "no submission was refused: the burst did not fill the queue"

    for o in refused:
        assert o.retry_after is not None and o.retry_after.isdigit(), o.retry_after
        assert int(o.retry_after) >= 1
    slowest_refusal = max(o.submit_s for o in refused)
    assert slowest_refusal < BURST_REFUSAL_BOUND_S, (
        f"a 429 of the burst took {slowest_refusal:.2f} s"
    )
    lone_refusals = [seconds for status, seconds in lone if status == 429]
    assert lone_refusals, f"the full queue took every lone submission: {lone}"
    assert max(lone_refusals) < REFUSAL_BOUND_S, f"lone 429s took {lone_refusals} s"
    assert all(status in (202, 429) for status, _ in lone), lone
    assert len(extra_files) == len(extra), extra_jobs
    assert all(set(files) == set(FILES) for files in extra_files), extra_files

    for o in accepted:
        assert o.job is not None and o.job["status"] == "done", o.job
        assert set(o.files) == set(FILES), sorted(o.files)
        for name, content in o.files.items():
            if name.endswith(".png"):
                assert content.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert json.loads(o.files["result.json"])["model"] == "digits_robust"

    assert not prober.errors, prober.errors[:5]
    assert len(prober.busy) >= 10, f"only {len(prober.busy)} health samples while busy"
    busy_p99 = percentile(prober.busy, 99)
    growth_mb = (rss_after - rss_before) / 1024
    print(
        f"\n{len(accepted)} accepted, {len(refused)} refused in {elapsed:.1f} s; "
        f"health busy p50 {statistics.median(prober.busy) * 1000:.0f} ms, "
        f"p99 {busy_p99 * 1000:.0f} ms ({len(prober.busy)} samples); "
        f"429 p50 {statistics.median(o.submit_s for o in refused) * 1000:.0f} ms, "
        f"slowest {slowest_refusal * 1000:.0f} ms; "
        f"lone 429s {', '.join(f'{t * 1000:.0f}' for t in lone_refusals)} ms; "
        f"RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MB"
    )
    assert busy_p99 < HEALTH_P99_BOUND_S, f"health p99 {busy_p99:.3f} s while busy"
    assert growth_mb < RSS_GROWTH_BOUND_MB, (
        f"server + worker RSS grew {growth_mb:.0f} MB ({rss_before} -> {rss_after} kB)"
    )
