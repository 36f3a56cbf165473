"""What a user sees: our progress and our errors, not the libraries' start-up notices; `--help` as a success.

Each filter names the exact notice it drops; everything else (real warnings and errors
included) still reaches stderr. TensorFlow 2.21 writes its start-up notices from C++
before its logging is initialised, ignoring TF_CPP_MIN_LOG_LEVEL (tensorflow#100442),
so `import_tensorflow` captures file descriptor 2 while TensorFlow starts and replays
every line that is not one of those notices.

Our own lines go through two loggers: data_prep's modules log under "data_prep" (`logging.getLogger(__name__)`),
the trainer's through absl's logger. On the command line absl's `app.run` shows INFO; the Python API
(data_prep.api, trainer.api) runs under `shown`, which makes them visible in a notebook too.
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
from collections.abc import Callable, Iterator

from absl import app
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
_BEAM_NOTICES = (
    "apitools not found, and bigquery client libraries are not available",
    # RunInference's, per batch, when its optional torch-based model manager fails to import (Beam then drops
    # `resource` too): the memory metric is missing, nothing else.
    "Resource module is not available for current platform",
)
# Libraries whose INFO lines through absl's logger ("Sharding callback duration", "Writing fingerprint") are dropped;
# their warnings and errors are kept.
_CHATTY_LIBRARIES = ("tensorflow", "keras", "tensorflow_datasets")
OUR_LOGGERS = ("data_prep", "absl")
_BEAM_LOGGER = "apache_beam"  # Its INFO lines (one per stage and bundle) would drown the progress lines.


def is_out_of_space(error: BaseException | None) -> bool:
    """ENOSPC anywhere in the chain; Beam's runners re-raise a DoFn's error as a RuntimeError holding its text."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or f"[Errno {errno.ENOSPC}]" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _not_beam_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_BEAM_NOTICES)


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


def _handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of `logger` reaches, as Logger.callHandlers walks them."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current:
        found.extend(current.handlers)
        current = current.parent if current.propagate else None
    return found


class _Fallback(logging.StreamHandler):
    """Prints to stderr, in the format of absl's command lines, what no other handler on the logger's path prints:
    nothing twice, and nothing lost."""

    def __init__(self, logger: logging.Logger):
        super().__init__(sys.stderr)
        self.setFormatter(absl_logging.PythonFormatter())
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        others = [h for h in _handlers(self._logger) if h is not self]
        return not any(record.levelno >= h.level for h in others) and bool(super().filter(record))


def _remove_root_handlers_but(kept: list[logging.Handler]) -> None:
    for handler in [h for h in logging.root.handlers if h not in kept]:
        logging.root.removeHandler(handler)


@contextlib.contextmanager
def shown() -> Iterator[None]:
    """While it lasts, our INFO lines (progress, summaries) and warnings reach stderr, as on the command line.

    Changes only what would hide them, and only until it ends: a logger of OUR_LOGGERS whose level was left unset
    (NOTSET) and that inherits one above INFO gets INFO; where no handler on its path would print an INFO line, a
    fallback handler prints what no other handler does, in absl's format; where there is no handler at all (a fresh
    notebook), the logger also stops propagating, so that the handler Beam's import or absl's first line adds to the
    root logger (logging.basicConfig) does not print our lines a second time or in another format. A level the user
    set on one of our loggers is kept, and under `app.run` (INFO shown by absl's handler) nothing changes, so the
    command lines print each line once. Handlers added to the root logger while it lasts (importing Beam runs
    logging.basicConfig) are removed at its end, so that the root is as the user left it and the next call's lines
    keep their format. Beam's INFO lines stay hidden, as on the command line, unless its level was set.
    """
    with contextlib.ExitStack() as stack:
        stack.callback(_remove_root_handlers_but, list(logging.root.handlers))
        for name in OUR_LOGGERS:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET and not logger.isEnabledFor(logging.INFO):
                logger.setLevel(logging.INFO)
                stack.callback(logger.setLevel, logging.NOTSET)
            handlers = _handlers(logger)
            if not any(h.level <= logging.INFO for h in handlers):
                fallback = _Fallback(logger)
                logger.addHandler(fallback)
                stack.callback(logger.removeHandler, fallback)
            if not handlers:  # Importing Beam and absl's first line run logging.basicConfig: ours keep their format.
                logger.propagate = False
                stack.callback(setattr, logger, "propagate", True)
        beam = logging.getLogger(_BEAM_LOGGER)
        if beam.level == logging.NOTSET:
            beam.setLevel(logging.WARNING)
            stack.callback(beam.setLevel, logging.NOTSET)
        yield


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


# absl's help flags (app.define_help_flags). absl exits 1 after printing the help, as after a usage error.
_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def help_if_asked(argv: list[str]) -> None:
    """A help flag prints absl's help (the __main__ module's docstring, then its flags) and exits 0: asking is not
    an error. The help is given alone, so that any exit 1 can only be absl's after the help."""
    args = argv[1:]
    if "--" in args:
        args = args[: args.index("--")]
    asked = [arg for arg in args if arg in _HELP_FLAGS]
    if asked:
        with contextlib.suppress(SystemExit):
            app.parse_flags_with_usage([argv[0], asked[0]])
        sys.exit(0)


def parse_all_flags(argv: list[str]) -> list[str]:
    """absl's parsing (unknown flags are an error), with `--help` exiting 0: app.run's flags_parser for the commands
    that pass no flags on to Beam (data_prep/cli.py parses those of the Beam jobs)."""
    help_if_asked(argv)
    return app.parse_flags_with_usage(argv)
