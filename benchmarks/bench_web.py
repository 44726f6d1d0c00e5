"""``trompe serve``: the demo's upload-to-result time against the CLI, page weight, load figures.

Three parts (``--parts``, all by default):

- ``demo``: the bundled cat turned into a lemon with PGD (``efficientnet_lite0``, the attack's
  defaults, seed 0), three ways on the same machine, in turn within each repeat:

  * the CLI as a user types it, ``trompe attack --target lemon --attack pgd --out DIR``, a fresh
    process (its wall time; and the attack's own ``seconds`` from its ``result.json``);
  * the JSON API of a running server: ``POST /api/jobs`` with the photo uploaded, the job's
    event stream to its end, then every file of the job fetched. The first job of a fresh server
    is *cold* (its worker loads the model); the repeats after it are *warm*;
  * the page in a real browser (Playwright driving chromium): the photo chosen in the page's
    file input, lemon chosen, Run pressed, until the result is shown (``--no-page`` to skip).

  The overhead of the web is its time less the attack's own ``seconds`` (from the job's
  ``result.json``): what the server, the worker hand-over, HTTP and the page add. The issue's
  aim: under 1 s for the page (warm).
- ``weight``: the page's own files (``/``, ``/static/app.js``, ``/static/style.css``), their
  bytes and gzip sizes, and every request the page makes on load, with their bytes.
- ``load``: the load test's scenario (``tests/test_web_load.py``), measured: one worker, a queue
  of 8, ``digits_robust`` jobs (an 8x8 digit, PGD 5 steps); health latency idle and busy while
  50 clients submit at once and poll, how fast the refused get their 429, jobs per second, and
  the RSS of the server and its children (``/proc/PID/status``).

Each server is a separate process (``trompe.web.serve`` with a :class:`ServerConfig`) on
127.0.0.1 and a free port, with its results in a temporary folder, stopped at the end (SIGINT,
then SIGKILL of its process group if it lingers). The load and the demo use separate servers.

Usage::

    python benchmarks/bench_web.py --markdown                  # all three parts
    python benchmarks/bench_web.py --parts demo --repeats 5 --no-page
    python benchmarks/bench_web.py --parts weight,load
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (see _harness)

import argparse
import contextlib
import gzip
import json
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


_SERVE = """
import json, sys
from pathlib import Path
from trompe.web import ServerConfig, serve
settings = json.loads(sys.argv[1])
settings["results_dir"] = Path(settings["results_dir"])
serve(ServerConfig(**settings))
"""


@dataclass
class Server:
    """A server process and its address."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def server(results: Path, **settings: Any) -> Iterator[Server]:
    """A ``trompe.web.serve`` process on 127.0.0.1 with ``settings`` (of :class:`ServerConfig`),
    ready (its health answers) when entered, stopped when left."""
    port = free_port()
    settings = {"host": "127.0.0.1", "port": port, "results_dir": str(results), **settings}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the workers are stopped with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                sys.exit(f"bench_web: the server stopped: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit("bench_web: the server did not answer within 120 s")
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
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            lines = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


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
    script = Path(sys.executable).with_name("trompe")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "trompe"]
    argv += [*DEMO_CLI, "--out", str(out), "--force"]
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")
    seconds = float(json.loads((out / "result.json").read_text())["seconds"])
    return Timing(wall, seconds)


# -- the page in a browser ------------------------------------------------------------------------


@contextmanager
def browser_page(user_dir: Path) -> Iterator[Any]:
    """A fresh headless chromium page (Playwright), closed when left."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def page_run(page: Any, url: str, photo: Path) -> Timing:
    """The demo through the page: choose the photo, pick lemon and PGD, Run, until the result
    shows. The clock starts when the file is chosen (the upload) and stops when the result
    panel is visible; the page is loaded before, outside the clock."""
    page.goto(url)
    page.wait_for_load_state("networkidle")
    start = time.perf_counter()
    page.set_input_files("input[type=file]", str(photo))
    _choose_target(page, "lemon")
    page.select_option("#attack", "pgd")
    page.click("#run")
    page.wait_for_selector("#result:not([hidden])", timeout=600_000)
    wall = time.perf_counter() - start
    result = page.evaluate("window.trompeLastJob && window.trompeLastJob.result")
    attack = float(result["seconds"]) if result else float("nan")
    return Timing(wall, attack)


def _choose_target(page: Any, name: str) -> None:
    page.fill("#target", name)
    page.keyboard.press("Enter")


# -- parts ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def demo(report: Report, repeats: int, use_page: bool, folder: Path) -> None:
    photo_path = trompe.images.example_path("chelsea")
    photo = photo_path.read_bytes()
    cli: list[Timing] = []
    api: list[Timing] = []
    page_times: list[Timing] = []
    page_note = ""
    with server(folder / "demo-results", workers=1, default_model="efficientnet_lite0") as srv:
        log("demo: cold job (the worker loads the model)")
        cold = api_run(srv.url, photo)
        log(f"  cold API: {cold.wall:.2f} s (attack {cold.attack:.2f} s)")
        page_ctx = browser_page(folder / "chromium") if use_page else None
        page = None
        if page_ctx is not None:
            try:
                page = page_ctx.__enter__()
            except Exception as error:
                page_note = f"no browser: {type(error).__name__}: {error}"
                page_ctx = None
        try:
            for k in range(repeats):
                order = ["cli", "api", "page"] if k % 2 == 0 else ["page", "api", "cli"]
                for way in order:
                    if way == "cli":
                        cli.append(cli_run(folder / f"cli-{k}"))
                        log(f"  {k + 1}/{repeats} CLI: {cli[-1].wall:.2f} s")
                    elif way == "api":
                        api.append(api_run(srv.url, photo))
                        log(f"  {k + 1}/{repeats} API: {api[-1].wall:.2f} s")
                    elif page is not None and not page_note:
                        try:
                            page_times.append(page_run(page, srv.url, photo_path))
                            log(f"  {k + 1}/{repeats} page: {page_times[-1].wall:.2f} s")
                        except Exception as error:
                            page_note = f"the page run failed: {type(error).__name__}: {error}"
                            log(f"  {page_note}")
        finally:
            if page_ctx is not None:
                page_ctx.__exit__(None, None, None)

    report.heading("Demo: the cat to a lemon, PGD, efficientnet_lite0 (seconds)", 2)
    rows = [
        ("CLI (`trompe attack`, a fresh process)", cli),
        ("API, cold (the server's first job)", [cold]),
        ("API, warm (upload, events, all files)", api),
        ("page, warm (file chosen -> result shown)", page_times),
    ]
    body = []
    for name, runs in rows:
        if not runs:
            body.append([name, "-", "-", "-", "-"])
            continue
        wall, attack = median([r.wall for r in runs]), median([r.attack for r in runs])
        over = median([r.overhead for r in runs])
        body.append([name, f"{wall:.2f}", f"{attack:.2f}", f"{over:.2f}", str(len(runs))])
    report.table(["way", "wall", "attack's seconds", "wall - attack", "runs"], body)
    report.add("")
    lines = []
    if cli and api:
        ratios = [a.wall / c.wall for a, c in zip(api, cli, strict=False)]
        lines.append(
            f"API warm / CLI wall, per repeat: median {median(ratios):.2f} "
            f"({', '.join(f'{r:.2f}' for r in ratios)})"
        )
    if cli and page_times:
        ratios = [p.wall / c.wall for p, c in zip(page_times, cli, strict=False)]
        lines.append(f"page / CLI wall, per repeat: median {median(ratios):.2f}")
    if api and api[0].server is not None:
        lines.append(
            "the server's own job seconds (started -> finished), median: "
            f"{median([float(r.server or 0) for r in api]):.2f}"
        )
    if page_note or (use_page and not page_times):
        lines.append(f"page: {page_note or 'no run'}")
    report.bullets(*lines)


def weight(report: Report, use_page: bool, folder: Path) -> None:
    rows = []
    requests: list[tuple[str, int]] = []
    note = ""
    with server(folder / "weight-results", workers=1, default_model="efficientnet_lite0") as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            for path in ("/", "/static/app.js", "/static/style.css"):
                response = client.get(path, headers={"accept-encoding": "identity"})
                body = response.content if response.status_code == 200 else b""
                rows.append((path, response.status_code, len(body), len(gzip.compress(body, 6))))
        if use_page:
            try:
                with browser_page(folder / "chromium-weight") as page:
                    sizes: list[tuple[str, int]] = []

                    def on_response(response: Any) -> None:
                        try:
                            size = len(response.body())
                        except Exception:
                            size = -1
                        sizes.append((response.url.removeprefix(srv.url), size))

                    page.on("response", on_response)
                    page.goto(srv.url)
                    page.wait_for_load_state("networkidle")
                    requests = list(sizes)
            except Exception as error:
                note = f"no browser count: {type(error).__name__}: {error}"
    report.heading("Page weight", 2)
    report.table(
        ["file", "status", "bytes", "gzip -6"],
        [[f"`{p}`", str(s), f"{b:,}", f"{g:,}"] for p, s, b, g in rows],
    )
    total, total_gz = sum(r[2] for r in rows), sum(r[3] for r in rows)
    report.add("")
    report.bullets(f"the page's own files: {total:,} bytes, {total_gz:,} gzipped")
    if requests:
        report.bullets(
            f"requests on load (until the network is idle): {len(requests)}, "
            f"{sum(max(0, s) for _, s in requests):,} bytes of bodies: "
            + ", ".join(f"`{u}` {s:,}" for u, s in requests)
        )
    elif note:
        report.bullets(note)


@dataclass
class Probe:
    idle: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    errors: int = 0


def prober(url: str, stop: threading.Event, out: Probe) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        next_at = time.perf_counter()
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = client.get("/api/health")
                elapsed = time.perf_counter() - start
                queue = response.json()["queue"]
                (out.busy if queue["running"] or queue["waiting"] else out.idle).append(elapsed)
            except (httpx.HTTPError, ValueError, KeyError):
                out.errors += 1
            next_at += PROBE_EVERY_S
            stop.wait(max(0.0, next_at - time.perf_counter()))


def percentile(values: list[float], q: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, -(-len(ordered) * q // 100)) - 1]


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


def load_round(srv: Server, png: bytes) -> dict[str, float]:
    """One burst of :data:`LOAD_CLIENTS` submissions, each accepted job polled to its files;
    the server's RSS sampled every 0.2 s meanwhile."""
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
    for t in threads:
        t.join()
    sampling.set()
    sampler.join()
    time.sleep(0.5)
    rss_end = tree_rss_kb(srv.pid)
    accepted = [c for c in clients if c.status == 202]
    refused = [c for c in clients if c.status == 429]
    last = max((c.done_at for c in accepted), default=began) - began
    return {
        "accepted": len(accepted),
        "refused": len(refused),
        "other": LOAD_CLIENTS - len(accepted) - len(refused),
        "ok": sum(c.ok for c in accepted),
        "refusal_p50": median([c.submit_s for c in refused]),
        "refusal_max": max((c.submit_s for c in refused), default=float("nan")),
        "accept_p50": median([c.submit_s for c in accepted]),
        "seconds": last,
        "jobs_per_s": len(accepted) / last if last > 0 else float("nan"),
        "rss_end": rss_end / 1024,
        "rss_peak": max(peak[0], rss_end) / 1024,
    }


def load(report: Report, rounds: int, folder: Path) -> None:
    png = digit_png()
    settings = {"workers": 1, "queue_size": LOAD_QUEUE, "default_model": "digits_robust"}
    probe = Probe()
    stop = threading.Event()
    figures: list[dict[str, float]] = []
    with server(folder / "load-results", **settings) as srv:
        thread = threading.Thread(target=prober, args=(srv.url, stop, probe), daemon=True)
        thread.start()
        time.sleep(3)  # idle samples (the worker has started; no job yet)
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            for _ in range(2):  # warm-up: the worker loads the model
                fetch_files(
                    client, poll(client, submit(client, LOAD_FIELDS, png, "d.png").json()["id"])
                )
        rss_start = tree_rss_kb(srv.pid)
        for k in range(rounds):
            figures.append(load_round(srv, png))
            log(f"  load round {k + 1}/{rounds}: {figures[-1]}")
        time.sleep(2)  # idle again
        stop.set()
        thread.join()
    report.heading(
        f"Load: {LOAD_CLIENTS} clients at once, 1 worker, queue {LOAD_QUEUE}, digits_robust PGD "
        "5 steps",
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
            "accepted",
            "429",
            "other",
            "done + files",
            "429 p50 / max (ms)",
            "202 p50 (ms)",
            "last done (s)",
            "jobs/s",
            "RSS peak / end (MB)",
        ],
        [
            [
                str(k + 1),
                str(int(f["accepted"])),
                str(int(f["refused"])),
                str(int(f["other"])),
                str(int(f["ok"])),
                f"{f['refusal_p50'] * 1000:.0f} / {f['refusal_max'] * 1000:.0f}",
                f"{f['accept_p50'] * 1000:.0f}",
                f"{f['seconds']:.1f}",
                f"{f['jobs_per_s']:.2f}",
                f"{f['rss_peak']:.0f} / {f['rss_end']:.0f}",
            ]
            for k, f in enumerate(figures)
        ],
    )
    report.add("")
    report.bullets(
        f"server + children RSS after the warm-up: {rss_start / 1024:.0f} MB; health errors: "
        f"{probe.errors}"
    )


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
