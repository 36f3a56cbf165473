"""The commands as a user meets them: `--help` (exit 0, a two-line usage first), the console scripts of setup.py,
and flags that are the Python API's arguments."""

import glob
import os
import re
import runpy
import subprocess
import sys

import pytest
import setuptools

from data_prep import api

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {  # Module: its console script.
    "data_prep.build": "imgcls-build",
    "data_prep.extract_features": "imgcls-extract-features",
    "trainer.main": "imgcls-train",
    "trainer.predict": "imgcls-predict",
    "data_prep.show": "imgcls-show",
    "data_prep.sample_data": None,
}
# What pip writes for a console_scripts entry point "NAME = MODULE:FUNCTION".
PIP_SCRIPT = """import sys
from {module} import {function}
if __name__ == "__main__":
    sys.exit({function}())
"""

pytestmark = pytest.mark.slow  # Each help starts a Python that imports TensorFlow or Beam.


def help_of(*command, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": REPO}
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=cwd, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def flags_listed(help_text):
    return set(re.findall(r"^  --(?:\[no\])?(\w+):", help_text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def helps():
    return {module: help_of(sys.executable, "-m", module) for module in COMMANDS}


@pytest.fixture(scope="module")
def entry_points():
    """setup.py's console scripts, {name: "module:function"}, read by running setup.py with setup() recording."""
    given = {}
    saved = setuptools.setup
    setuptools.setup = lambda **kwargs: given.update(kwargs)
    try:
        runpy.run_path(os.path.join(REPO, "setup.py"))
    finally:
        setuptools.setup = saved
    assert set(given["entry_points"]) == {"console_scripts"}
    scripts = dict(line.split(" = ") for line in given["entry_points"]["console_scripts"])
    return {name: target.strip() for name, target in scripts.items()}


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0_and_starts_with_a_two_line_usage(helps, module):
    usage, summary, blank = helps[module].splitlines()[:3]
    assert usage.startswith(f"usage: python -m {module} --")
    assert summary[:1].isupper() and summary.endswith(".") and not blank
    if COMMANDS[module]:
        assert f"(installed as {COMMANDS[module]} too)" in summary
    assert "\nflags:\n" in helps[module]


def test_help_is_a_success_wherever_it_stands_and_a_bad_flag_is_not():
    late = help_of(sys.executable, "-m", "data_prep.sample_data", "--output_dir=/nonexistent/x", "--seed=3")
    assert late.startswith("usage: python -m data_prep.sample_data")
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.sample_data", "--seed=x", "--output_dir=/tmp/x"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 1 and "--seed" in result.stderr


def test_the_trainers_help_lists_the_configs_as_config_takes_them(helps, tmp_path):
    configs = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
    listed = helps["trainer.main"].split("\nconfigs (--config=PATH):\n")[1].split("\n\n")[0].splitlines()
    assert [line.split(": ")[0].strip() for line in listed] == [
        os.path.relpath(path, REPO) for path in configs if not path.endswith("__init__.py")
    ]
    assert (
        "  configs/catsdogs_vgg16.py: Cats vs dogs with VGG16: feature extraction, then fine-tuning from block5_conv1."
        in listed
    )
    elsewhere = help_of(sys.executable, "-m", "trainer.main", cwd=tmp_path)  # Outside the repository: full paths.
    assert f"\n  {os.path.join(REPO, 'configs', 'mnist_lenet5.py')}: MNIST with LeNet-5" in elsewhere


def test_flags_and_api_arguments_are_the_same_names(helps):
    assert flags_listed(helps["data_prep.build"]) == set(api.BUILD_SETTINGS) - {"beam_args"}
    assert flags_listed(helps["data_prep.extract_features"]) == set(api.EXTRACT_SETTINGS) - {"beam_args"}


def test_setup_py_installs_a_console_script_per_command(entry_points):
    assert set(entry_points) == {name for name in COMMANDS.values() if name}


@pytest.mark.parametrize("module", [module for module, name in COMMANDS.items() if name])
def test_each_console_script_is_python_m_under_another_name(entry_points, helps, module, tmp_path):
    target, function = entry_points[COMMANDS[module]].split(":")
    script = tmp_path / COMMANDS[module]
    script.write_text(PIP_SCRIPT.format(module=target, function=function))
    assert help_of(sys.executable, str(script)) == helps[module]
