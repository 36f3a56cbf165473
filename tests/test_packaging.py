"""setup.py as a Dataflow --setup_file and as a wheel; Beam options for Dataflow checked offline."""

import os
import re
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from data_prep import options, runners

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATAFLOW = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=europe-west4",
    "--temp_location=gs://my-bucket/tmp",
    f"--setup_file={ROOT}/setup.py",
]


def test_complete_dataflow_options_pass_offline():
    options = runners.pipeline_options(DATAFLOW).get_all_options()
    assert options["runner"] == "DataflowRunner" and options["setup_file"].endswith("setup.py")


@pytest.mark.parametrize(
    "drop,message,add",
    [
        ("--project", "--project", []),
        ("--region", "--region", []),
        ("--temp_location", "--temp_location", []),
        ("--setup_file", "--setup_file=./setup.py (or --sdk_container_image)", []),
        (
            "--setup_file",
            "--setup_file=./setup.py",
            ["--requirements_file=requirements.txt"],
        ),  # Would not ship data_prep.
    ],
)
def test_incomplete_dataflow_options_name_what_is_missing(drop, message, add):
    args = [a for a in DATAFLOW if not a.startswith(drop)] + add
    with pytest.raises(options.UserError, match=f"needs .*{re.escape(message)}"):
        runners.pipeline_options(args)


@pytest.mark.parametrize("runner", ["dataflow", "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"])
def test_any_name_of_the_dataflow_runner_gets_its_options_checked(runner):
    with pytest.raises(options.UserError, match=f"--runner={re.escape(runner)} needs --project"):
        runners.pipeline_options([f"--runner={runner}"])


def test_dataflow_temp_location_must_be_gcs():
    with pytest.raises(options.UserError, match="gs:// path"):
        runners.pipeline_options(
            [a if not a.startswith("--temp_location") else "--temp_location=/tmp/x" for a in DATAFLOW]
        )


@pytest.mark.parametrize(
    "cores, mode, workers, threads",
    [(1, "in_memory", 1, 1), (2, "in_memory", 1, 2), (3, "multi_processing", 2, 2), (16, "multi_processing", 8, 2)],
)
def test_local_default_is_a_process_per_two_cores_each_decoding_on_two_threads(
    monkeypatch, cores, mode, workers, threads
):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    options = runners.pipeline_options([])
    known = options.get_all_options()
    assert (known["runner"], known["direct_running_mode"], known["direct_num_workers"]) == (
        "FnApiRunner",
        mode,
        workers,
    )
    assert runners.decode_threads(options) == threads
    assert runners.decode_threads(options, requested=3) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--direct_running_mode=multi_processing"],
        ["--runner=FnApiRunner", "--direct_running_mode=multi_processing"],
        ["--direct_running_mode=multi_processing", "--direct_num_workers=0"],
    ],
)
def test_worker_processes_asked_for_by_name_use_every_core_with_one_decode_thread_each(monkeypatch, args):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    options = runners.pipeline_options(args)
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"
    assert options.get_all_options()["direct_num_workers"] in (4, 0)  # 0: Beam's own "a worker per core".
    assert runners.decode_threads(options) == 1


def test_explicit_worker_count_shares_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    options = runners.pipeline_options(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert runners.decode_threads(options) == 4
    assert runners.decode_threads(runners.pipeline_options(["--direct_running_mode=in_memory"])) == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    options = runners.pipeline_options(["--direct_num_workers=2"])  # Workers without a mode: worker processes.
    assert options.get_all_options()["direct_running_mode"] == "multi_processing"
    assert runners.decode_threads(options) == 1


def test_other_runners_get_one_decode_thread():
    assert runners.decode_threads(runners.pipeline_options(DATAFLOW)) == 1


@pytest.mark.slow
def test_wheel_holds_the_three_packages_and_installs_in_a_clean_venv(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            ROOT,
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("data_prep/build.py", "data_prep/schema.py", "trainer/main.py", "configs/catsdogs_vgg16.py"):
        assert module in names
    assert not [n for n in names if n.startswith("tests/")]

    venv = tmp_path / "clean"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # The dependencies come from this environment (no download); the package itself only from the wheel.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    check = (
        "import data_prep.build, data_prep.schema, trainer.main, configs.catsdogs_vgg16, os; "
        "print(os.path.dirname(data_prep.schema.__file__))"
    )
    result = subprocess.run(
        [python, "-c", check], capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith(site), "must import from the installed wheel, not the checkout"


@pytest.mark.slow
def test_setup_py_builds_the_sdist_that_dataflow_stages(tmp_path):
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("*.tar.gz")
    assert sdist.stat().st_size > 10_000
