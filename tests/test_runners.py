"""Builds on runners other than the in-process one.

Beam's portable runner with an external worker pool speaks the Fn API that Flink, Spark and Dataflow Runner v2 speak:
the job is submitted to a job service, artifacts are staged, and the DoFns run in separate SDK worker processes.
"""
import dataclasses
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import build_folder, free_ports

from data_prep import driver

VENV_BIN = os.path.dirname(sys.executable)
START_TIMEOUT_S = 60


def start_service(module, port_flag, port, log_path, path_first=VENV_BIN):
    """A Beam service in its own process group (so its SDK workers can be ended with it), once it accepts connections.

    The worker pool starts SDK workers as `python` from PATH: `path_first` decides which Python that is.
    """
    env = {**os.environ, "PATH": path_first + os.pathsep + os.environ["PATH"]}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module, f"{port_flag}={port}"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_service(process)
            pytest.fail(f"{module} did not listen on port {port}:\n{open(log_path).read()}")
        time.sleep(0.05)  # Polling interval only; the connection above is the synchronisation.


def stop_service(process):
    """Terminates the service's process group (a stopped one too), then kills what is left of it."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # The pool's SDK workers outlive a terminated pool.
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="module")
def job_endpoint(tmp_path_factory):
    """A local job service: runs submitted jobs on the SDK workers that the job's environment names."""
    port, = free_ports(1)
    process = start_service("apache_beam.runners.portability.local_job_service_main", "--port", port,
                            tmp_path_factory.mktemp("job_service") / "log.txt")
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
        port, = free_ports(1)
        log_path = tmp_path / f"worker_pool_{port}.txt"
        process = start_service("apache_beam.runners.worker.worker_pool_main", "--service_port", port, log_path,
                                path_first)
        started.append(process)
        return WorkerPool(process, log_path, (
            "--runner=PortableRunner", f"--job_endpoint={job_endpoint}", "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{port}"))

    yield start
    for process in started:
        stop_service(process)


@pytest.mark.slow
def test_portable_runner_with_external_workers_builds_byte_identical_output(
        tmp_path, sample_folder, sample_dataset, job_endpoint, start_worker_pool, caplog):
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
    assert (f"Beam counters agree with the report: files_seen={counts['files_seen']}, written={counts['written']}, "
            f"augmented=0, rejected={counts['rejected']}, duplicates={counts['duplicates']}, "
            f"skipped={counts['skipped']}") in [r.getMessage() for r in caplog.records]


def test_a_runner_given_by_module_path_gets_the_options_its_module_registers():
    flag = "--cluster_address=tcp://scheduler:8786"
    assert "runner_with_options" not in sys.modules, "its options would already be registered"
    with pytest.raises(driver.UserError, match="unknown flag.*--cluster_address"):
        driver.pipeline_options([flag])
    options = driver.pipeline_options(["--runner=runner_with_options.ClusterRunner", flag])
    assert options.get_all_options()["cluster_address"] == "tcp://scheduler:8786"


@pytest.mark.parametrize("name,message", [
    ("no_such_package.ClusterRunner", "ModuleNotFoundError: No module named 'no_such_package'"),
    ("apache_beam.runners.portability.portable_runner.NoSuchRunner", "AttributeError"),
    ("Flinkk", "Unexpected pipeline runner: Flinkk"),
])
def test_a_runner_that_cannot_be_loaded_is_one_line_naming_the_flag(name, message):
    with pytest.raises(driver.UserError) as error:
        driver.pipeline_options([f"--runner={name}"])
    assert str(error.value).startswith(f"--runner={name}: cannot load this runner: ")
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["portable", "Flink", "SparkRunner", "direct"])
def test_beams_short_runner_names_are_loaded_as_beam_resolves_them(name):
    assert driver.pipeline_options([f"--runner={name}"]).get_all_options()["runner"] == name
