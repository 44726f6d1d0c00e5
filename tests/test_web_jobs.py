"""The job manager of ``trompe serve`` (:mod:`trompe.web.jobs`), without HTTP.

Real worker processes run real attacks of the built-in ``digits_robust`` model on an 8x8 digit
(a few milliseconds a step). A "long" job is PGD with a budget too small to succeed and a huge
step count: it runs until something stops it. An attack that ignores the cancel request is made
by stopping its worker with SIGSTOP: the watchdog must then kill and replace it.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from trompe.errors import InvalidArgumentError
from trompe.images import load_image, save_png
from trompe.models import Classifier, load_model
from trompe.models.digits import DigitsData
from trompe.web.config import ServerConfig
from trompe.web.jobs import (
    FILES,
    INPUT_NAME,
    Job,
    JobManager,
    JobRequest,
    JobStatus,
    QueueFull,
    ServerBusy,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGSTOP and /proc-free checks")

#: A job that ends quickly (the robust model is not fooled: "goal not met", but done).
SHORT = JobRequest(model="digits_robust", attack="pgd", target=3, options={"steps": 20, "seed": 0})
#: A job that runs until it is stopped (about 1 ms a step: minutes).
LONG = JobRequest(
    model="digits_robust",
    attack="pgd",
    target=3,
    eps=1 / 255,
    options={"steps": 1_000_000, "seed": 0},
)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory, digits: DigitsData) -> bytes:
    """The first test digit (a 2) as PNG bytes."""
    path = save_png(digits.test_images[0], tmp_path_factory.mktemp("digit") / "digit.png")
    return path.read_bytes()


@pytest.fixture(scope="module")
def robust() -> Classifier:
    return load_model("digits_robust")


def make_manager(tmp_path: Path | None = None, **changes: Any) -> JobManager:
    config = ServerConfig(default_model="digits_robust", **changes)
    if tmp_path is not None:
        config = config.replace(results_dir=tmp_path / "results")
    return JobManager(config)


@pytest.fixture(scope="module")
def manager() -> Iterator[JobManager]:
    """One manager for the tests that need no particular settings (a worker starts in seconds
    on a busy machine)."""
    with make_manager() as jobs:
        yield jobs
    assert not multiprocessing.active_children()


def submit(jobs: JobManager, png: bytes, request: JobRequest = SHORT) -> Job:
    job_id, folder = jobs.allocate()
    (folder / INPUT_NAME).write_bytes(png)
    return jobs.submit(job_id, request)


def wait_until(jobs: JobManager, job_id: str, done: Any, timeout: float = 60.0) -> Job:
    """Follow a job (as a client does) until ``done(job)``; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    job = jobs.get(job_id)
    assert job is not None
    while not done(job):
        assert time.monotonic() < end, f"job still {job.status}: {job}"
        waited = jobs.wait(job_id, job.version, 0.5)
        assert waited is not None
        job = waited
    return job


def finished(jobs: JobManager, job_id: str, timeout: float = 60.0) -> Job:
    return wait_until(jobs, job_id, lambda j: j.status.finished, timeout)


def stepping(jobs: JobManager, job_id: str, past: int = 0) -> Job:
    """Wait until a job reports a step beyond ``past``."""
    return wait_until(
        jobs, job_id, lambda j: j.progress is not None and j.progress["step"] > past, 60.0
    )


def one_sentence(text: str | None, *words: str) -> str:
    assert text, "no error sentence"
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text
    return text


# -- the normal flow ---------------------------------------------------------------------------


def test_job_runs_to_done_with_the_files_of_the_cli(
    manager: JobManager, digit_png: bytes, robust: Classifier
) -> None:
    job = submit(manager, digit_png)
    assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    done = finished(manager, job.id)
    assert done.status is JobStatus.DONE, done.error
    assert done.error is None and done.summary is not None
    assert done.progress is not None and done.progress["step"] == done.progress["steps"] == 20

    paths = {name: manager.file_path(job.id, name) for name in FILES}
    assert all(path is not None and path.is_file() for path in paths.values()), paths
    assert paths["result.json"] is not None and paths["original.png"] is not None
    on_disk = json.loads(paths["result.json"].read_text())
    assert on_disk == done.summary
    assert on_disk["model"] == "digits_robust" and on_disk["attack"] == "pgd"
    assert on_disk["goal"]["class"] == 3 and on_disk["params"]["steps"] == 20
    assert on_disk["image"] == "upload" and on_disk["seed"] == 0

    # The verdict in result.json is the model's on the saved PNG: classify it again here.
    adversarial = load_image(paths["adversarial.png"]) if paths["adversarial.png"] else None
    assert adversarial is not None
    with torch.no_grad():
        probs = robust(adversarial.unsqueeze(0)).softmax(-1)[0]
    verified = on_disk["verified_on_png"]
    assert int(probs.argmax()) == verified["top1"]["index"]
    assert float(probs[3]) == pytest.approx(verified["goal_prob"], abs=1e-5)
    assert verified["success"] is on_disk["success"] is False  # a robust model, 20 steps
    # original.png is the upload's pixels, exactly.
    uploaded = load_image(Image.open(io.BytesIO(digit_png)))
    assert torch.equal(load_image(paths["original.png"]), uploaded)

    shown = done.to_json(manager.position(job.id))
    assert shown["status"] == "done" and shown["position"] is None
    assert shown["result"] == on_disk
    assert shown["files"] == {name: f"/api/jobs/{job.id}/files/{name}" for name in FILES}
    assert shown["seconds"] == pytest.approx(shown["finished"] - shown["started"])
    assert 0 < shown["seconds"] < 60
    assert shown["urls"] == {"self": f"/api/jobs/{job.id}", "events": f"/api/jobs/{job.id}/events"}
    json.dumps(shown)  # plain JSON
    stats = manager.stats()
    assert stats["waiting"] == stats["running"] == 0 and stats["jobs"] >= 1
    assert stats["workers"] == 1 and stats["queue_size"] == 8


def test_progress_is_reported_increasing_and_a_running_job_cancels(
    manager: JobManager, digit_png: bytes
) -> None:
    job = submit(manager, digit_png, LONG)
    pid = manager.worker_pids()[0]
    steps = []
    current = stepping(manager, job.id)
    while len(steps) < 4:
        assert current.progress is not None
        steps.append(current.progress["step"])
        assert current.progress["steps"] == 1_000_000 and current.progress["total"] == 1
        assert 0 <= current.progress["goal_prob"] < 0.5
        current = stepping(manager, job.id, steps[-1])
    assert steps == sorted(set(steps)), steps
    # At most ~10 updates a second, however fast the steps go.
    first = manager.get(job.id)
    time.sleep(1.0)
    second = manager.get(job.id)
    assert first is not None and second is not None
    assert first.progress is not None and second.progress is not None
    assert second.version - first.version <= 12
    assert second.progress["step"] - first.progress["step"] > 2 * (second.version - first.version)
    shown = current.to_json()
    assert shown["status"] == "running" and shown["files"] == {} and shown["result"] is None

    asked = manager.cancel(job.id)
    assert asked is not None and asked.status is JobStatus.RUNNING  # until the worker stops
    stopped = finished(manager, job.id, timeout=10)
    assert stopped.status is JobStatus.CANCELLED
    one_sentence(stopped.error, "cancelled")
    again = manager.cancel(job.id)  # a finished job stays as it is
    assert again is not None and (again.status, again.error) == (stopped.status, stopped.error)
    # It stopped by itself: the same worker runs the next job.
    assert manager.worker_pids()[0] == pid
    after = finished(manager, submit(manager, digit_png).id)
    assert after.status is JobStatus.DONE
    assert manager.worker_pids()[0] == pid


def test_a_queued_job_cancels_at_once_and_the_queue_is_bounded(
    tmp_path: Path, digit_png: bytes
) -> None:
    with make_manager(queue_size=1) as jobs:
        running = submit(jobs, digit_png, LONG)
        stepping(jobs, running.id)
        queued = submit(jobs, digit_png)
        assert jobs.position(queued.id) == 0 and jobs.position(running.id) is None
        assert jobs.get(queued.id).to_json(0)["position"] == 0  # type: ignore[union-attr]
        assert jobs.is_full()
        assert jobs.stats()["waiting"] == 1 and jobs.stats()["running"] == 1

        # The queue holds one waiting job: the next submission is refused at once.
        job_id, folder = jobs.allocate()
        (folder / INPUT_NAME).write_bytes(digit_png)
        began = time.monotonic()
        with pytest.raises(QueueFull) as refused:
            jobs.submit(job_id, SHORT)
        assert time.monotonic() - began < 1
        assert refused.value.retry_after >= 1
        assert jobs.retry_after() >= 1
        one_sentence(str(refused.value), "queue is full", "try again")
        assert not folder.exists() and jobs.get(job_id) is None

        cancelled = jobs.cancel(queued.id)
        assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
        one_sentence(cancelled.error, "cancelled")
        assert cancelled.started is None and cancelled.to_json()["seconds"] is None
        assert jobs.position(queued.id) is None and not jobs.is_full()
        assert jobs.get(running.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
        jobs.cancel(running.id)
        assert finished(jobs, running.id, timeout=10).status is JobStatus.CANCELLED
        assert finished(jobs, submit(jobs, digit_png).id).status is JobStatus.DONE


# -- limits and failures -----------------------------------------------------------------------


def test_the_time_limit_stops_a_job_through_its_progress(digit_png: bytes) -> None:
    with make_manager(job_timeout_s=1.0) as jobs:
        job = submit(jobs, digit_png, LONG)
        stepping(jobs, job.id)
        pid = jobs.worker_pids()[0]
        failed = finished(jobs, job.id, timeout=15)
        assert failed.status is JobStatus.FAILED
        one_sentence(failed.error, "limit of 1 s", "fewer steps")
        assert failed.started is not None and failed.finished is not None
        assert 1.0 <= failed.finished - failed.started < 6
        assert jobs.worker_pids()[0] == pid  # it stopped by itself: no kill


@pytest.mark.slow
def test_the_time_limit_kills_a_worker_that_does_not_stop(digit_png: bytes) -> None:
    # The limit leaves the next job (a fresh worker: model loading and report included) time.
    with make_manager(job_timeout_s=6.0, cancel_grace_s=0.5) as jobs:
        job = submit(jobs, digit_png, LONG)
        stepping(jobs, job.id)
        pid = jobs.worker_pids()[0]
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # an attack stuck where it never reports progress
        failed = finished(jobs, job.id, timeout=20)
        assert failed.status is JobStatus.FAILED
        one_sentence(failed.error, "limit of 6 s")
        assert failed.finished is not None and failed.started is not None
        assert 6.0 <= failed.finished - failed.started < 6.0 + 0.5 + 3
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped
        assert jobs.worker_pids()[0] != pid
        # A fresh worker took its place and runs the next job.
        assert finished(jobs, submit(jobs, digit_png).id).status is JobStatus.DONE


@pytest.mark.slow
def test_a_cancel_kills_a_worker_that_does_not_stop(digit_png: bytes) -> None:
    with make_manager(cancel_grace_s=0.5) as jobs:
        job = submit(jobs, digit_png, LONG)
        stepping(jobs, job.id)
        pid = jobs.worker_pids()[0]
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        began = time.monotonic()
        jobs.cancel(job.id)
        cancelled = finished(jobs, job.id, timeout=10)
        assert time.monotonic() - began < 0.5 + 3
        assert cancelled.status is JobStatus.CANCELLED
        one_sentence(cancelled.error, "cancelled")
        assert jobs.worker_pids()[0] != pid
        assert finished(jobs, submit(jobs, digit_png).id).status is JobStatus.DONE


@pytest.mark.slow
def test_a_crashed_worker_fails_its_job_and_is_replaced(digit_png: bytes) -> None:
    with make_manager() as jobs:
        job = submit(jobs, digit_png, LONG)
        stepping(jobs, job.id)
        pid = jobs.worker_pids()[0]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer does
        failed = finished(jobs, job.id, timeout=10)
        assert failed.status is JobStatus.FAILED
        one_sentence(failed.error, "SIGKILL", "out of memory")
        assert jobs.worker_pids()[0] != pid
        assert finished(jobs, submit(jobs, digit_png).id).status is JobStatus.DONE


def test_errors_at_run_time_fail_the_job_with_one_sentence(
    manager: JobManager, digit_png: bytes
) -> None:
    no_class = JobRequest(model="digits_robust", attack="pgd", target=42, options={"steps": 5})
    bad_option = JobRequest(model="digits_robust", attack="pgd", options={"stepz": 5})
    not_image = submit(manager, b"GIF89a but not really an image", SHORT)
    failures = [finished(manager, submit(manager, digit_png, r).id) for r in (no_class, bad_option)]
    failures.append(finished(manager, not_image.id))
    assert [f.status for f in failures] == [JobStatus.FAILED] * 3
    one_sentence(failures[0].error, "42")
    one_sentence(failures[1].error, "'stepz'", "steps")
    message = one_sentence(failures[2].error, "the image")
    assert str(manager.results_dir) not in message  # the server's paths stay private
    for failure in failures:
        assert failure.to_json()["result"] is None and failure.to_json()["files"] == {}
    # The worker survived all three.
    assert finished(manager, submit(manager, digit_png).id).status is JobStatus.DONE


@pytest.mark.slow
def test_a_worker_is_replaced_after_its_share_of_jobs(digit_png: bytes) -> None:
    with make_manager(max_jobs_per_worker=1) as jobs:
        first = finished(jobs, submit(jobs, digit_png).id)
        pid = first_pid = jobs.worker_pids()[0]
        second = finished(jobs, submit(jobs, digit_png).id)
        assert first.status is second.status is JobStatus.DONE
        pid = jobs.worker_pids()[0]
        assert pid != first_pid
        deadline = time.monotonic() + 10
        while any(p.pid == first_pid for p in multiprocessing.active_children()):
            assert time.monotonic() < deadline, "the retired worker did not exit"
            time.sleep(0.1)


# -- expiry, quota, abandon --------------------------------------------------------------------


def test_finished_jobs_expire_with_their_folders(digit_png: bytes) -> None:
    with make_manager(result_ttl_s=0.5) as jobs:
        job = finished(jobs, submit(jobs, digit_png).id)
        assert job.folder is not None and job.folder.is_dir()
        deadline = time.monotonic() + 5
        while jobs.get(job.id) is not None or job.folder.exists():
            assert time.monotonic() < deadline, "the job did not expire"
            time.sleep(0.1)
        assert jobs.file_path(job.id, "result.json") is None
        assert jobs.cancel(job.id) is None


def test_the_disk_quota_deletes_the_oldest_finished_jobs_then_refuses(
    tmp_path: Path, digit_png: bytes
) -> None:
    with make_manager(tmp_path, disk_quota_bytes=1500, queue_size=4) as jobs:
        keep = jobs.results_dir / "not-a-job.txt"  # the manager's folder, another's file
        keep.write_bytes(b"x" * 5000)
        running = submit(jobs, digit_png, LONG)
        old, new = [], []
        for group in (old, new):
            job_id, folder = jobs.allocate()
            (folder / INPUT_NAME).write_bytes(b"x" * 600)  # never run: cancelled while queued
            group.append(jobs.submit(job_id, SHORT))
            jobs.cancel(job_id)
            time.sleep(0.01)
        spare, folder = jobs.allocate()
        (folder / INPUT_NAME).write_bytes(b"x" * 600)  # over the quota now
        # The next allocation deletes the oldest finished job and is granted.
        other, _ = jobs.allocate()
        assert jobs.get(old[0].id) is None and not (jobs.results_dir / old[0].id).exists()
        assert jobs.get(new[0].id) is not None
        # Unfinished work over the quota: nothing finished left to delete, so a refusal.
        (folder / "more").write_bytes(b"x" * 2000)
        with pytest.raises(ServerBusy) as refused:
            jobs.allocate()
        one_sentence(str(refused.value), "disk quota", "try again")
        assert jobs.get(new[0].id) is None  # deleted on the way
        assert jobs.get(running.id) is not None and (jobs.results_dir / running.id).is_dir()
        assert jobs.stats()["disk_bytes"] > 1500
        jobs.discard(spare)
        jobs.discard(other)
        assert not folder.exists()
        jobs.allocate()  # room again
        assert keep.read_bytes() == b"x" * 5000  # never the manager's to delete
    assert keep.exists() and (tmp_path / "results").is_dir()
    assert (tmp_path / "results").stat().st_mode & 0o777 == 0o700


def test_a_job_nobody_asks_about_is_abandoned(digit_png: bytes) -> None:
    with make_manager(abandon_after_s=1.0) as jobs:
        job = submit(jobs, digit_png, LONG)
        _, upload = jobs.allocate()  # an upload whose request never came
        deadline = time.monotonic() + 15
        while True:  # look without get(), which would count as a client asking
            with jobs._lock:
                status = jobs._jobs[job.id].job.status
                error = jobs._jobs[job.id].job.error
            if status.finished:
                break
            assert time.monotonic() < deadline, "the job was not abandoned"
            time.sleep(0.2)
        assert status is JobStatus.CANCELLED
        one_sentence(error, "no client asked", "1 s")
        while upload.exists():
            assert time.monotonic() < deadline, "the stale folder was not deleted"
            time.sleep(0.2)


# -- ids, files, shutdown ----------------------------------------------------------------------


def test_malformed_ids_and_names_find_nothing(manager: JobManager, digit_png: bytes) -> None:
    job = finished(manager, submit(manager, digit_png).id)
    assert manager.get(job.id) is not None
    for bad in ("", "..", "../" + job.id, job.id.upper(), job.id + "0", job.id[:-1], " " + job.id):
        assert manager.get(bad) is None
        assert manager.cancel(bad) is None
        assert manager.position(bad) is None
        assert manager.file_path(bad, "result.json") is None
    for name in ("input", INPUT_NAME, "../result.json", "result.json/..", "", ".", "x.png"):
        assert manager.file_path(job.id, name) is None
    with pytest.raises(InvalidArgumentError):
        manager.submit("0" * 32, SHORT)  # never allocated
    # A link in a job's folder is not followed, nor offered.
    original = manager.file_path(job.id, "original.png")
    assert original is not None
    original.unlink()
    original.symlink_to(manager.file_path(job.id, "adversarial.png"))  # type: ignore[arg-type]
    assert manager.file_path(job.id, "original.png") is None
    assert "original.png" not in job.to_json()["files"]


def children() -> set[int | None]:
    """The pids of this process's living children (besides those of the shared manager)."""
    return {child.pid for child in multiprocessing.active_children()}


def test_close_leaves_no_process_and_no_temporary_folder(digit_png: bytes) -> None:
    before = children()
    jobs = make_manager()
    jobs.start()
    job = submit(jobs, digit_png, LONG)
    queued = submit(jobs, digit_png)
    stepping(jobs, job.id)
    folder = jobs.results_dir
    assert folder.name.startswith("trompe-serve-") and folder.is_dir()
    began = time.monotonic()
    jobs.close()
    assert time.monotonic() - began < 4  # the running job stopped at its next step
    assert children() <= before
    assert not folder.exists()
    jobs.close()  # again: nothing to do
    with pytest.raises(ServerBusy):
        jobs.allocate()
    for job_id in (job.id, queued.id):
        stopped = jobs.get(job_id)
        assert stopped is not None and stopped.status is JobStatus.CANCELLED


def test_a_submission_after_close_is_refused(digit_png: bytes) -> None:
    before = children()
    jobs = make_manager()
    with jobs:
        job_id, folder = jobs.allocate()
        (folder / INPUT_NAME).write_bytes(digit_png)
    with pytest.raises(ServerBusy):
        jobs.submit(job_id, SHORT)
    assert children() <= before


def test_job_json_lists_only_existing_files(tmp_path: Path) -> None:
    job = Job(id="a" * 32, request=SHORT, folder=tmp_path)
    assert job.to_json(3)["files"] == {} and job.to_json(3)["position"] == 3
    Image.new("RGB", (2, 2)).save(tmp_path / "original.png")
    (tmp_path / "elsewhere.png").write_bytes(b"")
    shown = job.to_json()
    assert shown["files"] == {"original.png": f"/api/jobs/{'a' * 32}/files/original.png"}
    assert shown["status"] == "queued" and shown["seconds"] is None and shown["result"] is None


@pytest.mark.slow
def test_concurrent_clients_get_a_consistent_queue(digit_png: bytes) -> None:
    """Threads submit, poll and cancel at once (as the app's handlers do): every accepted job
    ends, the done ones with their files, and the refused ones leave nothing behind."""
    import random
    import threading

    quick = JobRequest(model="digits_robust", attack="fgsm", target=3, options={})
    outcomes: list[tuple[str, str, bool]] = []  # (job id, how it ended, cancel asked)
    refused: list[QueueFull] = []
    errors: list[BaseException] = []
    with make_manager(queue_size=2) as jobs:

        def client(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(3):
                    try:
                        job = submit(jobs, digit_png, quick)
                    except QueueFull as full:
                        refused.append(full)
                        time.sleep(0.2)
                        continue
                    cancel = rng.random() < 0.3
                    if cancel:
                        jobs.cancel(job.id)
                    ended = finished(jobs, job.id, timeout=120)
                    outcomes.append((job.id, ended.status.value, cancel))
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not errors, errors
        assert len(outcomes) + len(refused) == 12 and outcomes
        for job_id, status, cancel in outcomes:
            assert status == "done" or (cancel and status == "cancelled"), (status, cancel)
            present = {name for name in FILES if jobs.file_path(job_id, name) is not None}
            assert present == (set(FILES) if status == "done" else set()), status
        assert all(full.retry_after >= 1 for full in refused)
        stats = jobs.stats()
        assert stats["waiting"] == stats["running"] == 0
        # Only the accepted jobs have folders.
        folders = {path.name for path in jobs.results_dir.iterdir()}
        assert folders == {job_id for job_id, _, _ in outcomes}
