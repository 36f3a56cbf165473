"""Runs one build in the driver: resolve the input, run the Beam graph, check, describe, commit.

`data_prep.build` is its command line; tests and other programs call these functions.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import posixpath
import threading
import time
from typing import Any, Callable, Sequence

import apache_beam as beam
import fsspec
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import create_runner

from data_prep import augmentation, folders, images, keras_formats, keras_pipeline, keras_sources, logs, output
from data_prep import pipeline, progress, results, schema, splits

FOLDER_DATASETS = ("catsdogs", "imagefolder")
DATASETS = FOLDER_DATASETS + keras_sources.DATASETS
PROGRESS_INTERVAL_S = 10.0
# A job that processes no file and begins no shard for this long is cancelled: several times Dataflow's worker start-up
# (3-5 min, a few more when --setup_file pip-installs TensorFlow), and under the hour after which Dataflow itself fails
# a job with no worker activity. Once started, a healthy job shows work every few seconds to minutes.
STALL_TIMEOUT_S = 1800.0


class UserError(Exception):
    """Bad flags or input: printed as one line, exit status 1."""


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """What every build takes, whatever its source."""

    output_dir: str
    overwrite: bool = False
    name: str | None = None
    shard_size_mb: float = 128
    num_shards: int = 0
    policy: schema.AugmentationPolicy | None = None  # None: the dataset's default.
    augment_copies: int = 0
    seed: int = 0
    beam_args: Sequence[str] = ()
    stall_timeout_s: float = STALL_TIMEOUT_S  # 0: wait for the job however long it shows no work.


LOCAL_RUNNERS = ("FnApiRunner", "SwitchingDirectRunner")  # Runner classes, as Beam resolves --runner.
# Busy decode threads one process runs well: its decode path holds the GIL ~30% of the time (Pillow's JPEG encoder,
# statistics, Beam's per-element work), so more threads would queue for it. Bigger machines get a worker per 2 cores.
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


def check_output(common: CommonOptions) -> None:
    """An existing output without --overwrite fails before the input is listed (which can take minutes on GCS)."""
    try:
        output.check_replaceable(common.output_dir, common.overwrite)
    except output.OutputError as e:
        raise UserError(str(e)) from None


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


_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def augmentation_policy(dataset: str, overrides: Sequence[str]) -> schema.AugmentationPolicy:
    """The dataset's default policy with `name=value` overrides (`--augmentation`)."""
    default = augmentation.DEFAULT_POLICIES[dataset]
    names = [f.name for f in dataclasses.fields(default)]
    values: dict[str, Any] = {}
    for item in overrides:
        name, _, text = item.partition("=")
        if name not in names:
            raise UserError(f"--augmentation={item}: expected name=value with a name of {names}")
        if isinstance(getattr(default, name), bool):
            if text.lower() not in _BOOLEANS:
                raise UserError(f"--augmentation={item}: expected true or false")
            values[name] = _BOOLEANS[text.lower()]
        else:
            try:
                values[name] = float(text)
            except ValueError:
                raise UserError(f"--augmentation={item}: expected a number") from None
    try:
        return default.replace(**values)
    except ValueError as e:
        raise UserError(f"--augmentation: {e}") from None


class _ProgressLogger(threading.Thread):
    """Logs done/total and the rate every PROGRESS_INTERVAL_S while the pipeline runs, and notes when it last saw
    the job do work (a file processed, a shard begun), which tells a stalled job from a slow one."""

    def __init__(self, work_dir: str, output_dir: str, total: int):
        super().__init__(daemon=True)
        self._work_dir, self._output_dir, self.total = work_dir, output_dir, total
        self._stopped = threading.Event()  # Not `_stop`: threading.Thread._stop is called on every fork.
        self.done = 0
        self._work = (0, 0)  # (files processed, shard files begun)
        self._seen = (-math.inf, -math.inf)  # (last look, last change), time.monotonic(): one tuple, read atomically.

    def run(self):
        start = time.monotonic()
        while not self._stopped.wait(PROGRESS_INTERVAL_S):
            self.done = progress.read_progress(self._work_dir)
            rate = self.done / (time.monotonic() - start)
            logging.info("progress: %d / %d files (%.0f%%), %.1f files/s", self.done, self.total,
                         100 * self.done / max(self.total, 1), rate)
            work, now = (self.done, progress.count_shard_files(self._output_dir)), time.monotonic()
            self._seen = (now, now if work != self._work else self._seen[1])
            self._work = work

    def idle_s(self, since: float) -> float:
        """How long the job was seen doing no work, counting from `since` at the earliest; never more than seen."""
        looked, changed = self._seen
        return looked - max(since, changed)

    def stop(self):
        self._stopped.set()


class JobStalled(UserError):
    """The job did no work for --stall_timeout_s: its workers died, hang, or cannot start."""


def _wait_for_job(result: beam.runners.runner.PipelineResult, watcher: _ProgressLogger, runner_name: str,
                  stall_timeout_s: float) -> None:
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
                logging.warning("could not cancel the stalled job: %s", e)
            raise JobStalled(
                f"--runner={runner_name}: no file processed and no shard begun for {idle:.0f} s (--stall_timeout_s="
                f"{stall_timeout_s:g}; {watcher.done} / {watcher.total} files done), job cancelled; check that its "
                f"workers are alive and that their Python has apache_beam and data_prep installed (a worker pool "
                f"starts `python` from its PATH)")
    if failures:
        raise failures[0]


@dataclasses.dataclass(frozen=True)
class _Source:
    """What differs between a folder build and a Keras build."""

    dataset: str
    total: int  # Inputs: files, or official examples.
    read: Callable[[beam.Pipeline, str], tuple[beam.PCollection, list[beam.PCollection]]]  # (p, work_dir)
    split_spec: splits.SplitSpec
    image_options: images.ImageOptions
    class_names: Sequence[str]
    metadata: dict[str, Any]  # Source-specific fields of metadata.json.
    coarse_class_names: Sequence[str] | None = None
    input_bytes: int | None = None  # Size of the raw input, where known: bounds the space a build needs.


def _run(source: _Source, common: CommonOptions) -> dict[str, Any]:
    name = common.name or source.dataset
    policy = common.policy or augmentation.DEFAULT_POLICIES[source.dataset]
    options = pipeline_options(common.beam_args)
    try:
        target = output.AtomicOutput(common.output_dir, common.overwrite)
    except output.OutputError as e:
        raise UserError(str(e)) from None
    work_dir = posixpath.join(target.temp_url, "_work")
    try:
        write_options = pipeline.WriteOptions(
            output_dir=target.temp_url, work_dir=work_dir, name=name, split_spec=source.split_spec,
            image_options=source.image_options, shard_size_bytes=int(common.shard_size_mb * 2**20),
            fixed_num_shards=common.num_shards, augment_copies=common.augment_copies, augment_seed=common.seed,
            policy=policy)
        watcher = _ProgressLogger(work_dir, target.temp_url, source.total)
        watcher.start()
        try:
            p = beam.Pipeline(options=options)
            examples, problems = source.read(p, work_dir)
            _ = examples | "Write" >> pipeline.WriteDataset(write_options, problems)
            result = p.run()  # Local runners return when the job is done, the others once it is submitted.
            _wait_for_job(result, watcher, options.view_as(StandardOptions).runner, common.stall_timeout_s)
        finally:
            watcher.stop()
        outcome = results.read_results(work_dir)
        report = results.build_report(outcome, files_seen=source.total)
        check_counters(result, report["counts"])
        target.fs.rm(work_dir, recursive=True)
        results.complete_empty_shards(outcome, target.temp_url, name)
        image = source.image_options
        metadata = schema.DatasetMetadata(
            dataset=name, class_names=tuple(source.class_names),
            image=schema.ImageSpec(format=image.image_format, channels=image.channels,
                                   resize_policy=image.resize_policy, image_size=image.image_size,
                                   jpeg_quality=image.jpeg_quality),
            splits=results.split_infos(outcome), augmentation=policy,
            statistics=schema.Statistics.from_dict(outcome.statistics) if outcome.statistics else None,
            source=source.metadata,
            build=schema.BuildSettings(augment_copies=common.augment_copies, seed=common.seed,
                                       max_pixels=image.max_pixels),
            coarse_class_names=tuple(source.coarse_class_names) if source.coarse_class_names else None)
        output.write_metadata(target.temp_url, metadata)
        report["splits"] = metadata.split_sizes
        schema.write_json(posixpath.join(target.temp_url, schema.REPORT_FILE), report)
        target.commit()
    except BaseException as e:
        full = out_of_space_message(e, common.output_dir, target.temp_url, source.input_bytes)
        target.abort()
        if full:
            raise UserError(full) from None
        raise
    log_summary(common.output_dir, report)
    return report


def out_of_space_message(error: BaseException, output_dir: str, temp_url: str,
                         input_bytes: int | None) -> str | None:
    """One line for a full disk: where, and about how much room the build needs; None for any other error.

    A build holds its spill files (every stored image) and then the shards (the same bytes again) beside
    --output_dir, so it needs about twice the stored images; resized photos store smaller than their files.
    """
    if not logs.is_out_of_space(error):
        return None
    fs, path = fsspec.core.url_to_fs(temp_url)
    try:
        written = f"; it had written {_size(fs.du(path))} when the disk filled"
    except OSError:
        written = ""
    bound = f", at most about {_size(2 * input_bytes)} for this input" if input_bytes else ""
    return (f"no space left on the device holding --output_dir={output_dir}: a build needs room beside it for its "
            f"spill files and then the shards, about twice the size of the stored images{bound}{written}. Free "
            "space there or choose another --output_dir; the partial build was removed.")


def _size(num_bytes: float) -> str:
    """Decimal units, as `df -H` shows them."""
    units = ("bytes", "KB", "MB", "GB", "TB")
    exponent = min(int(math.log10(max(num_bytes, 1)) // 3), len(units) - 1)
    return f"{num_bytes / 1000 ** exponent:.{1 if exponent else 0}f} {units[exponent]}"


def build_folder_dataset(dataset: str, input_dir: str, common: CommonOptions, *, layout: str = "auto",
                         class_names: Sequence[str] | None = None, split: str = "train:80,validation:10,test:10",
                         image_options: images.ImageOptions = images.ImageOptions(),
                         threads: int = 0) -> dict[str, Any]:
    """Builds a raw image folder; returns the report. Raises UserError on bad input before any work.

    `threads`: files decoded at once per worker (`decode_threads`; 0 picks it from the runner).
    """
    threads = decode_threads(pipeline_options(common.beam_args), threads)
    check_output(common)
    try:
        split_spec = splits.SplitSpec.parse(split)
        listing = folders.list_input(input_dir, dataset, layout, class_names)
    except (ValueError, folders.LayoutError) as e:
        raise UserError(str(e)) from None
    logging.info("%s: %d files, layout %s, classes %s", input_dir, len(listing.entries), listing.layout,
                 list(listing.class_names))

    def read(p: beam.Pipeline, work_dir: str):
        manifest = posixpath.join(work_dir, "manifest.jsonl")
        folders.write_manifest(listing, manifest)
        decoded = p | "ReadFolder" >> folders.ReadFolder(manifest, image_options, work_dir, threads)
        return decoded.examples, [decoded[results.REJECTED], decoded[results.SKIPPED], decoded[results.WARNING]]

    return _run(_Source(
        dataset=dataset, total=len(listing.entries), read=read, split_spec=split_spec, image_options=image_options,
        class_names=listing.class_names, input_bytes=listing.num_bytes,
        metadata={"kind": dataset, "input": input_dir, "layout": listing.layout,
                  "split": "from folders" if listing.layout == "split_folders" else split}), common)


def build_keras_dataset(dataset: str, common: CommonOptions, *, input_path: str | None = None,
                        validation_size: str = "5000", chunk_size: int = 5000) -> dict[str, Any]:
    """Builds MNIST, Fashion-MNIST or CIFAR-10/100 from a local copy or Keras's cache; returns the report."""
    pipeline_options(common.beam_args)
    check_output(common)
    try:
        source = keras_sources.resolve_source(dataset, input_path)
        num_train = source.num_examples("train")
        validation = keras_pipeline.carve_validation(
            dataset, num_train, keras_pipeline.parse_validation_size(validation_size, num_train))
        chunks = keras_sources.plan_chunks(source, chunk_size)
        first_image = next(keras_sources.read_chunk(source, chunks[0]))[1]
    except (ValueError, OSError, keras_formats.MalformedSourceError) as e:
        raise UserError(str(e)) from None
    if source.official is False:
        logging.warning("%s differs from the official file (sha256 recorded in metadata.json).", source.path)
    image_options = images.ImageOptions(resize_policy="none", image_format="png", channels=first_image.shape[-1])
    total = sum(source.num_examples(split) for split in ("train", "test"))

    def read(p: beam.Pipeline, work_dir: str):
        return p | "ReadKeras" >> keras_pipeline.ReadKeras(source, image_options, validation, work_dir, chunk_size), []

    return _run(_Source(
        dataset=dataset, total=total, read=read, split_spec=splits.SplitSpec((("train", 100.0),)),
        image_options=image_options, class_names=source.class_names,
        coarse_class_names=source.coarse_class_names,
        metadata={"kind": dataset, **source.to_metadata(), "validation_size": len(validation),
                  "validation_from": "train"}), common)


def check_counters(result: beam.runners.runner.PipelineResult, counts: dict[str, int]) -> dict[str, int]:
    """Beam's counters (committed, else attempted) against the report's counts; returns them ({} if none kept).

    The report, built from the results the job wrote, is the authority; a counter that disagrees is logged,
    since a runner's metrics are best-effort. A disagreement on a local run is a bug.
    """
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(results.METRICS_NAMESPACE))["counters"]
    except NotImplementedError:
        return {}
    if not found:
        return {}
    totals = collections.Counter()
    for counter in found:  # One entry per step that increments it; attempted where a runner commits none.
        totals[counter.key.metric.name] += counter.attempted if counter.committed is None else counter.committed
    expected = {"files_seen": counts["files_seen"], "written": counts["written"] + counts["augmented_copies"],
                "augmented": counts["augmented_copies"],
                **{kind: counts[kind] for kind in ("rejected", "duplicates", "skipped")}}
    got = {name: totals[name] for name in expected}
    if got == expected:
        logging.info("Beam counters agree with the report: %s", ", ".join(f"{k}={v}" for k, v in got.items()))
    else:
        logging.warning("Beam counters %s differ from the report's counts %s", got, expected)
    return got


def log_summary(output_dir: str, report: dict[str, Any]) -> None:
    counts = report["counts"]
    logging.info("built %s: %s", output_dir, ", ".join(f"{k}={v}" for k, v in counts.items()))
    logging.info("splits: %s", ", ".join(f"{k}={v}" for k, v in report["splits"].items()))
    for item in report["rejected"][:20]:
        logging.info("rejected %s: %s", item["path"], item["reason"])
    if len(report["rejected"]) > 20:
        logging.info("... %d more rejected files in %s", len(report["rejected"]) - 20, schema.REPORT_FILE)
