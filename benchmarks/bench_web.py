"""``trompe serve``: the demo's upload-to-result time against the CLI, page weight, load figures.

Three parts (``--parts``, all by default):

- ``demo``: the bundled cat turned into a lemon with PGD (``efficientnet_lite0``, eps 10/255,
  the attack's other defaults), three ways on the same machine, in turn within each repeat
  (forward, then backward order on alternate repeats):

  * the CLI as a user types it, ``trompe attack --target lemon --attack pgd --seed 0 --out DIR``,
    a fresh process (its wall time; the attack's own ``seconds`` from its ``result.json``);
  * the JSON API of a running server: ``POST /api/jobs`` with the photo uploaded, the job's
    event stream to its ``end``, then every file of the job fetched. The first job of a fresh
    server is *cold* (its worker loads the model); the repeats after it are *warm*;
  * the page in a real browser (Playwright driving Debian's chromium), in a new tab loaded
    before the clock starts: the photo chosen in the page's file input (the page classifies it:
    top-5 shown), "lemon" typed and taken from the search box, PGD at 10 levels, Run, until the
    result is shown with its pictures drawn (``--no-page`` to skip).

  Columns: the wall time; the attack's own ``seconds`` (from ``result.json``); the job on the
  worker (the server's ``started`` to ``finished``: the attack, the re-check on the saved PNG
  and the files, which the CLI writes too); and the wall time less that job: what the web adds
  (upload, hand-over to the worker, events, downloads, the page's drawing). The issue's aim:
  the page adds under 1 s.
- ``weight``: the page's own files (``/``, ``/static/app.js``, ``/static/style.css``), their
  bytes and gzip sizes, whether the server compresses them, and every request the page makes on
  load (to ``body[data-ready=true]`` and an idle network), with their bytes.
- ``load``: the load test's scenario (``tests/test_web_load.py``), measured, with a queue of 8:
  ``digits_robust`` jobs (an 8x8 digit, PGD 5 steps) and one worker warmed up by two jobs; per
  round, 50 clients submit at once and poll their accepted jobs to their files, and once every
  submission is answered five lone submissions are timed; a prober asks ``GET /api/health``
  every 50 ms throughout (busy: the server says a job runs or waits; idle: 3 s kept quiet before
  each round). The RSS of the server and of its children (``/proc/PID/status``).

Each server is ``trompe serve --port 0`` (the console script beside this Python), its results
in a temporary folder, stopped at the end (SIGINT, then SIGKILL to its process group if anything
of it lingers); each part starts its own. Run it with ``OMP_NUM_THREADS`` as the machine's users
would: it is passed on to the CLI and the server alike.

Usage::

    python benchmarks/bench_web.py --markdown                  # all three parts
    python benchmarks/bench_web.py --repeats 5 --rounds 3 --markdown
    python benchmarks/bench_web.py --parts demo --no-page      # the CLI and the API only
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see _harness)

import argparse
import contextlib
import gzip
import json
import math
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _harness import Report, load_lines, log, versions_line

import trompe

PARTS = ("demo", "weight", "load")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The demo: what the CLI is given, and the same as API fields.
DEMO_CLI = ["attack", "--target", "lemon", "--attack", "pgd", "--seed", "0", "--no-progress"]
DEMO_FIELDS = {
    "model": "efficientnet_lite0",
    "attack": "pgd",
    "target": "lemon",
    "options": json.dumps({"seed": 0}),
}
#: The load test's job and sizes.
LOAD_FIELDS = {
    "model": "digits_robust",
    "attack": "pgd",
    "target": "3",
    "eps": str(32 / 255),
    "options": json.dumps({"steps": 5, "seed": 0}),
}
LOAD_CLIENTS = 50
LOAD_QUEUE = 8
PROBE_EVERY_S = 0.05
FINISHED = ("done", "failed", "cancelled")


# -- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process and its address."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid


def trompe_command() -> list[str]:
    """The ``trompe`` console script beside this Python, else ``python -m trompe``."""
    script = Path(sys.executable).with_name("trompe")
    return [str(script)] if script.exists() else [sys.executable, "-m", "trompe"]


@contextmanager
def server(results: Path, *flags: str) -> Iterator[Server]:
    """``trompe serve --port 0 --results RESULTS FLAGS...`` as a user runs it, ready (its
    address printed, its health answering) when entered, stopped when left."""
    log_path = results.with_suffix(".log")
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [*trompe_command(), "serve", "--port", "0", "--results", str(results), *flags],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )
    try:
        deadline = time.monotonic() + 120
        while not log_path.read_text().startswith("trompe serve: http://"):
            if process.poll() is not None:
                sys.exit(f"bench_web: the server stopped: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                sys.exit("bench_web: the server printed no address within 120 s")
            time.sleep(0.05)
        url = log_path.read_text().split()[2]
        while httpx.get(f"{url}/api/health", timeout=30).status_code != 200:
            time.sleep(0.1)
        yield Server(process, url)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn's graceful stop), then SIGKILL to the whole group after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log("  the server did not stop within 30 s: killed")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # anything of its group still there
    process.wait()


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants, in kB."""
    return sum(process_rss_kb(pid).values())


def process_rss_kb(pid: int) -> dict[int, int]:
    """VmRSS of a process and of each of its descendants, in kB, by pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    sizes, todo = {}, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            lines = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            continue
        sizes[current] = sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return sizes


# -- jobs through the API -------------------------------------------------------------------------


def submit(client: httpx.Client, fields: dict[str, str], image: bytes, name: str) -> httpx.Response:
    return client.post("/api/jobs", data=fields, files={"image": (name, image, "image/png")})


def follow(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """The finished job, from its event stream (the ``end`` event's data)."""
    event = ""
    with client.stream("GET", job["urls"]["events"], timeout=600) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "end":
                finished: dict[str, Any] = json.loads(line.split(":", 1)[1])
                return finished
    # A stream that closed without its end event: ask once more.
    answer: dict[str, Any] = client.get(job["urls"]["self"]).json()
    return answer


def poll(client: httpx.Client, job_id: str, every: float = 0.1) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            return job
        time.sleep(every)


def fetch_files(client: httpx.Client, job: dict[str, Any]) -> int:
    """Download every file of a finished job; their total bytes."""
    total = 0
    for url in job["files"].values():
        response = client.get(url)
        response.raise_for_status()
        total += len(response.content)
    return total


@dataclass
class Timing:
    """One upload-to-result run: its wall time and the attack's own seconds."""

    wall: float
    attack: float
    server: float | None = None  # the job's own seconds as the server reports them
    classify: float = 0.0  # the page: photo chosen -> top-5 shown
    run: float = 0.0  # the page: Run clicked -> result shown

    @property
    def overhead(self) -> float:
        return self.wall - self.attack


def api_run(url: str, photo: bytes) -> Timing:
    """The demo through the API: upload, follow the events to the end, fetch every file."""
    with httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        response = submit(client, DEMO_FIELDS, photo, "chelsea.png")
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/jobs answered {response.status_code}: {response.text}")
        job = follow(client, response.json())
        if job["status"] != "done":
            raise RuntimeError(f"the job ended {job['status']}: {job.get('error')}")
        fetch_files(client, job)
        wall = time.perf_counter() - start
    return Timing(wall, float(job["result"]["seconds"]), job.get("seconds"))


def cli_run(out: Path) -> Timing:
    """The demo through the CLI, a fresh process as a user types it."""
    argv = [*trompe_command(), *DEMO_CLI, "--out", str(out), "--force"]
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")
    seconds = float(json.loads((out / "result.json").read_text())["seconds"])
    return Timing(wall, seconds)


# -- the page in a browser ------------------------------------------------------------------------


@contextmanager
def browser(user_dir: Path) -> Iterator[Any]:
    """A headless chromium (Playwright) with a fresh profile, closed when left."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()


def page_run(context: Any, url: str, photo: Path) -> Timing:
    """The demo through the page, as a person does it without pausing: choose the photo (the
    page classifies it), type lemon in the search box and take it, PGD at 10 levels, Run, until
    the result is shown (its images drawn). The page is loaded in a new tab first, outside the
    clock. ``classify`` is the time to the top-5, ``run`` from the click to the result."""
    page = context.new_page()
    try:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60_000)
        start = time.perf_counter()
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.querySelectorAll('#top-now li').length === 5")
        classified = time.perf_counter()
        page.locator("#target").fill("lemon")
        page.wait_for_selector('#target-list [role=option][data-name="lemon"][aria-selected=true]')
        page.keyboard.press("Enter")
        page.select_option("#attack", "pgd")
        page.fill("#eps", "10")
        clicked = time.perf_counter()
        page.click("#run")
        page.wait_for_selector("#result", state="visible", timeout=600_000)
        end = time.perf_counter()
        job_id = page.locator("#progress-box").get_attribute("data-job")
        job = httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()
        if job["result"]["goal"]["class_name"] != "lemon":
            raise RuntimeError(f"the page ran another goal: {job['result']['goal']}")
    finally:
        page.close()
    return Timing(
        end - start,
        float(job["result"]["seconds"]),
        job.get("seconds"),
        classify=classified - start,
        run=end - clicked,
    )


# -- parts ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def demo(report: Report, repeats: int, use_page: bool, folder: Path) -> None:
    photo_path = trompe.images.example_path("chelsea")
    photo = photo_path.read_bytes()
    runs: dict[str, list[Timing]] = {"cli": [], "api": [], "page": []}
    page_note = "" if use_page else "not run (--no-page, or no chromium)"
    flags = ("--default-model", "efficientnet_lite0", "--workers", "1")
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(server(folder / "demo-results", *flags))
        log("demo: the cold job (a fresh server)")
        cold = api_run(srv.url, photo)
        log(f"  cold API: {cold.wall:.2f} s (attack {cold.attack:.2f} s)")
        context = None
        if use_page:
            try:
                context = stack.enter_context(browser(folder / "chromium"))
            except Exception as error:
                page_note = f"no browser: {type(error).__name__}: {error}"
        for k in range(repeats):
            for way in ("cli", "api", "page") if k % 2 == 0 else ("page", "api", "cli"):
                if way == "cli":
                    runs[way].append(cli_run(folder / f"cli-{k}"))
                elif way == "api":
                    runs[way].append(api_run(srv.url, photo))
                elif context is None or page_note:
                    continue
                else:
                    try:
                        runs[way].append(page_run(context, srv.url, photo_path))
                    except Exception as error:
                        page_note = f"the page run failed: {type(error).__name__}: {error}"
                        log(f"  {page_note}")
                        continue
                log(f"  {k + 1}/{repeats} {way}: {runs[way][-1].wall:.2f} s")

    report.heading("Demo: the cat to a lemon, PGD (eps 10/255), efficientnet_lite0 (s)", 2)
    rows = [
        ("CLI: `trompe attack`, a fresh process", runs["cli"]),
        ("API, cold: a fresh server's first job", [cold]),
        ("API, warm: upload, event stream, all 5 files", runs["api"]),
        ("page, warm: photo chosen -> result shown", runs["page"]),
    ]
    body = []
    for name, timings in rows:
        cells = [name, "-", "-", "-", "-", "-", "0"]
        if timings:
            cells[1] = f"{median([t.wall for t in timings]):.2f}"
            cells[2] = f"{median([t.attack for t in timings]):.2f}"
            cells[3] = f"{median([t.overhead for t in timings]):.2f}"
            cells[6] = str(len(timings))
            if timings[0].server is not None:
                cells[4] = f"{median([float(t.server or 0) for t in timings]):.2f}"
                cells[5] = f"{median([t.wall - float(t.server or 0) for t in timings]):.2f}"
        body.append(cells)
    report.table(
        [
            "way",
            "wall",
            "attack's seconds",
            "wall - attack",
            "job on the worker",
            "wall - job",
            "runs",
        ],
        body,
    )
    report.add("")
    lines = []
    cli, api, pages = runs["cli"], runs["api"], runs["page"]
    if pages:
        lines.append(
            f"page, medians: photo chosen -> top-5 shown {median([t.classify for t in pages]):.2f}"
            f" s; Run -> result shown {median([t.run for t in pages]):.2f} s, of which "
            f"{median([t.run - float(t.server or 0) for t in pages]):.2f} s outside the job on "
            "the worker"
        )
    for name, timings in (("API warm", api), ("page", pages)):
        if cli and timings:
            ratios = [t.wall / c.wall for t, c in zip(timings, cli, strict=False)]
            lines.append(
                f"{name} / CLI wall, per repeat: "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + f" (median {median(ratios):.2f})"
            )
    if page_note:
        lines.append(f"page: {page_note}")
    report.bullets(*lines)


def weight(report: Report, use_page: bool, folder: Path) -> None:
    rows = []
    encodings = []
    responses: list[Any] = []
    requests: list[tuple[str, str, int, int]] = []
    note = "" if use_page else "requests not counted (--no-page, or no chromium)"
    flags = ("--default-model", "efficientnet_lite0", "--workers", "1")
    with server(folder / "weight-results", *flags) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            for path in ("/", "/static/app.js", "/static/style.css"):
                response = client.get(path, headers={"accept-encoding": "identity"})
                body = response.content if response.status_code == 200 else b""
                rows.append((path, response.status_code, len(body), len(gzip.compress(body, 6))))
                asked = client.get(path, headers={"accept-encoding": "gzip"})
                encodings.append(asked.headers.get("content-encoding", "identity"))
        if use_page:
            try:
                with browser(folder / "chromium-weight") as context:
                    page = context.new_page()
                    page.on("response", lambda response: responses.append(response))
                    page.goto(srv.url + "/")
                    page.wait_for_selector("body[data-ready=true]", state="attached")
                    page.wait_for_load_state("networkidle")
                    for response in responses:
                        try:
                            body = response.body()
                        except Exception:  # a response without a body (a redirect)
                            body = b""
                        size, zipped = len(body), len(gzip.compress(body, 6))
                        url = response.url.removeprefix(srv.url)
                        requests.append((url, response.request.resource_type, size, zipped))
            except Exception as error:
                note = f"requests not counted: {type(error).__name__}: {error}"
    report.heading("Page weight", 2)
    report.table(
        ["file", "status", "bytes", "gzip -6"],
        [[f"`{p}`", str(s), f"{b:,}", f"{g:,}"] for p, s, b, g in rows],
    )
    total, total_gz = sum(r[2] for r in rows), sum(r[3] for r in rows)
    report.add("")
    report.bullets(
        f"the page's own files: {total:,} bytes, {total_gz:,} gzipped; the server sends them "
        f"as: {', '.join(sorted(set(encodings)))} (to a client that accepts gzip)"
    )
    if requests:
        report.bullets(
            f"requests on load (to `data-ready` and the network idle): {len(requests)}, "
            f"{sum(r[2] for r in requests):,} bytes of bodies, "
            f"{sum(r[3] for r in requests):,} if each were gzipped"
        )
        report.add("")
        report.table(
            ["request", "type", "bytes", "gzip -6"],
            [[f"`{u}`", t, f"{n:,}", f"{z:,}"] for u, t, n, z in requests],
        )
    if note:
        report.bullets(note)


@dataclass
class Probe:
    """Health latencies: ``idle`` in the windows the benchmark keeps quiet (``quiet`` set: the
    worker up, no job, no client), ``busy`` whenever the server says a job runs or waits."""

    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    errors: int = 0
    quiet: bool = False


def prober(url: str, stop: threading.Event, out: Probe) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        next_at = time.perf_counter()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = client.get("/api/health")
                elapsed = time.perf_counter() - start
                queue = response.json()["queue"]
                if queue["running"] or queue["waiting"]:
                    out.busy.append(elapsed)
                elif out.quiet:
                    out.idle.append(elapsed)
            except (httpx.HTTPError, ValueError, KeyError):
                out.errors += 1
            next_at += PROBE_EVERY_S
            stop.wait(max(0.0, next_at - time.perf_counter()))


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


@dataclass
class Client:
    status: int = 0
    submit_s: float = 0.0
    done_at: float = 0.0
    ok: bool = False


def load_client(url: str, png: bytes, barrier: threading.Barrier, out: Client) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        barrier.wait()
        start = time.perf_counter()
        response = submit(client, LOAD_FIELDS, png, "digit.png")
        out.submit_s = time.perf_counter() - start
        out.status = response.status_code
        if response.status_code == 202:
            job = poll(client, response.json()["id"])
            out.ok = job["status"] == "done" and fetch_files(client, job) > 0
            out.done_at = time.perf_counter()


def digit_png() -> bytes:
    import io

    from trompe.images import to_pil
    from trompe.models.digits import load_digits

    data = load_digits()
    index = int((data.test_labels == 7).nonzero()[0])
    buffer = io.BytesIO()
    to_pil(data.test_images[index]).save(buffer, format="PNG")
    return buffer.getvalue()


def rss_split(pid: int) -> tuple[float, float]:
    """The server process's RSS and its children's together (the workers and multiprocessing's
    helper), in MB."""
    sizes = process_rss_kb(pid)
    server_kb = sizes.pop(pid, 0)
    return server_kb / 1024, sum(sizes.values()) / 1024


def load_round(srv: Server, png: bytes) -> dict[str, Any]:
    """One burst of :data:`LOAD_CLIENTS` submissions at once, each accepted job polled to its
    files; once every submission is answered (the queue full), five lone submissions one after
    the other, timed. The RSS of the server and its children is sampled every 0.2 s."""
    clients = [Client() for _ in range(LOAD_CLIENTS)]
    barrier = threading.Barrier(LOAD_CLIENTS + 1)
    threads = [
        threading.Thread(target=load_client, args=(srv.url, png, barrier, c), daemon=True)
        for c in clients
    ]
    for t in threads:
        t.start()
    peak = [0]
    sampling = threading.Event()

    def sample_rss() -> None:
        while not sampling.wait(0.2):
            peak[0] = max(peak[0], tree_rss_kb(srv.pid))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    barrier.wait()
    began = time.perf_counter()
    while any(c.status == 0 for c in clients) and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    burst = time.perf_counter() - began
    lone: list[tuple[int, float]] = []
    with httpx.Client(base_url=srv.url, timeout=120) as client:
        for _ in range(5):
            start = time.perf_counter()
            response = submit(client, LOAD_FIELDS, png, "digit.png")
            lone.append((response.status_code, time.perf_counter() - start))
            if response.status_code == 202:
                fetch_files(client, poll(client, response.json()["id"]))
    for t in threads:
        t.join()
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    accepted = [c for c in clients if c.status == 202]
    refused = [c for c in clients if c.status == 429]
    last = max((c.done_at for c in accepted), default=began) - began
    lone_429 = [seconds for status, seconds in lone if status == 429]
    server_mb, children_mb = rss_split(srv.pid)
    return {
        "accepted": len(accepted),
        "refused": len(refused),
        "other": LOAD_CLIENTS - len(accepted) - len(refused),
        "ok": sum(c.ok for c in accepted),
        "burst": burst,
        "refusal_p50": median([c.submit_s for c in refused]),
        "refusal_max": max((c.submit_s for c in refused), default=float("nan")),
        "accept_p50": median([c.submit_s for c in accepted]),
        "lone": f"{len(lone_429)}/{len(lone)}",
        "lone_p50": median(lone_429),
        "lone_max": max(lone_429, default=float("nan")),
        "seconds": last,
        "jobs_per_s": len(accepted) / last if last > 0 else float("nan"),
        "server_mb": server_mb,
        "children_mb": children_mb,
        "rss_peak": peak[0] / 1024,
    }


def load(report: Report, rounds: int, folder: Path) -> None:
    png = digit_png()
    flags = ("--default-model", "digits_robust", "--workers", "1", "--queue", str(LOAD_QUEUE))
    probe = Probe()
    stop = threading.Event()
    figures: list[dict[str, Any]] = []
    with server(folder / "load-results", *flags) as srv:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            for _ in range(2):  # warm-up: the worker loads the model
                job = submit(client, LOAD_FIELDS, png, "digit.png").json()
                fetch_files(client, poll(client, job["id"]))
        warm = rss_split(srv.pid)
        thread = threading.Thread(target=prober, args=(srv.url, stop, probe), daemon=True)
        thread.start()
        for k in range(rounds):
            probe.quiet = True
            time.sleep(3)  # idle samples: the worker is up, no job, no client
            probe.quiet = False
            figures.append(load_round(srv, png))
            log(f"  load round {k + 1}/{rounds}: {figures[-1]}")
        stop.set()
        thread.join()
    report.heading(
        f"Load: {LOAD_CLIENTS} clients at once, 1 worker, queue {LOAD_QUEUE}, digits_robust, "
        "PGD 5 steps",
        2,
    )
    report.table(
        ["health latency (ms)", "samples", "p50", "p99", "max"],
        [
            [
                name,
                str(len(values)),
                f"{median(values) * 1000:.0f}",
                f"{percentile(values, 99) * 1000:.0f}",
                f"{max(values, default=float('nan')) * 1000:.0f}",
            ]
            for name, values in (("idle", probe.idle), ("busy", probe.busy))
        ],
    )
    report.add("")
    report.table(
        [
            "round",
            "202",
            "429",
            "other",
            "done + files",
            "all answered (ms)",
            "burst 429 p50 / max (ms)",
            "burst 202 p50 (ms)",
            "lone 429s",
            "lone 429 p50 / max (ms)",
            "last done (s)",
            "jobs/s",
        ],
        [
            [
                str(k + 1),
                str(f["accepted"]),
                str(f["refused"]),
                str(f["other"]),
                str(f["ok"]),
                f"{f['burst'] * 1000:.0f}",
                f"{f['refusal_p50'] * 1000:.0f} / {f['refusal_max'] * 1000:.0f}",
                f"{f['accept_p50'] * 1000:.0f}",
                f["lone"],
                f"{f['lone_p50'] * 1000:.0f} / {f['lone_max'] * 1000:.0f}",
                f"{f['seconds']:.1f}",
                f"{f['jobs_per_s']:.2f}",
            ]
            for k, f in enumerate(figures)
        ],
    )
    report.add("")
    report.table(
        ["RSS (MB)", "server", "children (worker)", "together", "peak during the round"],
        [["after the warm-up", f"{warm[0]:.0f}", f"{warm[1]:.0f}", f"{sum(warm):.0f}", "-"]]
        + [
            [
                f"after round {k + 1}",
                f"{f['server_mb']:.0f}",
                f"{f['children_mb']:.0f}",
                f"{f['server_mb'] + f['children_mb']:.0f}",
                f"{f['rss_peak']:.0f}",
            ]
            for k, f in enumerate(figures)
        ],
    )
    report.add("")
    report.bullets(f"health requests that failed: {probe.errors}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="demo, weight, load (all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed demo runs of each way (3)")
    parser.add_argument("--rounds", type=int, default=2, help="load rounds of 50 clients (2)")
    parser.add_argument("--no-page", action="store_true", help="no browser (API and CLI only)")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose among {', '.join(PARTS)}")
    use_page = not args.no_page and Path(CHROMIUM).exists()
    started = time.perf_counter()
    report = Report(args.markdown)
    report.heading("trompe serve: upload to result, page weight, load")
    report.bullets(
        versions_line(),
        f"{os.cpu_count()} logical CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        *load_lines(),
        f"command: {shlex.join(['python', *sys.argv])}",
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        if "demo" in parts:
            demo(report, args.repeats, use_page, folder)
        if "weight" in parts:
            weight(report, use_page, folder)
        if "load" in parts:
            load(report, args.rounds, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report.add("")
    report.bullets("load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    report.print(started)


if __name__ == "__main__":
    main()
