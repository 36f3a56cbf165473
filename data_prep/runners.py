"""How a build's job runs on a Beam runner: options checked and given the fast local defaults, and the job
waited for with its progress logged and a bound on how long it may show no work."""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import apache_beam as beam
import tqdm
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import create_runner

from data_prep import display, progress
from data_prep.options import UserError

_log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 10.0  # Between progress lines; also how often a stall is checked.
BAR_INTERVAL_S = 2.0  # Between redraws of a bar (workers write their counts every progress.Progress.INTERVAL_S).
# Workers' counts are up to progress.Progress.INTERVAL_S old: an ETA from the first seconds of work was off by hours.
ETA_AFTER_S = 2 * progress.Progress.INTERVAL_S


LOCAL_RUNNERS = ("FnApiRunner", "SwitchingDirectRunner")  # Runner classes, as Beam resolves --runner.
# Busy decode threads one process runs well: its decode path holds the GIL part of the time (Pillow's JPEG encoder,
# statistics, Beam's per-element work), so more threads would queue for it (BUILD_NOTES.md, Local runner). Bigger
# machines get a worker per 2 cores.
THREADS_PER_PROCESS = 2


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the leftover flags; local defaults are the fast ones. Unknown flags are errors.

    With no flags the job runs on Beam's FnApiRunner: in this one process (in_memory) on up to THREADS_PER_PROCESS
    cores, else a `multi_processing` worker per THREADS_PER_PROCESS cores; each process decodes on `decode_threads`.
    In-process there is no worker start-up and no data plane between processes. BUILD_NOTES.md has the measurements.
    """
    args = list(beam_args)

    def given(name: str) -> bool:
        return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)

    if not given("runner"):
        args.append("--runner=FnApiRunner")
    options = PipelineOptions(args)
    kind = runner_class(options)
    known = options.get_all_options()
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        raise UserError(f"unknown flag(s): {', '.join('--' + u for u in unknown)} (see --help)")
    if kind == "DataflowRunner":
        check_dataflow_options(known)
    if kind in LOCAL_RUNNERS:
        direct = options.view_as(DirectOptions)
        cores = os.cpu_count() or 1
        if not given("direct_running_mode"):
            if not given("direct_num_workers"):
                direct.direct_num_workers = math.ceil(cores / THREADS_PER_PROCESS)
            direct.direct_running_mode = "in_memory" if direct.direct_num_workers == 1 else "multi_processing"
        elif direct.direct_running_mode != "in_memory" and not given("direct_num_workers"):
            direct.direct_num_workers = cores  # A mode asked for by name: a worker per core.
    return options


def runner_class(options: PipelineOptions) -> str:
    """The class name of the --runner, as Beam's own create_runner resolves it (`dataflow`, `DataflowRunner` and the
    full module path are one runner). Importing its module first registers the options some runners define only on
    import (DaskRunner's --dask_client_address), so they are known before unknown flags are checked."""
    name = options.view_as(StandardOptions).runner
    try:
        return type(create_runner(name)).__name__  # Builds a runner that is dropped (cheap for all of Beam's).
    except Exception as e:  # A module that is missing or fails to import, or a name Beam does not know.
        message = " ".join(str(e).split())
        raise UserError(f"--runner={name}: cannot load this runner: {type(e).__name__}: {message}") from None


def local_workers(options: PipelineOptions) -> int:
    """The workers (processes, or threads in multi_threading) a local runner starts with these options."""
    known = options.get_all_options()
    if known["direct_running_mode"] == "in_memory":
        return 1
    return known["direct_num_workers"] or os.cpu_count() or 1  # 0 is Beam's "a worker per core".


def decode_threads(options: PipelineOptions, requested: int = 0) -> int:
    """Files each worker decodes at once: `requested`, or the local cores shared out among the local workers.

    Other runners already run a worker per core (Dataflow: one SDK process per vCPU), so they get one thread.
    """
    if requested > 0:
        return requested
    if runner_class(options) not in LOCAL_RUNNERS:
        return 1
    return math.ceil((os.cpu_count() or 1) / local_workers(options))


def check_dataflow_options(options: dict[str, Any]) -> None:
    """What a Dataflow job needs, checked offline before anything is staged (Beam's validator calls GCS)."""
    missing = [f"--{name}" for name in ("project", "region", "temp_location") if not options.get(name)]
    if not any(options.get(name) for name in ("setup_file", "sdk_container_image")):  # A requirements file would
        missing.append("--setup_file=./setup.py (or --sdk_container_image)")  # install the deps but not data_prep.
    if missing:
        raise UserError(f"--runner={options['runner']} needs {', '.join(missing)}; see BUILD_NOTES.md, Dataflow")
    if not options["temp_location"].startswith("gs://"):
        raise UserError(f"--temp_location={options['temp_location']}: Dataflow needs a gs:// path")
    if options.get("setup_file") and not os.path.isfile(options["setup_file"]):
        raise UserError(f"--setup_file={options['setup_file']} not found: run from the repository root")


class JobWatcher(threading.Thread):
    """Shows done/total, the rate and the ETA while the pipeline runs: a bar redrawn every BAR_INTERVAL_S where
    `stream` (stderr) shows one live (a terminal, a notebook), else a log line every PROGRESS_INTERVAL_S. Notes when
    it last saw the job do work (a file processed, a shard begun), which tells a stalled job from a slow one."""

    def __init__(
        self,
        work_dir: str,
        output_dir: str,
        total: int,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__(daemon=True)
        self._work_dir, self._output_dir, self.total, self._clock = work_dir, output_dir, total, clock
        self._stream = sys.stderr if stream is None else stream
        self._stopped = threading.Event()  # Not `_stop`: threading.Thread._stop is called on every fork.
        self.done = 0
        self._work = (0, 0)  # (files processed, shard files begun)
        self._seen = (-math.inf, -math.inf)  # (last look, last change), time.monotonic(): one tuple, read atomically.
        self._since = clock()  # The last look that saw no file done: the rate and the ETA count from there.
        self._live = display.live(self._stream)
        self._bar: tqdm.tqdm | None = None

    def run(self):
        try:
            while not self._stopped.wait(BAR_INTERVAL_S if self._live else PROGRESS_INTERVAL_S):
                self.look()
        finally:
            if self._bar is not None:
                self._bar.close()

    def look(self) -> None:
        """Reads the work done so far and shows it."""
        self.done, shards = progress.read_progress(self._work_dir), progress.count_shard_files(self._output_dir)
        now = self._clock()
        if not self.done:
            self._since = now  # Workers starting (minutes on Dataflow) would make the rate look low for long.
        seconds = now - self._since
        rate = self.done / max(seconds, 1e-9)
        if self.done >= self.total:
            status = f"{rate:.1f} files/s; {shards} shard files begun"  # What remains: dedupe, shards.
        elif not self.done:
            status = "waiting for the first file"
        elif seconds < ETA_AFTER_S:
            status = f"{rate:.1f} files/s"
        else:
            status = f"{rate:.1f} files/s, ETA {display.eta(self.total - self.done, rate)}"
        if self._live:
            if self._bar is None:
                self._bar = display.bar(self._stream, self.total, "progress")
            self._bar.n = self.done
            self._bar.set_postfix_str(status)  # Redrawn at every look (seconds apart).
        else:
            percent = 100 * self.done / max(self.total, 1)
            _log.info("progress: %d / %d files (%.0f%%), %s", self.done, self.total, percent, status)
        work = (self.done, shards)
        self._seen = (now, now if work != self._work else self._seen[1])
        self._work = work

    def idle_s(self, since: float) -> float:
        """How long the job was seen doing no work, counting from `since` at the earliest; never more than seen."""
        looked, changed = self._seen
        return looked - max(since, changed)

    def stop(self):
        """Stops looking. A bar is cleared first (within a look's time), so the line logged next takes its place."""
        self._stopped.set()
        if self._live and self.is_alive():
            self.join(timeout=PROGRESS_INTERVAL_S)  # Bounded: a look that hangs on a file system must not hang us.


class JobStalled(UserError):
    """The job did no work for --stall_timeout_s: its workers died, hang, or cannot start."""


def wait_for_job(
    result: beam.runners.runner.PipelineResult, watcher: JobWatcher, runner_name: str, stall_timeout_s: float
) -> None:
    """Waits for the job; cancels it and raises JobStalled once it has shown no work for stall_timeout_s (0: never).

    Beam waits forever for an SDK worker that never starts (no Beam in a worker pool's Python) or stops answering
    without closing its connection (BUILD_NOTES.md, Runners). Local runners have finished when `run()` returns.
    """
    finished = threading.Event()
    failures: list[BaseException] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as e:  # Raised again in the driver's thread.
            failures.append(e)
        finally:
            finished.set()

    threading.Thread(target=wait, name="wait_until_finish", daemon=True).start()
    submitted = time.monotonic()
    while not finished.wait(PROGRESS_INTERVAL_S):
        idle = watcher.idle_s(since=submitted)
        if stall_timeout_s and idle > stall_timeout_s and not finished.is_set():
            try:
                result.cancel()
            except Exception as e:  # Best effort: the job service may be gone too; the build fails either way.
                _log.warning("could not cancel the stalled job: %s", e)
            raise JobStalled(
                f"--runner={runner_name}: no file processed and no shard begun for {idle:.0f} s (--stall_timeout_s="
                f"{stall_timeout_s:g}; {watcher.done} / {watcher.total} files done), job cancelled; check that its "
                f"workers are alive and that their Python has apache_beam and data_prep installed (a worker pool "
                f"starts `python` from its PATH)"
            )
    if failures:
        raise failures[0]
