"""The page of ``trompe serve`` in a real browser: Debian's chromium driven by Playwright.

One real server (efficientnet_lite0, one worker) for the module; each test opens the page in a
fresh tab of one browser profile made for the module. What a person does is what the tests do:
upload the bundled cat, choose "lemon" in the search box, run PGD, read the result, download
``adversarial.png`` through the page's link, and classify that file again with the library. Also:
a file that is not an image reads as the API's one sentence, and Cancel stops a running job.

``TROMPE_WEB_SCREENSHOT=docs/web-page.png`` also saves the result page there (the README's
screenshot); the test always saves one under its tmp_path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

try:
    from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - CI installs it (the test extra)
    sync_playwright = None

import trompe
from _web import CHROMIUM_ARGS, live_server
from trompe.web import ServerConfig

CHROMIUM = Path("/usr/bin/chromium")
if sync_playwright is None:
    pytest.skip("playwright is not installed (pip install playwright)", allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )

# A browser, a server and efficientnet_lite0: about 40 s for the module on two busy cores.
pytestmark = pytest.mark.slow

#: Generous bounds for a busy two-core machine; a working flow takes a few seconds each.
CLASSIFY_S = 60
ATTACK_S = 90


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    config = ServerConfig(port=0, default_model="efficientnet_lite0", workers=1)
    with live_server(config) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    assert sync_playwright is not None
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 900},
            accept_downloads=True,
            color_scheme="light",
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, server: str) -> Iterator[Page]:
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(server + "/")
    expect(tab.locator("body[data-ready=true]")).to_be_attached(timeout=30_000)
    yield tab
    tab.close()
    assert not errors, f"the page raised JavaScript errors: {errors}"


def upload_cat(page: Page) -> None:
    page.set_input_files("#file", str(trompe.example_path("chelsea")))
    expect(page.locator("#top-now li")).to_have_count(5, timeout=CLASSIFY_S * 1000)


def choose_target(page: Page, typed: str, name: str) -> None:
    """Type into the search box and choose with the keyboard (arrow keys + Enter)."""
    page.locator("#target").press_sequentially(typed)
    first = page.locator("#target-list [role=option]").first
    expect(first).to_have_attribute("data-name", name)
    expect(first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowDown")  # to the second match, if any, and back
    page.keyboard.press("ArrowUp")
    expect(first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    expect(page.locator("#target")).to_have_value(name)
    expect(page.locator("#target-chosen")).to_contain_text(name)


def job_json(server: str, page: Page) -> dict[str, Any]:
    job_id = page.locator("#progress-box").get_attribute("data-job")
    assert job_id, "the page did not record the job it runs"
    reply = httpx.get(f"{server}/api/jobs/{job_id}", timeout=10)
    reply.raise_for_status()
    job: dict[str, Any] = reply.json()
    return job


def test_cat_to_lemon_through_the_page(page: Page, server: str, tmp_path: Path) -> None:
    started = time.monotonic()
    upload_cat(page)
    top_before = page.locator("#top-now li .name").first.inner_text()
    assert top_before in {"tiger cat", "tabby cat", "Egyptian Mau"}, top_before

    choose_target(page, "lemo", "lemon")
    page.select_option("#attack", "pgd")
    page.fill("#eps", "16")  # levels: the page sends 16/255
    expect(page.locator("#eps-range")).to_have_value("16")
    page.click("#run")

    expect(page.locator("#result")).to_be_visible(timeout=ATTACK_S * 1000)
    expect(page.locator("#verdict")).to_contain_text("lemon")
    assert page.locator("#top-after li .name").first.inner_text() == "lemon"
    assert page.locator("#top-before li .name").first.inner_text() == top_before
    expect(page.locator("#verified")).to_contain_text("top-1 lemon")
    linf = page.locator("#metrics div", has_text="L-inf").locator("dd").inner_text()
    assert 0 < int(linf.split("/")[0]) <= 16, linf
    # The perturbation panel is drawn from original.png and adversarial.png, amplified.
    canvas = page.locator("#r-perturbation")
    assert canvas.evaluate("c => c.width") > 0
    page.fill("#amp", "4")
    expect(page.locator("#amp-value")).to_have_text("4")
    mid_grey = canvas.evaluate(
        "c => Array.from(c.getContext('2d').getImageData(0, 0, 1, 1).data.slice(0, 3))"
    )
    assert mid_grey == [128, 128, 128], mid_grey  # a corner outside the model's crop: unchanged

    page.mouse.move(0, 0)  # no hover style in the picture
    shot = tmp_path / "result-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    readme_shot = os.environ.get("TROMPE_WEB_SCREENSHOT")
    if readme_shot:  # 256 colours: a third of the bytes, and it still reads well
        with Image.open(shot) as image:
            image.convert("RGB").quantize(256).save(readme_shot, optimize=True)

    # The flip shows the original in the adversarial's place, and back.
    page.click("#flip")
    expect(page.locator("#adv-caption")).to_contain_text("original")
    page.click("#flip")
    expect(page.locator("#adv-caption")).to_have_text("adversarial")

    for link in ("#dl-report", "#dl-json"):  # the other downloads: the job's files, as files
        href = page.locator(link).get_attribute("href")
        assert href and href.endswith("?download=1"), href
        reply = httpx.get(server + href, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-disposition"].startswith("attachment"), reply.headers
    with page.expect_download() as download_info:
        page.click("#dl-adv")
    download = download_info.value
    assert download.suggested_filename == "adversarial.png"
    saved = tmp_path / "downloaded.png"
    download.save_as(saved)
    top = trompe.classify(saved, model="efficientnet_lite0")
    assert top[0].label == "lemon", top[:3]
    assert time.monotonic() - started < 120


def test_a_file_that_is_not_an_image_shows_the_api_sentence(page: Page) -> None:
    page.set_input_files(
        "#file", files=[{"name": "cat.png", "mimeType": "image/png", "buffer": b"not a picture"}]
    )
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=CLASSIFY_S * 1000)
    text = error.inner_text()
    assert "image" in text.lower() and "cat.png" not in text, text
    expect(page.locator("#classified")).to_be_hidden()


def test_a_dropped_photo_is_classified(page: Page) -> None:
    """Drag and drop: a file dropped on the photo area, as a file manager would drop it."""
    page.evaluate(
        """async () => {
            const blob = await (await fetch("/api/samples/coffee")).blob();
            const data = new DataTransfer();
            data.items.add(new File([blob], "my coffee.png", { type: "image/png" }));
            const drop = document.getElementById("drop");
            drop.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true }));
            drop.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        }"""
    )
    expect(page.locator("#top-now li")).to_have_count(5, timeout=CLASSIFY_S * 1000)
    assert page.locator("#top-now li .name").first.inner_text() == "espresso"


def test_a_typo_gets_the_servers_suggestions(page: Page) -> None:
    """No class contains "pelcan": the page asks ``/api/labels?q=`` and offers pelican."""
    page.locator("#target").press_sequentially("pelcan")
    first = page.locator("#target-list [role=option]").first
    expect(first).to_have_attribute("data-name", "pelican")
    page.keyboard.press("Enter")
    expect(page.locator("#target-chosen")).to_contain_text("pelican (class 144)")
    expect(page.locator("#target-list")).to_be_hidden()


def test_a_refused_field_is_named_next_to_it(page: Page) -> None:
    """A 422 from the API: its ``msg`` beside the field of its ``loc``, and in the alert."""
    upload_cat(page)
    page.click("input[name=goal][value=any]")
    page.click("#setup summary")
    page.fill("#confidence", "1.5")
    page.click("#run")
    note = page.locator("#confidence").locator("xpath=ancestor::label/following-sibling::*[1]")
    expect(note).to_have_class("field-error")
    expect(note).to_contain_text("confidence must be")
    expect(page.locator("#confidence")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error")).to_contain_text("confidence must be")
    expect(page.locator("#run")).to_be_enabled()
    expect(page.locator("#result")).to_be_hidden()


def test_cancel_stops_a_running_job(page: Page, server: str) -> None:
    """Cancel, with the polling the page falls back to when it has no event stream."""
    page.add_init_script("delete window.EventSource")
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_be_attached(timeout=30_000)
    assert page.evaluate("typeof EventSource") == "undefined"
    upload_cat(page)
    choose_target(page, "lemon", "lemon")
    page.select_option("#attack", "pgd")
    page.fill("#eps", "1")  # too small to reach lemon: every one of the steps would run
    page.click("#setup summary")
    page.fill("#o-steps", "1000")
    page.uncheck("#o-early_stop")
    page.click("#run")

    progress = page.locator("#progress-text")
    expect(progress).to_contain_text("step", timeout=ATTACK_S * 1000)
    assert job_json(server, page)["status"] == "running"
    page.click("#cancel")
    expect(progress).to_have_text("cancelled", timeout=30_000)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#run")).to_be_enabled()
    job = job_json(server, page)
    assert job["status"] == "cancelled"
    assert job["progress"]["step"] < 1000
    # The worker is free again: the queue holds nothing running.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = httpx.get(f"{server}/api/health", timeout=10).json()["queue"]
        if queue["running"] == 0:
            break
        time.sleep(0.2)
    assert queue["running"] == 0, queue


def tab_to(page: Page, selector: str, most: int = 60) -> None:
    """Press Tab until the element ``selector`` has the focus (a keyboard user's way there)."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
    raise AssertionError(f"{selector} cannot be reached with the Tab key")


def test_a_phone_sized_window_and_the_keyboard_alone(page: Page) -> None:
    """The whole flow at a phone's width without the mouse: a sample, a target, Run, the
    result; nothing wider than the screen."""
    page.set_viewport_size({"width": 390, "height": 844})
    tab_to(page, "#samples button")
    page.keyboard.press("Enter")  # the first sample: the cat
    expect(page.locator("#top-now li")).to_have_count(5, timeout=CLASSIFY_S * 1000)
    tab_to(page, "#target")
    choose_target(page, "lemo", "lemon")
    tab_to(page, "#eps")
    page.keyboard.press("Control+A")
    page.keyboard.type("16")
    tab_to(page, "#run")
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_be_visible(timeout=ATTACK_S * 1000)
    expect(page.locator("#verdict")).to_contain_text("lemon")
    for shown in ("#r-original", "#r-adversarial", "#r-perturbation", "#dl-adv"):
        box = page.locator(shown).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, shown
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the page is {wide} px wide on a 390 px screen"
    tab_to(page, "#dl-adv")  # the downloads are reachable too
