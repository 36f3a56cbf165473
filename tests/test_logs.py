"""Library notices are kept out of what users see; real warnings and errors are not."""

import errno
import logging
import os
import re
import subprocess
import sys

from absl import logging as absl_logging
from conftest import FAST_BEAM_ARGS, root_logger
from PIL import Image

from data_prep import logs

# What TensorFlow 2.21 prints at start-up on a CPU-only machine (oneDNN on), verbatim.
NOTICES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796043915.570381   26097 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    "I0000 00:00:1796043915.570702   26097 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n",
    "I0000 00:00:1796043915.625232   26097 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the "
    "appropriate compiler flags.\n",
]
CUINIT = (
    "E0000 00:00:1796043917.599164   26097 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)\n"
)


def test_only_the_known_notices_are_dropped():
    assert all(logs._is_notice(line, has_gpu_driver=False) for line in NOTICES + [CUINIT])
    assert not logs._is_notice(CUINIT, has_gpu_driver=True), "with a GPU driver, a failed cuInit is a real error"
    for real in (
        "E0000 00:00:1.0  1 op_kernel.cc:1] OP_REQUIRES failed: out of memory\n",
        "W0000 00:00:1.0  1 cpu_allocator_impl.cc:83] Allocation exceeds 10% of free system memory.\n",
        "UserWarning: something a user must know\n",
    ):
        assert not logs._is_notice(real, has_gpu_driver=False)


def test_starting_tensorflow_prints_no_notice_but_replays_what_else_reached_stderr():
    code = (
        "import os; from data_prep import logs\n"
        "with logs._stderr_without_notices():\n"
        f"    os.write(2, {''.join(NOTICES).encode()!r})\n"
        "    os.write(2, b'a real problem\\n')\n"
        "import trainer\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "a real problem\n" in result.stderr
    assert not [line for line in result.stderr.splitlines(keepends=True) if logs._is_notice(line, False)]


def test_tensorflow_info_lines_are_dropped_and_ours_kept(caplog):
    logs.hide_library_noise()
    tf_file = os.path.join(logs._chatty_library_dirs()[0], "python", "checkpoint", "functional_saver.py")

    def record(level, pathname):
        return absl_logging.get_absl_logger().makeRecord("absl", level, pathname, 1, "message", (), None)

    assert not logs._not_library_info(record(logging.INFO, tf_file))
    assert logs._not_library_info(record(logging.WARNING, tf_file))
    assert logs._not_library_info(record(logging.INFO, logs.__file__))
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="absl"):
        absl_logging.info("ours")
    assert [(r.getMessage(), r.filename) for r in caplog.records] == [("ours", "test_logs.py")]


def test_beams_misleading_resource_warning_is_dropped_and_other_warnings_kept(caplog, monkeypatch):
    """RunInference warns per batch that `resource` is missing when only its optional torch import failed."""
    from apache_beam.ml.inference import base

    logs.hide_library_noise()
    monkeypatch.setattr(base, "resource", None)  # As without torch installed.
    with caplog.at_level(logging.WARNING):
        assert base._get_current_process_memory_in_bytes() == 0
        logging.warning("Resource limits reached")
    assert [r.getMessage() for r in caplog.records] == ["Resource limits reached"]


def test_out_of_space_is_recognised_however_a_runner_wraps_it():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert logs.is_out_of_space(full)
    assert logs.is_out_of_space(RuntimeError("OSError: [Errno 28] No space left on device [while running 'Spill']"))
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("wrapped") from None  # Only the implicit context links them.
    except RuntimeError as wrapped:
        assert logs.is_out_of_space(wrapped)
    assert not logs.is_out_of_space(OSError(errno.EACCES, "Permission denied"))
    assert not logs.is_out_of_space(ValueError("bad"))


def log_a_line_of_each():
    logging.getLogger("data_prep.driver").info("data_prep info")
    logging.getLogger("data_prep.runners").warning("data_prep warning")
    absl_logging.info("trainer info")
    logging.getLogger("apache_beam.runners").info("beam info")
    logging.getLogger("urllib3").info("library info")


def lines(text):
    """The messages of the lines printed, whatever the format."""
    return [re.split(r"\] |:(?=[^:]*$)", line)[-1] for line in text.splitlines()]


def test_shown_prints_our_lines_once_where_nothing_would_and_restores_every_logger(capsys):
    with root_logger(), logs.shown():
        log_a_line_of_each()
        logging.warning("a library's warning")  # The module's functions run logging.basicConfig(), as Beam's import.
        logging.getLogger("data_prep.driver").info("data_prep info again")
    err = capsys.readouterr().err
    printed = lines(err)
    assert printed.count("data_prep info") == printed.count("data_prep warning") == printed.count("trainer info") == 1
    assert "beam info" not in printed and "library info" not in printed
    assert "WARNING:root:a library's warning" in err and re.search(r"\nI\d{4} .*\] data_prep info again\n", err)
    for name in (*logs.OUR_LOGGERS, "apache_beam"):
        logger = logging.getLogger(name)
        assert logger.level == logging.NOTSET and not logger.handlers and logger.propagate
    with root_logger():
        logging.getLogger("data_prep.driver").info("after")
    assert "after" not in capsys.readouterr().err


def test_shown_removes_the_root_handler_an_import_adds_and_keeps_the_users():
    users = logging.StreamHandler()
    for before in ([], [users]):
        with root_logger(*before):
            with logs.shown():
                logging.basicConfig()  # As importing Beam does, where the root has no handler.
                logging.root.addHandler(logging.NullHandler())
            assert logging.root.handlers == before


def test_shown_leaves_a_handler_that_prints_info_to_print_them(capsys, monkeypatch):
    """As under absl's app.run (its handler on the root, INFO shown): the command lines print each line once."""
    absl_logging.get_absl_handler().activate_python_handler()
    # Once flags are parsed (an in-process command test ran before), absl's handler prints INFO to the stream it was
    # made with, the sys.stderr of that time, not capsys's.
    monkeypatch.setattr(absl_logging.get_absl_handler().python_handler, "stream", sys.stderr)
    with root_logger(absl_logging.get_absl_handler(), level=logging.INFO), logs.shown():
        assert not logging.getLogger("data_prep").handlers and not absl_logging.get_absl_logger().handlers
        log_a_line_of_each()
    printed = lines(capsys.readouterr().err)
    assert printed.count("data_prep info") == printed.count("trainer info") == 1


def test_shown_prints_only_what_a_users_warning_handler_does_not(capsys):
    warnings_only = logging.StreamHandler(sys.stdout)
    warnings_only.setLevel(logging.WARNING)
    with root_logger(warnings_only), logs.shown():
        log_a_line_of_each()
    out, err = capsys.readouterr()
    assert lines(out) == ["data_prep warning"] and lines(err) == ["data_prep info", "trainer info"]


def test_shown_keeps_a_level_the_user_set_on_our_loggers(capsys):
    logging.getLogger("data_prep").setLevel(logging.WARNING)
    try:
        with root_logger(), logs.shown():
            log_a_line_of_each()
    finally:
        logging.getLogger("data_prep").setLevel(logging.NOTSET)
    printed = lines(capsys.readouterr().err)
    assert "data_prep info" not in printed and "data_prep warning" in printed and "trainer info" in printed


def test_the_build_command_prints_each_line_once(tmp_path):
    """app.run shows INFO through absl's handler; the API under it adds nothing."""
    for name in ("Cat/a.png", "Dog/b.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), "red" if "Cat" in name else "blue").save(tmp_path / "in" / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.build",
            "--dataset=catsdogs",
            f"--input_dir={tmp_path / 'in'}",
            f"--output_dir={tmp_path / 'out'}",
            "--image_size=32",
            *FAST_BEAM_ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(f"] built {tmp_path / 'out'}: files_seen=2") == 1, result.stderr[-3000:]
    assert result.stderr.count("] splits: ") == 1
