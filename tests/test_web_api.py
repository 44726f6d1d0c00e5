"""The JSON API of ``trompe serve`` against a real uvicorn on 127.0.0.1 (``tests/_web.py``).

Fast jobs use the 8x8 ``digits_robust`` model; the queue and cancel tests need a job that runs
for a while, an EfficientNet-Lite0 PGD on the bundled cat, and stop it as soon as it runs.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import trompe
from _web import digits_config, live_server
from trompe.attacks import list_attacks
from trompe.models.digits import load_digits

#: The caps of the module's server: small, so that the tests cross them cheaply.
MAX_UPLOAD = 100_000
MAX_PIXELS = 200_000
MAX_STEPS = 50
#: A model id the server is started with but cannot load (its file is missing).
BROKEN_MODEL = "onnx:/nonexistent/model.onnx"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module server's results folder: a refused request must leave nothing there."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def base(results: Path) -> Iterator[str]:
    config = digits_config(
        results_dir=results,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_steps=MAX_STEPS,
        max_queries=500,
        allowed_origins=("http://allowed.example:3000",),
        models=(BROKEN_MODEL,),
    )
    with live_server(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def digit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A test digit that digits_robust gets right, as an 8x8 PNG file, and its label."""
    data = load_digits()
    model = trompe.load_model("digits_robust")
    predicted = model.probs(data.test_images).argmax(dim=1)
    index = int((predicted == data.test_labels).nonzero()[0, 0])
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    trompe.to_pil(data.test_images[index]).save(path)
    return path, int(data.test_labels[index])


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def errors_of(response: httpx.Response) -> dict[str, str]:
    """A 422's entries as ``{"field.path": msg}`` (without the leading ``body``/``query``)."""
    assert response.status_code == 422, response.text
    return {".".join(str(p) for p in e["loc"][1:]): e["msg"] for e in response.json()["detail"]}


def wait_finished(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def read_events(base: str, path: str, timeout: float = 120) -> list[tuple[str, dict[str, Any]]]:
    """Every event of an SSE stream until the server closes it."""
    events: list[tuple[str, dict[str, Any]]] = []
    with (
        httpx.Client(base_url=base, timeout=timeout) as c,
        c.stream("GET", path) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert "content-encoding" not in response.headers  # never buffered by compression
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line[len("data: ") :])))
                name = None
    return events


def raw_get(base: str, target: str) -> int:
    """The status of ``GET target`` sent byte for byte (no client normalises the path)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


# -- the catalogue -----------------------------------------------------------------------------


def test_health_and_catalogue(client: httpx.Client) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["version"] == trompe.__version__
    assert {"waiting", "running", "workers", "queue_size"} <= set(health["queue"])

    models = client.get("/api/models").json()
    assert models["default"] == "digits_robust"
    names = [m["name"] for m in models["models"]]
    assert names == [*(spec.name for spec in trompe.list_models()), BROKEN_MODEL]
    assert all(m["served"] for m in models["models"])
    assert models["models"][-1]["description"].endswith("(source: onnx)")

    attacks = client.get("/api/attacks").json()
    assert attacks["default"] == "pgd"
    assert [a["name"] for a in attacks["attacks"]] == [i.name for i in list_attacks()]
    pgd = next(a for a in attacks["attacks"] if a["name"] == "pgd")
    steps = next(o for o in pgd["options"] if o["name"] == "steps")
    assert steps["help"] and steps["max"] == MAX_STEPS and steps["default"] <= MAX_STEPS
    assert pgd["default_eps"] == pytest.approx(10 / 255)
    assert next(a for a in attacks["attacks"] if a["name"] == "cw")["default_eps"] is None

    digits = client.get("/api/labels", params={"model": "digits_robust"}).json()
    assert digits["count"] == 10 and [c["name"] for c in digits["labels"]] == list("0123456789")
    found = client.get("/api/labels", params={"model": "efficientnet_lite0", "q": "lemmon"})
    assert found.json()["labels"][0] == {"index": 951, "name": "lemon", "synonyms": ["lemon"]}
    assert errors_of(client.get("/api/labels", params={"model": "../x"}))["model"]

    samples = client.get("/api/samples").json()["samples"]
    assert [s["name"] for s in samples] == ["chelsea", "coffee"]
    photo = client.get(samples[0]["url"])
    assert photo.headers["content-type"] == "image/png"
    assert photo.content == trompe.example_path("chelsea").read_bytes()
    assert client.get("/api/samples/passwd").status_code == 404


def test_listings_are_compressed_for_clients_that_accept_it(base: str) -> None:
    with httpx.Client(base_url=base) as c:
        raw = c.get(
            "/api/labels",
            params={"model": "efficientnet_lite0"},
            headers={"Accept-Encoding": "identity"},
        )
        packed = c.get(
            "/api/labels",
            params={"model": "efficientnet_lite0"},
            headers={"Accept-Encoding": "gzip"},
        )
    assert "content-encoding" not in raw.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) * 3 < len(raw.content)
    assert packed.json() == raw.json()  # httpx decodes it


def test_openapi_page_is_served_locally(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn" not in page.text and "https://" not in page.text
    assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/classify", "/api/jobs/{job_id}/events"} <= set(schema["paths"])
    assert client.get("/").status_code == 200


# -- classify ----------------------------------------------------------------------------------


def test_classify_matches_the_library(client: httpx.Client, digit: tuple[Path, int]) -> None:
    path, label = digit
    with path.open("rb") as file:
        response = client.post(
            "/api/classify", files={"image": ("whatever.png", file)}, data={"k": "3"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = trompe.classify(path, "digits_robust", k=3)
    assert body["model"] == "digits_robust" and (body["width"], body["height"]) == (8, 8)
    assert [t["index"] for t in body["top"]] == [p.index for p in expected]
    assert body["top"][0]["index"] == label
    assert body["top"][0]["prob"] == pytest.approx(expected[0].prob, abs=1e-5)

    cat = client.post("/api/classify", data={"sample": "cat", "model": "efficientnet_lite0"})
    assert cat.status_code == 200
    assert cat.json()["top"][0]["label"] in {"tabby cat", "tiger cat", "Egyptian Mau"}
    again = client.post("/api/classify", data={"sample": "cat", "model": "efficientnet_lite0"})
    assert again.json()["top"] == cat.json()["top"]  # speed is measured in benchmarks/, not here


def test_a_served_model_that_cannot_load(client: httpx.Client) -> None:
    response = client.post("/api/classify", data={"sample": "cat", "model": BROKEN_MODEL})
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the server cannot do this now: cannot load")


# -- validation --------------------------------------------------------------------------------

#: (fields besides sample=chelsea, the field the 422 names, a word its message must hold)
BAD_FIELDS = [
    ({"eps": "-0.1"}, "eps", "at least 0"),
    ({"eps": "nan"}, "eps", "eps"),
    ({"eps": "lots"}, "eps", "number"),
    ({"norm": "l7"}, "norm", "linf"),
    ({"attack": "pgdd"}, "attack", "did you mean pgd"),
    ({"attack": "cw", "eps": "0.1"}, "eps", "smallest change"),
    ({"attack": "pgd", "norm": "l0"}, "norm", "threat model"),
    ({"model": "efficientnet_lite0", "target": "lemmon"}, "target", "lemon"),
    ({"target": "eleven"}, "target", "unknown class"),
    ({"attack": "deepfool", "target": "3"}, "target", "untargeted"),
    ({"options": "{steps: 5"}, "options", "JSON object"),
    ({"options": "[1, 2]"}, "options", "JSON object"),
    ({"options": '{"nope": 1}'}, "options.nope", "no option"),
    ({"options": '{"model": "/etc/passwd"}'}, "options.model", "no option"),
    ({"options": '{"steps": 51}'}, "options.steps", "at most 50"),
    ({"options": '{"steps": -3}'}, "options.steps", "steps"),
    ({"attack": "square", "options": '{"queries": 501}'}, "options.queries", "at most 500"),
    ({"model": "/etc/passwd"}, "model", "digits_robust"),
    ({"model": "timm:resnet18"}, "model", "not served"),
    ({"confidence": "1.5"}, "confidence", "between 0 and 1"),
    ({"resolution": "huge"}, "resolution", "full"),
]


@pytest.mark.parametrize(("fields", "field", "word"), BAD_FIELDS)
def test_job_validation_errors(
    client: httpx.Client, results: Path, fields: dict[str, str], field: str, word: str
) -> None:
    before = sorted(results.iterdir())
    response = client.post("/api/jobs", data={"sample": "chelsea", **fields})
    errors = errors_of(response)
    assert field in errors, errors
    assert word.lower() in errors[field].lower(), errors[field]
    assert sorted(results.iterdir()) == before


def test_image_or_sample(client: httpx.Client) -> None:
    assert "image" in errors_of(client.post("/api/jobs", data={"attack": "pgd"}))
    both = client.post(
        "/api/jobs", data={"sample": "chelsea"}, files={"image": ("a.png", png_bytes(8, 8))}
    )
    assert "not both" in errors_of(both)["sample"]
    assert "samples are" in errors_of(client.post("/api/jobs", data={"sample": "../x"}))["sample"]


# -- limits ------------------------------------------------------------------------------------


def multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = "trompe-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("path", ["/api/jobs", "/api/classify"])
def test_upload_over_the_limit(client: httpx.Client, results: Path, path: str) -> None:
    before = sorted(results.iterdir())
    big = png_bytes(8, 8) + b"\0" * (3 * MAX_UPLOAD)
    body, kind = multipart({"attack": "pgd"}, big)

    # With a Content-Length: refused unread.
    declared = client.post(path, content=body, headers={"Content-Type": kind})
    assert declared.status_code == 413
    assert "limit of 100,000 bytes" in declared.json()["detail"]

    # A Content-Length of 10 GB and no body at all: answered at once, nothing waited for.
    host, port = str(client.base_url).removeprefix("http://").rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {10**10}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")

    # Chunked, without a Content-Length: counted on the stream.
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    with httpx.Client(base_url=str(client.base_url), timeout=60) as fresh:
        streamed = fresh.post(path, content=chunks(), headers={"Content-Type": kind})
    assert streamed.status_code == 413
    assert "limit" in streamed.json()["detail"]

    # Just over the limit as a file (the body fits the form allowance): counted while stored.
    near = png_bytes(8, 8) + b"\0" * MAX_UPLOAD
    stored = client.post(path, files={"image": ("x.png", near)}, data={"attack": "pgd"})
    assert stored.status_code == 413
    assert sorted(results.iterdir()) == before


@pytest.mark.parametrize("path", ["/api/jobs", "/api/classify"])
def test_not_an_image_and_too_many_pixels(client: httpx.Client, results: Path, path: str) -> None:
    before = sorted(results.iterdir())
    text = client.post(path, files={"image": ("cat.png", b"just some text, not a picture\n")})
    assert text.status_code == 415
    assert "JPEG, PNG" in text.json()["detail"] and "/tmp" not in text.json()["detail"]

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"></svg>'
    assert client.post(path, files={"image": ("x.png", svg)}).status_code == 415

    huge = client.post(path, files={"image": ("big.png", png_bytes(600, 600))})
    assert "over the limit" in errors_of(huge)["image"]
    assert sorted(results.iterdir()) == before


def test_cross_origin_posts_are_refused(client: httpx.Client, base: str) -> None:
    data = {"sample": "chelsea"}
    evil = client.post("/api/classify", data=data, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "--allow-origin" in evil.json()["detail"]
    assert client.post("/api/jobs", data=data, headers={"Origin": "null"}).status_code == 403
    site = client.post("/api/classify", data=data, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    assert (
        client.delete("/api/jobs/" + "0" * 32, headers={"Origin": "http://evil.example"})
    ).status_code == 403
    # The server's own origin, an allowed one, and clients without Origin pass; no CORS headers.
    for origin in (base, "http://allowed.example:3000", None):
        headers = {"Origin": origin} if origin else {}
        ok = client.post("/api/classify", data=data, headers=headers)
        assert ok.status_code == 200, (origin, ok.text)
        assert "access-control-allow-origin" not in ok.headers
    # A loopback server answers only to loopback names (DNS rebinding).
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "x:y:z"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 400, host
    assert client.get("/api/health", headers={"Host": "localhost:1"}).status_code == 200


# -- jobs --------------------------------------------------------------------------------------


def test_full_flow(client: httpx.Client, base: str, digit: tuple[Path, int]) -> None:
    path, label = digit
    target = (label + 1) % 10
    with path.open("rb") as file:
        submitted = client.post(
            "/api/jobs",
            files={"image": ("../../etc/passwd", file, "image/png")},
            data={
                "attack": "pgd",
                "target": str(target),
                "eps": "0.5",
                "options": json.dumps({"steps": 20, "seed": 0}),
            },
        )
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert len(job["id"]) == 32 and int(job["id"], 16) >= 0
    assert job["status"] in ("queued", "running")

    events = read_events(base, job["urls"]["events"])
    assert events[-1][0] == "end" and [e for e, _ in events[:-1]] == ["progress"] * (
        len(events) - 1
    )
    final = events[-1][1]
    assert final["status"] == "done", final
    assert final == {**wait_finished(client, job["id"]), "position": final["position"]}

    result = final["result"]
    assert set(final["files"]) == {
        "adversarial.png",
        "perturbation.png",
        "report.png",
        "result.json",
        "original.png",
    }
    for name, url in final["files"].items():
        response = client.get(url)
        assert response.status_code == 200, name
        kind = "application/json" if name.endswith(".json") else "image/png"
        assert response.headers["content-type"].startswith(kind)
        assert "content-disposition" not in response.headers
        if name.endswith(".png"):
            assert "content-encoding" not in response.headers  # PNG is compressed already
        if name == "result.json":
            assert response.json() == result
    download = client.get(final["files"]["adversarial.png"], params={"download": "1"})
    assert download.headers["content-disposition"].startswith("attachment")

    # The downloaded image is what the result says: re-classified here, in this process.
    adversarial = Image.open(io.BytesIO(download.content))
    assert adversarial.size == (8, 8)
    seen = trompe.classify(trompe.load_image(adversarial), "digits_robust", k=1)[0]
    original = Image.open(io.BytesIO(client.get(final["files"]["original.png"]).content))
    assert original.convert("RGB").tobytes() == Image.open(path).convert("RGB").tobytes()
    assert result["verified_on_png"]["top1"]["index"] == seen.index
    if result["verified_on_png"]["success"]:
        assert seen.index == target


def test_file_paths_cannot_escape(client: httpx.Client, base: str, digit: tuple[Path, int]) -> None:
    with digit[0].open("rb") as file:
        job = client.post(
            "/api/jobs", files={"image": ("x.png", file)}, data={"options": '{"steps": 2}'}
        ).json()
    done = wait_finished(client, job["id"])
    assert done["status"] == "done"
    prefix = f"/api/jobs/{job['id']}/files"
    assert raw_get(base, f"{prefix}/result.json") == 200
    for target in (
        f"{prefix}/input",
        f"{prefix}/../../../../etc/passwd",
        f"{prefix}/..%2f..%2f..%2fetc%2fpasswd",
        f"{prefix}/%2e%2e%2f%2e%2e%2fresult.json",
        f"{prefix}/%2e%2e",
        f"{prefix}/.",
        f"{prefix}/result.json%00.png",
        f"{prefix}/RESULT.JSON",
        f"/api/jobs/..%2f{job['id']}/files/result.json",
        "/api/jobs/%2e%2e/files/result.json",
        f"/api/jobs/{'0' * 32}/files/result.json",
        "/static/../../../../pyproject.toml",
        "/static/%2e%2e/app.py",
        "/docs-static/%2e%2e/core.py",
    ):
        assert raw_get(base, target) == 404, target
    assert client.get(f"/api/jobs/{'f' * 32}").status_code == 404
    assert client.get("/api/jobs/not-an-id/events").status_code == 404


@pytest.fixture(scope="module")
def small_queue() -> Iterator[str]:
    """One worker and room for one waiting job, for slow jobs."""
    with live_server(digits_config(queue_size=1, max_steps=2000)) as url:
        yield url


#: A job that runs for minutes: a budget of 1/255 cannot make the cat a sure lemon.
SLOW = {
    "sample": "chelsea",
    "model": "efficientnet_lite0",
    "attack": "pgd",
    "target": "lemon",
    "confidence": "0.999",
    "eps": str(1 / 255),
    "options": '{"steps": 2000}',
}


def test_queue_full_and_cancel(small_queue: str) -> None:
    with httpx.Client(base_url=small_queue, timeout=60) as client:
        running = client.post("/api/jobs", data=SLOW)
        assert running.status_code == 202, running.text
        first = running.json()
        deadline = time.monotonic() + 120
        while client.get(f"/api/jobs/{first['id']}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        waiting = client.post("/api/jobs", data=SLOW).json()
        assert waiting["status"] == "queued" and waiting["position"] == 0

        refused = client.post("/api/jobs", data=SLOW)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "queue is full" in refused.json()["detail"]
        # Refused before the upload is read: an upload gets the same answer.
        upload = client.post("/api/jobs", files={"image": ("x.png", png_bytes(8, 8))})
        assert upload.status_code == 429

        assert client.delete(f"/api/jobs/{waiting['id']}").json()["status"] == "cancelled"
        stopping = client.delete(f"/api/jobs/{first['id']}")
        assert stopping.status_code == 200
        started = time.monotonic()
        stopped = wait_finished(client, first["id"], timeout=30)
        assert stopped["status"] == "cancelled"
        assert time.monotonic() - started < 15
        events = read_events(small_queue, first["urls"]["events"])
        assert events == [("end", events[0][1])] and events[0][1]["status"] == "cancelled"
        health = client.get("/api/health").json()["queue"]
        assert health["waiting"] == 0 and health["running"] == 0
        assert client.delete(f"/api/jobs/{'a' * 32}").status_code == 404


def test_stopping_ends_open_event_streams() -> None:
    """A page watching a long job must not hold the server's shutdown until the job ends."""
    ended: list[str] = []
    config = digits_config(max_steps=5000, job_timeout_s=120)
    with live_server(config, timeout_graceful_shutdown=60) as url:
        job = httpx.post(f"{url}/api/jobs", data={**SLOW, "options": '{"steps": 5000}'}).json()

        def watch() -> None:
            with (
                httpx.Client(base_url=url, timeout=60) as c,
                c.stream("GET", job["urls"]["events"]) as response,
            ):
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        ended.append(line)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        deadline = time.monotonic() + 120
        # The stream is open (an event came) and the job runs: now the server stops.
        while not ended or httpx.get(f"{url}/api/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline and watcher.is_alive()
            time.sleep(0.2)
        started = time.monotonic()
    assert time.monotonic() - started < 30  # not the 60 s of the graceful wait below
    watcher.join(10)
    assert not watcher.is_alive() and ended and "event: end" not in ended
