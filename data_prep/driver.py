"""One build, end to end, in the driver: resolve the source, run the Beam graph, reconcile, describe, commit.

`build(BuildOptions)` is the entry point; `data_prep.build` is its command line.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import posixpath
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import apache_beam as beam
import fsspec
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from data_prep import (
    augmentation,
    folders,
    images,
    keras_formats,
    keras_pipeline,
    keras_sources,
    logs,
    output,
    pipeline,
    results,
    runners,
    schema,
    smoke,
    splits,
    subsets,
)
from data_prep.options import FOLDER_DATASETS, BuildOptions, UserError

_log = logging.getLogger(__name__)


def check_output(options: OutputSettings) -> None:
    """An existing output without --overwrite fails before the input is listed (which can take minutes on GCS)."""
    try:
        output.check_replaceable(options.output_dir, options.overwrite)
    except output.OutputError as e:
        raise UserError(str(e)) from None


class OutputSettings(Protocol):
    """What a build's output takes, whatever builds it (BuildOptions, ExtractOptions): one name per setting."""

    @property
    def output_dir(self) -> str: ...
    @property
    def overwrite(self) -> bool: ...
    @property
    def shard_size_mb(self) -> float: ...
    @property
    def num_shards(self) -> int: ...
    @property
    def augment_copies(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def stall_timeout_s(self) -> float: ...
    @property
    def imbalance_warning_ratio(self) -> float: ...


@dataclasses.dataclass(frozen=True)
class Source:
    """What differs between builds (a folder, a Keras dataset, a dataset's features): how the examples are read,
    and what the metadata says about them."""

    name: str  # Of the dataset written: the shard file prefix.
    total: int  # Inputs: files, official examples, or records of the dataset read.
    read: Callable[[beam.Pipeline, str], tuple[beam.PCollection, list[beam.PCollection]]]  # (p, work_dir)
    split_spec: splits.SplitSpec
    class_names: Sequence[str]
    metadata: dict[str, Any]  # Source-specific fields of metadata.json.
    policy: schema.AugmentationPolicy  # Recorded for training; the write graph's offline copies use it too.
    image_options: images.ImageOptions | None = None  # Image datasets: how images are stored.
    features: schema.FeatureSpec | None = None  # Feature datasets: how features were made.
    write_copies: bool = True  # Whether the write graph makes the offline augmented copies (image datasets).
    coarse_class_names: Sequence[str] | None = None
    input_bytes: int | None = None  # Size of the raw input, where known: bounds the space a build needs.
    fixed_splits: bool = False  # Every example's split came with it (split folders), none from split_spec's hash.
    max_examples_per_split: int | None = None  # A smoke build's cap, recorded so nobody trains on it unknowingly.


def run(source: Source, options: OutputSettings, beam_options: PipelineOptions) -> dict[str, Any]:
    """Writes `source` as a dataset at options.output_dir: runs the job, reconciles, describes, commits; the report."""
    try:
        target = output.AtomicOutput(options.output_dir, options.overwrite)
    except output.OutputError as e:
        raise UserError(str(e)) from None
    work_dir = posixpath.join(target.temp_url, "_work")
    try:
        write_options = pipeline.WriteOptions(
            output_dir=target.temp_url,
            work_dir=work_dir,
            name=source.name,
            split_spec=source.split_spec,
            image_options=source.image_options,
            shard_size_bytes=int(options.shard_size_mb * 2**20),
            num_shards=options.num_shards,
            augment_copies=options.augment_copies if source.write_copies else 0,
            seed=options.seed,
            policy=source.policy,
        )
        watcher = runners.JobWatcher(work_dir, target.temp_url, source.total)
        watcher.start()
        try:
            p = beam.Pipeline(options=beam_options)
            examples, problems = source.read(p, work_dir)
            _ = examples | "Write" >> pipeline.WriteDataset(write_options, problems)
            result = p.run()  # Local runners return when the job is done, the others once it is submitted.
            runners.wait_for_job(result, watcher, beam_options.view_as(StandardOptions).runner, options.stall_timeout_s)
        finally:
            watcher.stop()
        outcome = results.read_results(work_dir)
        report = results.build_report(outcome, files_seen=source.total)
        if source.split_spec.per_class:
            report["per_class"] = subsets.check_selection(
                source.split_spec, source.class_names, outcome.selections, source.fixed_splits
            )
        check_counters(result, report["counts"])
        target.fs.rm(work_dir, recursive=True)
        results.complete_empty_shards(outcome, target.temp_url, source.name)
        metadata = _metadata(source, options, outcome)
        output.write_metadata(target.temp_url, metadata)
        report["splits"] = metadata.split_sizes
        report.update(results.class_report(outcome, source.class_names, options.imbalance_warning_ratio))
        schema.write_json(posixpath.join(target.temp_url, schema.REPORT_FILE), report)
        target.commit()
    except BaseException as e:
        full = out_of_space_message(e, options.output_dir, target.temp_url, source.input_bytes)
        target.abort()
        if full:
            raise UserError(full) from None
        raise
    log_summary(options.output_dir, report)
    if source.max_examples_per_split:
        _log.warning(
            "%s is a smoke build: at most %d examples per split (--max_examples_per_split, recorded in %s).",
            options.output_dir,
            source.max_examples_per_split,
            schema.METADATA_FILE,
        )
    return report


def _metadata(source: Source, options: OutputSettings, outcome: results.Results) -> schema.DatasetMetadata:
    image = source.image_options
    return schema.DatasetMetadata(
        dataset=source.name,
        class_names=tuple(source.class_names),
        image=schema.ImageSpec(
            format=image.image_format,
            channels=image.channels,
            resize_policy=image.resize_policy,
            image_size=image.image_size,
            jpeg_quality=image.jpeg_quality,
        )
        if image
        else None,
        features=source.features,
        splits=results.split_infos(outcome, len(source.class_names)),
        augmentation=source.policy,
        statistics=schema.Statistics.from_dict(outcome.statistics) if outcome.statistics else None,
        source=source.metadata,
        build=schema.BuildSettings(
            augment_copies=options.augment_copies,
            seed=options.seed,
            max_pixels=image.max_pixels if image else 0,
            max_examples_per_split=source.max_examples_per_split,
        ),
        versions=schema.library_versions(),
        coarse_class_names=tuple(source.coarse_class_names) if source.coarse_class_names else None,
    )


def out_of_space_message(error: BaseException, output_dir: str, temp_url: str, input_bytes: int | None) -> str | None:
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
    return (
        f"no space left on the device holding --output_dir={output_dir}: a build needs room beside it for its "
        f"spill files and then the shards, about twice the size of the stored images{bound}{written}. Free "
        "space there or choose another --output_dir; the partial build was removed."
    )


def _size(num_bytes: float) -> str:
    """Decimal units, as `df -H` shows them."""
    units = ("bytes", "KB", "MB", "GB", "TB")
    exponent = min(int(math.log10(max(num_bytes, 1)) // 3), len(units) - 1)
    return f"{num_bytes / 1000**exponent:.{1 if exponent else 0}f} {units[exponent]}"


def build(options: BuildOptions) -> dict[str, Any]:
    """Builds the dataset `options` describe; returns the report. Raises UserError on bad input before any work."""
    beam_options = runners.pipeline_options(options.beam_args)
    policy = augmentation.policy_for(options.dataset, options.augmentation)
    check_output(options)
    read_source = _folder_source if options.dataset in FOLDER_DATASETS else _keras_source
    return run(read_source(options, beam_options, policy), options, beam_options)


def _folder_source(options: BuildOptions, beam_options: PipelineOptions, policy: schema.AugmentationPolicy) -> Source:
    """A raw image folder, listed and labelled in the driver."""
    threads = runners.decode_threads(beam_options, options.decode_threads)
    assert options.input_dir, "BuildOptions requires an input_dir for folder datasets"
    split_spec = options.split_spec
    try:
        listing = folders.list_input(options.input_dir, options.dataset, options.layout, options.class_names)
    except ValueError as e:  # folders.LayoutError among them.
        raise UserError(str(e)) from None
    fixed_splits = listing.layout == "split_folders"
    if split_spec.per_class:
        labelled = [(e.split, e.label) for e in listing.entries if e.label is not None]
        if fixed_splits:
            subsets.check_fixed_splits(split_spec, (split for split, _ in labelled if split))
        subsets.check_listed(split_spec, listing.class_names, labelled)
    _log.info(
        "%s: %d files, layout %s, classes %s",
        options.input_dir,
        len(listing.entries),
        listing.layout,
        list(listing.class_names),
    )

    def read(p: beam.Pipeline, work_dir: str):
        manifest = posixpath.join(work_dir, "manifest.jsonl")
        folders.write_manifest(listing, manifest)
        n = options.max_examples_per_split
        read_folder = (
            smoke.ReadFolderSmoke(manifest, options.image, work_dir, threads, n, split_spec)
            if n
            else folders.ReadFolder(manifest, options.image, work_dir, threads)
        )
        examples, *problems = p | "ReadFolder" >> read_folder
        return examples, problems

    return Source(
        name=options.dataset_name,
        policy=policy,
        total=len(listing.entries),
        read=read,
        split_spec=split_spec,
        image_options=options.image,
        class_names=listing.class_names,
        input_bytes=listing.num_bytes,
        fixed_splits=fixed_splits,
        max_examples_per_split=options.max_examples_per_split,
        metadata={
            "kind": options.dataset,
            "input": options.input_dir,
            "layout": listing.layout,
            "split": _split_source(options.split, fixed_splits, bool(split_spec.per_class)),
        },
    )


def _split_source(split: str, fixed: bool, per_class: bool) -> str:
    """metadata.json's account of where the splits came from."""
    if not fixed:
        return split
    return f"from folders, {split} within each" if per_class else "from folders"


def _keras_source(options: BuildOptions, beam_options: PipelineOptions, policy: schema.AugmentationPolicy) -> Source:
    """MNIST, Fashion-MNIST or CIFAR-10/100 from a local copy or Keras's cache, checked in the driver."""
    del beam_options  # Every Keras build reads chunks on one decode thread per worker.
    try:
        source = keras_sources.resolve_source(options.dataset, options.input)
        num_train = source.num_examples("train")
        validation = keras_pipeline.carve_validation(
            options.dataset, num_train, keras_pipeline.parse_validation_size(options.validation_size, num_train)
        )
        chunks = keras_sources.plan_chunks(source)
        first_image = next(keras_sources.read_chunk(source, chunks[0]))[1]
    except (ValueError, OSError, keras_formats.MalformedSourceError) as e:
        raise UserError(str(e)) from None
    if source.official is False:
        _log.warning("%s differs from the official file (sha256 recorded in metadata.json).", source.path)
    image_options = images.ImageOptions(resize_policy="none", image_format="png", channels=first_image.shape[-1])

    def read(p: beam.Pipeline, work_dir: str):
        return p | "ReadKeras" >> keras_pipeline.ReadKeras(source, image_options, validation, work_dir, chunks), []

    return Source(
        name=options.dataset_name,
        policy=policy,
        total=sum(source.num_examples(split) for split in ("train", "test")),
        read=read,
        split_spec=splits.SplitSpec((("train", 100.0),)),
        image_options=image_options,
        class_names=source.class_names,
        coarse_class_names=source.coarse_class_names,
        metadata={
            "kind": options.dataset,
            **source.to_metadata(),
            "validation_size": len(validation),
            "validation_from": "train",
        },
    )


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
    totals: collections.Counter[str] = collections.Counter()
    for counter in found:  # One entry per step that increments it; attempted where a runner commits none.
        totals[counter.key.metric.name] += counter.attempted if counter.committed is None else counter.committed
    expected = {
        "files_seen": counts["files_seen"],
        "written": counts["written"] + counts["augmented_copies"],
        "augmented": counts["augmented_copies"],
        **{kind: counts[kind] for kind in ("rejected", "duplicates", "skipped", "not_selected")},
    }
    got = {name: totals[name] for name in expected}
    if got == expected:
        _log.info("Beam counters agree with the report: %s", ", ".join(f"{k}={v}" for k, v in got.items()))
    else:
        _log.warning("Beam counters %s differ from the report's counts %s", got, expected)
    return got


def log_summary(output_dir: str, report: dict[str, Any]) -> None:
    counts = report["counts"]
    _log.info("built %s: %s", output_dir, ", ".join(f"{k}={v}" for k, v in counts.items()))
    _log.info("splits: %s", ", ".join(f"{k}={v}" for k, v in report["splits"].items()))
    if "per_class" in report:
        _log.info(
            "selected per class, of those available: %s",
            "; ".join(
                f"{split} " + ", ".join(f"{name} {row['selected']} of {row['available']}" for name, row in rows.items())
                for split, rows in report["per_class"].items()
            ),
        )
    for split, counts in report["class_counts"].items():
        _log.info("%s per class: %s", split, _class_counts(counts, report["augmented_copies_per_class"].get(split)))
    for item in report["class_imbalance"]:
        _log.warning(
            "class imbalance in %s: %r has %d examples, %r %d (%s; --imbalance_warning_ratio sets the threshold, 0 "
            "turns this off)",
            item["split"],
            item["largest"],
            item["largest_count"],
            item["smallest"],
            item["smallest_count"],
            f"{item['ratio']:.2f}x" if item["ratio"] else "a class missing",
        )
    for item in report["rejected"][:20]:
        _log.info("rejected %s: %s", item["path"], item["reason"])
    if len(report["rejected"]) > 20:
        _log.info("... %d more rejected files in %s", len(report["rejected"]) - 20, schema.REPORT_FILE)


LOGGED_CLASSES = 10  # Beyond this a split's log line gives its smallest and largest class; the report has them all.


def _class_counts(counts: dict[str, int], copies: dict[str, int] | None) -> str:
    """`cat=118, dog=120` (copies: `cat=354 (236 augmented copies)`), or the range for many classes."""

    def count(name: str) -> str:
        return f"{name}={counts[name]}" + (f" ({copies[name]} augmented copies)" if copies else "")

    if len(counts) <= LOGGED_CLASSES:
        return ", ".join(count(name) for name in counts)
    smallest, largest = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    return f"{len(counts)} classes, smallest {count(smallest)}, largest {count(largest)}"
