"""What a user sees: our progress and our errors, not the libraries' start-up notices.

Each filter names the exact notice it drops; everything else (real warnings and errors
included) still reaches stderr. TensorFlow 2.21 writes its start-up notices from C++
before its logging is initialised, ignoring TF_CPP_MIN_LOG_LEVEL (tensorflow#100442),
so `import_tensorflow` captures file descriptor 2 while TensorFlow starts and replays
every line that is not one of those notices.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types
import warnings
from collections.abc import Callable

from absl import logging as absl_logging

# Start-up notices of TensorFlow's C++ runtime on every CPU-only machine.
_TENSORFLOW_NOTICES = re.compile(
    "|".join(
        [
            r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
            r"\] oneDNN custom operations are on\.",
            r"\] Could not find cuda drivers on your machine, GPU will not be used\.",
            r"\] This TensorFlow binary is optimized to use available CPU instructions",
            r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.",
        ]
    )
)
# With no NVIDIA driver on the machine, CUDA's initialisation fails as expected; with one, it is a real error.
_NO_GPU_NOTICE = re.compile(r"\] failed call to cuInit: ")
_TF_DATA_OPTIONS_WARNING = "To make it possible to preserve tf.data options across serialization boundaries"
_BEAM_NOTICE = "apitools not found, and bigquery client libraries are not available"
# Libraries whose INFO lines through absl's logger ("Sharding callback duration", "Writing fingerprint") are dropped;
# their warnings and errors are kept.
_CHATTY_LIBRARIES = ("tensorflow", "keras", "tensorflow_datasets")


def is_out_of_space(error: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain; Beam's runners re-raise a DoFn's error as a RuntimeError holding its text."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or f"[Errno {errno.ENOSPC}]" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _not_beam_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_BEAM_NOTICE)


def _not_reraised_out_of_space(record: logging.LogRecord) -> bool:
    """A worker's full disk reaches the driver as an exception it reports in one line; Beam also logs its
    traceback."""
    return not (record.exc_info and is_out_of_space(record.exc_info[1]))


@functools.cache
def _chatty_library_dirs() -> tuple[str, ...]:
    specs = (importlib.util.find_spec(name) for name in _CHATTY_LIBRARIES)  # Found without importing them.
    return tuple(os.path.join(d, "") for spec in specs if spec for d in spec.submodule_search_locations or ())


def _not_library_info(record: logging.LogRecord) -> bool:
    return record.levelno > logging.INFO or not record.pathname.startswith(_chatty_library_dirs())


def _add_filter(logger: logging.Logger, keep: Callable[[logging.LogRecord], bool]) -> None:
    if keep not in logger.filters:
        logger.addFilter(keep)


def hide_library_noise() -> None:
    """Installs the filters (once); call before Apache Beam is imported (its notice is logged at import)."""
    _add_filter(logging.getLogger(), _not_beam_notice)
    _add_filter(absl_logging.get_absl_logger(), _not_library_info)  # Created by absl: it finds callers' lines.
    for name in ("apache_beam.runners.worker.bundle_processor", "apache_beam.runners.common"):
        _add_filter(logging.getLogger(name), _not_reraised_out_of_space)
    warnings.filterwarnings("ignore", message=re.escape(_TF_DATA_OPTIONS_WARNING), category=UserWarning)


def _is_notice(line: str, has_gpu_driver: bool) -> bool:
    return bool(_TENSORFLOW_NOTICES.search(line) or not has_gpu_driver and _NO_GPU_NOTICE.search(line))


@contextlib.contextmanager
def _stderr_without_notices():
    """Captures fd 2 (C++ writes there directly) and replays every line that is not a known notice."""
    has_gpu_driver = os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _is_notice(line, has_gpu_driver):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_tensorflow() -> types.ModuleType:
    """TensorFlow, imported and its devices listed (the runtime's second round of notices) without the notices."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Once started, the runtime's INFO and WARNING lines.
    with _stderr_without_notices():
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel(logging.WARNING)  # "Using MirroredStrategy ...", "Assets written ...", twice each.
    return tf


def import_tensorflow_datasets() -> types.ModuleType:
    """TFDS (heavy: only the driver's metadata writer needs it), with TensorFlow started quietly first."""
    import_tensorflow()
    import tensorflow_datasets

    return tensorflow_datasets
