"""Builds on runners other than the in-process one.

Beam's portable runner with an external worker pool speaks the Fn API that Flink, Spark and Dataflow Runner v2 speak:
the job is submitted to a job service, artifacts are staged, and the DoFns run in separate SDK worker processes.
"""

import concurrent.futures
import contextlib
import dataclasses
import glob
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import build_folder, free_ports

from data_prep import images, options, progress, runners, sample_data

VENV_BIN = os.path.dirname(sys.executable)
START_TIMEOUT_S = 60


def start_service(module, port_flag, port, log_path, path_first=VENV_BIN):
    """A Beam service in its own process group (so its SDK workers can be ended with it), once it accepts connections.

    The worker pool starts SDK workers as `python` from PATH: `path_first` decides which Python that is.
    """
    env = {**os.environ, "PATH": path_first + os.pathsep + os.environ["PATH"]}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, f"{port_flag}={port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_service(process)
            pytest.fail(f"{module} did not listen on port {port}:\n{pathlib.Path(log_path).read_text()}")
        time.sleep(0.05)  # Polling interval only; the connection above is the synchronisation.


def stop_service(process):
    """Terminates the service's process group (a stopped one too), then kills what is left of it."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # The pool's SDK workers outlive a terminated pool.
    process.wait()


@pytest.fixture(scope="module")
def job_endpoint(tmp_path_factory):
    """A local job service: runs submitted jobs on the SDK workers that the job's environment names."""
    (port,) = free_ports(1)
    process = start_service(
        "apache_beam.runners.portability.local_job_service_main",
        "--port",
        port,
        tmp_path_factory.mktemp("job_service") / "log.txt",
    )
    yield f"localhost:{port}"
    stop_service(process)


@dataclasses.dataclass(frozen=True)
class WorkerPool:
    process: subprocess.Popen
    log_path: pathlib.Path
    beam_args: tuple[str, ...]  # A build's flags to run on this pool through the job service.


@pytest.fixture
def start_worker_pool(tmp_path):
    """Starts worker pools, each in its own process group, all stopped after the test."""
    started = []

    def start(job_endpoint, path_first=VENV_BIN):
        (port,) = free_ports(1)
        log_path = tmp_path / f"worker_pool_{port}.txt"
        process = start_service(
            "apache_beam.runners.worker.worker_pool_main", "--service_port", port, log_path, path_first
        )
        started.append(process)
        return WorkerPool(
            process,
            log_path,
            (
                "--runner=PortableRunner",
                f"--job_endpoint={job_endpoint}",
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{port}",
            ),
        )

    yield start
    for process in started:
        stop_service(process)


@pytest.fixture
def fine_progress(monkeypatch):
    """Progress read (and stalls checked) every 0.2 s, so that a short --stall_timeout_s is measured closely."""
    monkeypatch.setattr(runners, "PROGRESS_INTERVAL_S", 0.2)


@pytest.fixture(scope="module")
def copies_folder(tmp_path_factory):
    """1000 copies of one 1000x800 photo: a build of a few seconds on external workers, long enough to stop mid-way."""
    source, root = tmp_path_factory.mktemp("photo"), tmp_path_factory.mktemp("copies")
    sample_data.write_sample_folder(str(source), images_per_class=1, min_side=800, max_side=1000, include_broken=False)
    for class_name in ("Cat", "Dog"):
        (root / class_name).mkdir()
        for i in range(500):
            shutil.copyfile(source / "Cat" / "0.jpg", root / class_name / f"{i}.jpg")
    return root


def build_in_thread(*args, **kwargs) -> concurrent.futures.Future:
    """build_folder on a daemon thread: a build that hangs cannot keep the test session from ending."""
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(build_folder(*args, **kwargs))
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return future


def wait_for_progress(datasets_dir, build, timeout_s=60):
    """Returns once the build's workers report a processed file (and the build is still running)."""
    deadline = time.monotonic() + timeout_s
    while not any(progress.read_progress(w) for w in glob.glob(str(datasets_dir / ".*.incomplete-*" / "_work"))):
        assert not build.done(), f"the build ended before any progress was seen: {build.exception()!r}"
        assert time.monotonic() < deadline, "no progress from the workers"
        time.sleep(0.02)  # Polling interval only; the progress files are the synchronisation.
    assert not build.done(), "the build ended before it could be stopped mid-way: make copies_folder bigger"


@pytest.mark.slow
def test_portable_runner_with_external_workers_builds_byte_identical_output(
    tmp_path, sample_folder, sample_dataset, job_endpoint, start_worker_pool, caplog
):
    pool = start_worker_pool(job_endpoint)
    with caplog.at_level(logging.INFO):
        report = build_folder(sample_folder.parent, tmp_path / "portable", beam_args=pool.beam_args)
    assert "Starting worker" in pool.log_path.read_text(), "the DoFns should have run in the pool's SDK worker"
    in_process, _ = sample_dataset
    names = sorted(os.listdir(in_process))
    assert sorted(os.listdir(tmp_path / "portable")) == names
    for name in names:
        assert (tmp_path / "portable" / name).read_bytes() == (in_process / name).read_bytes(), name
    counts = report["counts"]
    assert (
        f"Beam counters agree with the report: files_seen={counts['files_seen']}, written={counts['written']}, "
        f"augmented=0, rejected={counts['rejected']}, duplicates={counts['duplicates']}, "
        f"skipped={counts['skipped']}, not_selected=0"
    ) in [r.getMessage() for r in caplog.records]


def test_a_runner_given_by_module_path_gets_the_options_its_module_registers():
    flag = "--cluster_address=tcp://scheduler:8786"
    assert "runner_with_options" not in sys.modules, "its options would already be registered"
    with pytest.raises(options.UserError, match="unknown flag.*--cluster_address"):
        runners.pipeline_options([flag])
    beam_options = runners.pipeline_options(["--runner=runner_with_options.ClusterRunner", flag])
    assert beam_options.get_all_options()["cluster_address"] == "tcp://scheduler:8786"


@pytest.mark.parametrize(
    "name,message",
    [
        ("no_such_package.ClusterRunner", "ModuleNotFoundError: No module named 'no_such_package'"),
        ("apache_beam.runners.portability.portable_runner.NoSuchRunner", "AttributeError"),
        ("Flinkk", "Unexpected pipeline runner: Flinkk"),
    ],
)
def test_a_runner_that_cannot_be_loaded_is_one_line_naming_the_flag(name, message):
    with pytest.raises(options.UserError) as error:
        runners.pipeline_options([f"--runner={name}"])
    assert str(error.value).startswith(f"--runner={name}: cannot load this runner: ")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["portable", "Flink", "SparkRunner", "direct"])
def test_beams_short_runner_names_are_loaded_as_beam_resolves_them(name):
    assert runners.pipeline_options([f"--runner={name}"]).get_all_options()["runner"] == name


@pytest.mark.slow
def test_workers_without_beam_fail_the_build_within_the_stall_timeout(
    tmp_path, sample_folder, job_endpoint, start_worker_pool, fine_progress
):
    python_without_beam = tmp_path / "bin" / "python"  # The venv's interpreter without its site-packages.
    python_without_beam.parent.mkdir()
    python_without_beam.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python_without_beam.chmod(0o755)
    pool = start_worker_pool(job_endpoint, path_first=str(python_without_beam.parent))
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    stall_timeout_s = 3
    start = time.monotonic()
    with pytest.raises(runners.JobStalled) as error:
        build_folder(sample_folder.parent, datasets / "out", beam_args=pool.beam_args, stall_timeout_s=stall_timeout_s)
    assert stall_timeout_s < time.monotonic() - start < stall_timeout_s + 20
    message = str(error.value)
    files = sum(len(names) for _, _, names in os.walk(sample_folder.parent))
    assert message.startswith("--runner=PortableRunner: no file processed and no shard begun for ")
    assert f"0 / {files} files done" in message and "their Python has apache_beam" in message and "\n" not in message
    assert "No module named 'apache_beam'" in pool.log_path.read_text()
    assert os.listdir(datasets) == [], "nothing committed, no temporary directory left"


@pytest.mark.slow
def test_a_worker_frozen_mid_build_fails_the_build_within_the_stall_timeout(
    tmp_path, copies_folder, job_endpoint, start_worker_pool, fine_progress
):
    pool = start_worker_pool(job_endpoint)
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    stall_timeout_s = 3
    build = build_in_thread(
        copies_folder,
        datasets / "out",
        beam_args=pool.beam_args,
        stall_timeout_s=stall_timeout_s,
        image_options=images.ImageOptions(image_size=256),
    )
    wait_for_progress(datasets, build)
    os.killpg(pool.process.pid, signal.SIGSTOP)  # The pool and its SDK worker: alive, connected, and doing nothing.
    frozen = time.monotonic()
    with pytest.raises(runners.JobStalled, match=r"no shard begun for \d+ s .* [1-9]\d* / 1000 files done"):
        build.result(timeout=stall_timeout_s + 20)
    assert stall_timeout_s < time.monotonic() - frozen < stall_timeout_s + 20
    assert os.listdir(datasets) == [], "nothing committed, no temporary directory left"


@pytest.mark.slow
def test_a_worker_pool_killed_mid_build_fails_the_build(
    tmp_path, copies_folder, job_endpoint, start_worker_pool, fine_progress
):
    pool = start_worker_pool(job_endpoint)
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    build = build_in_thread(
        copies_folder,
        datasets / "out",
        beam_args=pool.beam_args,
        stall_timeout_s=10,
        image_options=images.ImageOptions(image_size=256),
    )
    wait_for_progress(datasets, build)
    os.killpg(pool.process.pid, signal.SIGKILL)  # The pool and its SDK worker.
    killed = time.monotonic()
    error = build.exception(timeout=30)
    # Beam sees the closed connection and fails the job (about 1 s here); were it to wait, the stall timeout would
    # end it.
    assert isinstance(error, (RuntimeError, runners.JobStalled)), error
    assert time.monotonic() - killed < 30
    assert os.listdir(datasets) == [], "nothing committed, no temporary directory left"


class FakeJob:
    """A submitted job (PipelineResult) that ends when told to, or when cancelled."""

    def __init__(self):
        self.ended = threading.Event()
        self.cancelled = False

    def wait_until_finish(self):
        self.ended.wait()

    def cancel(self):
        self.cancelled = True
        self.ended.set()


@pytest.mark.slow
def test_a_job_is_stalled_only_once_it_stops_processing_files_and_beginning_shards(tmp_path, fine_progress):
    work_dir, stall_timeout_s = tmp_path / "_work", 1.0
    watcher = runners.JobWatcher(str(work_dir), str(tmp_path), total=10)
    watcher.start()
    working = FakeJob()

    def work():  # Files, then shards (as after the last decode), one every 0.1 s: far more often than the timeout.
        files = progress.Progress(str(work_dir))
        for _ in range(10):
            files.add()
            files.flush()
            time.sleep(0.1)  # Paces the simulated work; nothing waits on it.
        for i in range(10):
            (tmp_path / f"x-train.tfrecord-{i:05d}-of-00010").touch()
            time.sleep(0.1)
        working.ended.set()

    threading.Thread(target=work, daemon=True).start()
    runners.wait_for_job(working, watcher, "FakeRunner", stall_timeout_s)
    assert not working.cancelled
    stopped, start = FakeJob(), time.monotonic()
    with pytest.raises(
        runners.JobStalled,
        match=r"^--runner=FakeRunner: no file processed and no shard begun for "
        r"\d+ s \(--stall_timeout_s=1; 10 / 10 files done\), job cancelled; ",
    ):
        runners.wait_for_job(stopped, watcher, "FakeRunner", stall_timeout_s)
    assert stopped.cancelled and stall_timeout_s < time.monotonic() - start < stall_timeout_s + 5
    watcher.stop()
