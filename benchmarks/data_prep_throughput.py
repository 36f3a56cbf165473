r"""Throughput of the data_prep Beam job against naive loops and the codec's limits; peak RSS at N and 4N.

  .venv/bin/python -m benchmarks.data_prep_throughput --num_images=1000

Rows, on the same generated photo-like JPEGs (shorter side to 256, JPEG q90): (a) the notebook loop with
tf.image ops; (a') the same loop with the job's codec; (b) the Beam job (`driver.build`) in its default and
other local modes, and at rss_scale*N; (c) the codec alone on one core; (d) the codec on every core; (e) the
job's per-image function without Beam. Each run is a fresh process, repeated --repeats times interleaved, the
fastest kept; peak RSS sums the process tree; "steal" is CPU the hypervisor withheld. benchmarks/README.md
explains the rows and holds the latest result.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from absl import app, flags

_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "N: images of the throughput runs (half per class).")
_RSS_SCALE = flags.DEFINE_integer("rss_scale", 4, "The default job also runs on rss_scale*N images; 0 skips it.")
_MODES = flags.DEFINE_list(
    "modes", ["multi_processing", "multi_threading"], "Beam local modes also timed on N images, with a worker per core."
)
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where to generate images and build (default: a temp dir).")
_KEEP = flags.DEFINE_bool("keep", False, "Keep --work_dir's images for the next run (reused when present).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Times each run is repeated (interleaved); the fastest is kept.")

DEFAULT = "default"  # The run with no Beam args: what `runners.pipeline_options` picks.
SAMPLE_INTERVAL_S = 0.05
# Targets of issue 2.
TARGET_VS_NAIVE = 1.5  # (b) >= 1.5 x (a); also shown against (a')
TARGET_VS_LIMIT = 0.6  # (b) >= 60% of cores x (c)
TARGET_RSS_GROWTH = 1.25  # peak RSS at rss_scale*N <= 1.25 x peak RSS at N


@dataclasses.dataclass
class Run:
    name: str
    images: int
    seconds: float
    cpu_seconds: float  # The process tree's CPU time during the timed work.
    peak_rss: int  # Bytes, summed over the process tree.
    other_cores: float  # Cores used by other processes meanwhile, on average.
    steal_cores: float  # Cores the hypervisor withheld from this VM meanwhile, on average.
    steal_factor: float  # (CPU + steal) / CPU over the whole run: its rate had nothing been stolen, estimated.
    detail: dict[str, Any]

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def _image_files(root: str) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "PetImages", "*", "*.jpg")))


def make_images(root: str, count: int) -> None:
    """`count` photo-like JPEGs in root/PetImages/{Cat,Dog}; kept if already there."""
    from data_prep import sample_data

    if len(_image_files(root)) != count:
        shutil.rmtree(root, ignore_errors=True)
        sample_data.write_sample_folder(
            os.path.join(root, "PetImages"), images_per_class=count // 2, include_broken=False
        )


# The timed work, run in a spawned process. Each returns images, seconds, the process's CPU time when
# timing started, and details.


def _labelled_files(input_dir: str) -> list[tuple[str, str, int]]:
    labels = {"Cat": 0, "Dog": 1}
    return [
        (path, relpath, labels[relpath.split(os.sep)[1]])
        for path in _image_files(input_dir)
        for relpath in [os.path.relpath(path, input_dir)]
    ]


def _write_loop(input_dir: str, output_dir: str, to_record: Callable[[str, str, int], bytes]) -> dict[str, Any]:
    """A plain loop writing one TFRecord file, timed: to_record(path, relpath, label) does the per-file work."""
    import tensorflow as tf

    files = _labelled_files(input_dir)
    os.makedirs(output_dir, exist_ok=True)
    cpu_start, start = time.process_time(), time.perf_counter()
    with tf.io.TFRecordWriter(os.path.join(output_dir, "train.tfrecord")) as writer:
        for path, relpath, label in files:
            writer.write(to_record(path, relpath, label))
    return {"images": len(files), "seconds": time.perf_counter() - start, "cpu_start": cpu_start}


def naive_tf_loop(input_dir: str, output_dir: str) -> dict[str, Any]:
    """The notebook way: TensorFlow image ops in a plain loop."""
    import tensorflow as tf

    from data_prep import images, schema

    size = images.ImageOptions().image_size

    def to_record(path: str, relpath: str, label: int) -> bytes:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        height, width = image.shape[:2]
        scale = size / min(height, width)
        resized = tf.image.resize(image, (round(height * scale), round(width * scale)), antialias=True)
        encoded = tf.io.encode_jpeg(tf.cast(tf.round(resized), tf.uint8), quality=90)
        return schema.serialize_example(image=encoded.numpy(), filename=relpath, key=relpath, label=label)

    return _write_loop(input_dir, output_dir, to_record)


def naive_codec_loop(input_dir: str, output_dir: str) -> dict[str, Any]:
    """The notebook loop with the job's codec and keys: what is left of (b)/(a') is the pipeline."""
    import hashlib

    from data_prep import images, schema

    options = images.ImageOptions()

    def to_record(path: str, relpath: str, label: int) -> bytes:
        with open(path, "rb") as f:
            data = f.read()
        encoded = images.encode(images.decode(data, options).image, options)
        return schema.serialize_example(
            image=encoded, filename=relpath, key=hashlib.sha256(data).hexdigest(), label=label
        )

    return _write_loop(input_dir, output_dir, to_record)


def _encode_all(blobs: Sequence[bytes]) -> float:
    """Decode+resize+encode of every blob; returns the seconds it took."""
    from data_prep import images

    options = images.ImageOptions()
    start = time.perf_counter()
    for data in blobs:
        images.encode(images.decode(data, options).image, options)
    return time.perf_counter() - start


def _read_blobs(input_dir: str) -> list[bytes]:
    blobs = []
    for path in _image_files(input_dir):
        with open(path, "rb") as f:
            blobs.append(f.read())
    return blobs


def codec_limit(input_dir: str) -> dict[str, Any]:
    """Decode+resize+encode only, bytes already in memory, one core."""
    blobs = _read_blobs(input_dir)
    cpu_start = time.process_time()
    return {"images": len(blobs), "seconds": _encode_all(blobs), "cpu_start": cpu_start}


def codec_all_cores(input_dir: str, cores: int) -> dict[str, Any]:
    """(c) in `cores` forked processes at once, each on its share of the bytes: the machine's parallel ceiling."""
    from data_prep import images  # noqa: F401  Imported once, before the fork.

    blobs = _read_blobs(input_dir)
    shares = [blobs[i::cores] for i in range(cores)]
    with multiprocessing.get_context("fork").Pool(cores) as pool:
        pool.map(_encode_all, [share[:2] for share in shares])  # Workers up and warm before timing.
        cpu_start, start = time.process_time(), time.perf_counter()
        pool.map(_encode_all, shares, chunksize=1)
        seconds = time.perf_counter() - start
    return {"images": len(blobs), "seconds": seconds, "cpu_start": cpu_start}


def per_image_work(input_dir: str) -> dict[str, Any]:
    """`folders.read_file` on each file in turn, one core: the job's per-image work without Beam."""
    from data_prep import folders, images

    options = images.ImageOptions()
    entries = [
        folders.ManifestEntry(path=path, relpath=relpath, label=label)
        for path, relpath, label in _labelled_files(input_dir)
    ]
    cpu_start, start = time.process_time(), time.perf_counter()
    for entry in entries:
        folders.read_file(entry, options)
    return {"images": len(entries), "seconds": time.perf_counter() - start, "cpu_start": cpu_start}


def _beam_args(mode: str) -> tuple[str, ...]:
    if mode == DEFAULT:
        return ()
    return "--runner=FnApiRunner", f"--direct_running_mode={mode}", f"--direct_num_workers={os.cpu_count() or 1}"


def beam_job(input_dir: str, output_dir: str, mode: str) -> dict[str, Any]:
    """The whole build as `python -m data_prep.build` runs it, from listing to commit."""
    import logging
    import resource

    import tensorflow_datasets  # noqa: F401  The metadata writer's; imported once per process, like TF in (a).

    from data_prep import driver, options

    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    shutil.rmtree(output_dir, ignore_errors=True)
    cpu_start, start = time.process_time(), time.perf_counter()
    report = driver.build(
        options.BuildOptions(
            dataset="catsdogs", output_dir=output_dir, input_dir=input_dir, beam_args=tuple(_beam_args(mode))
        )
    )
    seconds = time.perf_counter() - start
    counts = report["counts"]
    if counts["written"] != counts["files_seen"]:
        raise RuntimeError(f"the build wrote {counts['written']} of {counts['files_seen']} images: {counts}")
    # Exact peaks to check the sampled ones. Linux ru_maxrss is in KiB; RUSAGE_CHILDREN's is the largest
    # single reaped descendant (a Beam worker), not a sum.
    return {
        "images": counts["written"],
        "seconds": seconds,
        "cpu_start": cpu_start,
        "driver_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def _child(task: Callable[..., dict], args: tuple, result_path: str, log_path: str) -> None:
    """Runs in the spawned process; its output, and its Beam workers', goes to log_path."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(log_path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    result = task(*args)
    with open(result_path, "w") as f:
        json.dump(result, f)


class _TreeSampler(threading.Thread):
    """RSS and CPU time of a process and its descendants, plus the machine's busy time."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self._root = psutil.Process(pid)
        self._done = threading.Event()
        self._cpu: dict[int, float] = {}
        self.peak_rss = 0
        self.peak_driver_rss = 0  # The run's own process: the Beam driver in job runs.
        self.peak_worker_rss = 0  # Its largest descendant: a Beam worker.
        self._busy_start, self._steal_start = self._machine()

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(CPU seconds the VM's vCPUs ran, CPU seconds stolen from them) since boot, all vCPUs."""
        times = psutil.cpu_times()
        steal = getattr(times, "steal", 0.0)  # Linux only; elsewhere nothing is known to be stolen.
        return sum(times) - times.idle - getattr(times, "iowait", 0.0) - steal, steal

    def _sample(self) -> None:
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += rss
            self._cpu[proc.pid] = cpu.user + cpu.system
            if proc is self._root:
                self.peak_driver_rss = max(self.peak_driver_rss, rss)
            else:
                self.peak_worker_rss = max(self.peak_worker_rss, rss)
        self.peak_rss = max(self.peak_rss, total)

    def run(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def stop(self) -> tuple[float, float, float]:
        """Stops sampling; returns the CPU seconds of the tree, of everybody else, and stolen by the hypervisor."""
        self._done.set()
        self.join()
        ours = sum(self._cpu.values())
        busy, steal = self._machine()
        return ours, max(0.0, busy - self._busy_start - ours), steal - self._steal_start


def measure(name: str, task: Callable[..., dict], args: tuple, scratch: str) -> Run:
    """Runs task(*args) in a fresh spawned process while sampling its process tree."""
    result_path, log_path = os.path.join(scratch, "result.json"), os.path.join(scratch, "run.log")
    process = multiprocessing.get_context("spawn").Process(target=_child, args=(task, args, result_path, log_path))
    start = time.perf_counter()
    process.start()
    sampler = _TreeSampler(process.pid)
    sampler.start()
    process.join()
    wall = time.perf_counter() - start
    tree_cpu, other_cpu, steal = sampler.stop()
    if process.exitcode != 0:
        with open(log_path) as f:
            print("".join(f.readlines()[-40:]))
        raise RuntimeError(f"{name} failed (exit status {process.exitcode}); its output ends above")
    with open(result_path) as f:
        result = json.load(f)
    os.remove(result_path)
    detail = {k: v for k, v in result.items() if k not in ("images", "seconds", "cpu_start")}
    run = Run(
        name=name,
        images=result["images"],
        seconds=result["seconds"],
        cpu_seconds=tree_cpu - result["cpu_start"],
        peak_rss=sampler.peak_rss,
        other_cores=other_cpu / wall,
        steal_cores=steal / wall,
        steal_factor=(tree_cpu + steal) / tree_cpu,
        detail={**detail, "driver_rss": sampler.peak_driver_rss, "worker_rss": sampler.peak_worker_rss},
    )
    print(
        f"  {name}: {run.rate:.1f} images/s ({run.images} in {run.seconds:.1f} s), "
        f"peak RSS {run.peak_rss / 2**20:.0f} MiB, steal {run.steal_cores:.2f} cores",
        flush=True,
    )
    return run


def fastest(runs: Sequence[Run]) -> Run:
    """The fastest repetition, with the largest peak RSS of all (memory is judged on its worst case)."""
    best = min(runs, key=lambda r: r.seconds)
    return dataclasses.replace(best, peak_rss=max(r.peak_rss for r in runs))


def _check(label: str, value: float, target: float, at_least: bool) -> None:
    ok = value >= target if at_least else value <= target
    print(f"{label:<40} = {value:5.2f}   target {'>=' if at_least else '<='} {target:.2f}   {'PASS' if ok else 'FAIL'}")


def print_report(
    runs: dict[str, Run], jobs: Sequence[Run], small: Run, large: Run | None, cores: int, load_before: Sequence[float]
) -> None:
    mib = 2**20
    naive, strict, limit, ceiling, work = runs["a"], runs["a'"], runs["c"], runs["d"], runs["e"]
    strict_column = "vs (a')"
    print()
    print(
        f"{'run':<50}{'images':>7}{'seconds':>9}{'images/s':>10}{'vs (a)':>8}{strict_column:>9}{'CPU ms/img':>12}"
        f"{'peak RSS MiB':>14}{'other cores':>13}{'steal':>7}"
    )
    for run in runs.values():
        print(
            f"{run.name:<50}{run.images:>7}{run.seconds:>9.1f}{run.rate:>10.1f}{run.rate / naive.rate:>8.2f}"
            f"{run.rate / strict.rate:>9.2f}{1000 * run.cpu_seconds / run.images:>12.1f}"
            f"{run.peak_rss / mib:>14.0f}{run.other_cores:>13.2f}{run.steal_cores:>7.2f}"
        )
    print()
    print(
        f"load average before: {' '.join(f'{v:.2f}' for v in load_before)}; "
        f"after: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({cores} cores)"
    )
    print(
        f"{cores} cores give the codec {ceiling.rate / limit.rate:.2f} x one core ((d) / (c)): "
        f"the codec's own ceiling is {ceiling.rate / naive.rate:.2f} x (a), {ceiling.rate / strict.rate:.2f} x (a'), "
        f"{ceiling.rate / (cores * limit.rate):.2f} x ({cores} x (c))"
    )
    per_image = limit.rate / work.rate
    print(
        f"the job's per-image work costs r = (c) / (e) = {per_image:.2f} x the codec: with Beam free and perfect "
        f"overlap (b) <= (d) / r = {ceiling.rate / per_image / (cores * limit.rate):.2f} x ({cores} x (c))"
    )
    # (a) and (c) are per-image loops without start-up costs, so the 4N job is held to their rates on N.
    for job in jobs:
        _check(f"(b) {job.images} / (a)", job.rate / naive.rate, TARGET_VS_NAIVE, at_least=True)
        _check(f"(b) {job.images} / (a')", job.rate / strict.rate, TARGET_VS_NAIVE, at_least=True)
        _check(f"(b) {job.images} / ({cores} x (c))", job.rate / (cores * limit.rate), TARGET_VS_LIMIT, at_least=True)
        print(f"{'  (b) ' + str(job.images) + ' / (d): parallel efficiency':<40} = {job.rate / ceiling.rate:5.2f}")
    unstolen = {run.name: run.rate * run.steal_factor for run in (limit, ceiling, *jobs)}
    print(
        f"had nothing been stolen (estimate): (d) / (c) = {unstolen[ceiling.name] / unstolen[limit.name]:.2f}; "
        + "; ".join(
            f"(b) {job.images} / ({cores} x (c)) = {unstolen[job.name] / (cores * unstolen[limit.name]):.2f}"
            for job in jobs
        )
    )
    if large:
        _check(
            f"peak RSS {large.images} / {small.images}",
            large.peak_rss / small.peak_rss,
            TARGET_RSS_GROWTH,
            at_least=False,
        )
        for label, key in (("driver", "driver"), ("largest worker", "worker")):
            print(
                f"  {label}: {large.detail[f'{key}_rss'] / mib:.0f} vs {small.detail[f'{key}_rss'] / mib:.0f} MiB "
                f"sampled; ru_maxrss {large.detail[f'{key}_maxrss'] / mib:.0f} vs "
                f"{small.detail[f'{key}_maxrss'] / mib:.0f} MiB"
            )


def print_same_round_ratios(rounds: Sequence[dict[str, Run]], cores: int) -> None:
    """The limit ratio within each round: runs minutes apart share the VM's speed of that moment, which the
    fastest-of-rounds table does not guarantee (a short (c) catches a fast minute more easily than a long 4N job)."""
    for key in (DEFAULT, "large"):
        if key in rounds[0]:
            ratios = [r[key].rate / (cores * r["c"].rate) for r in rounds]
            unstolen = [
                ratio * r[key].steal_factor / r["c"].steal_factor for ratio, r in zip(ratios, rounds, strict=True)
            ]
            print(
                f"(b) {rounds[0][key].images} / ({cores} x (c)), same round: "
                f"{' '.join(f'{v:.2f}' for v in ratios)} (median {statistics.median(ratios):.2f}); "
                f"had nothing been stolen: {' '.join(f'{v:.2f}' for v in unstolen)}"
            )
    ceilings = [r["d"].rate * r["e"].rate / r["c"].rate / (cores * r["c"].rate) for r in rounds]
    print(f"ceiling (d) / r of (b) / ({cores} x (c)), same round: {' '.join(f'{v:.2f}' for v in ceilings)}")


def default_layout() -> str:
    """The processes and threads the job picks on this machine with no Beam flags."""
    from data_prep import runners

    beam_options = runners.pipeline_options([])
    return (
        f"{beam_options.get_all_options()['direct_running_mode']}, "
        f"{runners.local_workers(beam_options)} x {runners.decode_threads(beam_options)} threads"
    )


def main(argv: Sequence[str]) -> None:
    del argv
    n, scale = _NUM_IMAGES.value, _RSS_SCALE.value
    if n < 2 or n % 2:
        raise app.UsageError(f"--num_images={n}: must be an even number >= 2 (half per class)")
    work = _WORK_DIR.value or tempfile.mkdtemp(prefix="data_prep_bench_")
    cores = os.cpu_count() or 1
    inputs = {count: os.path.join(work, f"raw_{count}") for count in ((n, scale * n) if scale else (n,))}
    out = os.path.join(work, "out")
    plan = {
        "a": ("(a) naive loop, tf.image ops", naive_tf_loop, (inputs[n], out)),
        "a'": ("(a') naive loop, the job's codec", naive_codec_loop, (inputs[n], out)),
        DEFAULT: (f"(b) Beam job, default: {default_layout()}", beam_job, (inputs[n], out, DEFAULT)),
        **{mode: (f"(b) Beam job, {mode}, {cores} workers", beam_job, (inputs[n], out, mode)) for mode in _MODES.value},
        **(
            {"large": (f"(b) Beam job, default, {scale}N", beam_job, (inputs[scale * n], out, DEFAULT))}
            if scale
            else {}
        ),
        "c": ("(c) codec only, 1 core, in memory", codec_limit, (inputs[n],)),
        "d": (f"(d) codec only, {cores} processes, in memory", codec_all_cores, (inputs[n], cores)),
        "e": ("(e) the job's per-image work, 1 core, no Beam", per_image_work, (inputs[n],)),
    }
    try:
        print(f"generating {' and '.join(map(str, inputs))} images in {work} ...", flush=True)
        for count, path in inputs.items():
            make_images(path, count)
        load_before = os.getloadavg()
        print(
            f"load average {' '.join(f'{v:.2f}' for v in load_before)} ({cores} cores); timing "
            f"{_REPEATS.value} rounds:",
            flush=True,
        )
        rounds = [
            {key: measure(name, task, args, work) for key, (name, task, args) in plan.items()}
            for _ in range(_REPEATS.value)
        ]
        runs = {key: fastest([r[key] for r in rounds]) for key in plan}
        large = runs.get("large")
        jobs = [runs[DEFAULT], *([large] if large else [])]
        print_report(runs, jobs, runs[DEFAULT], large, cores, load_before)
        print_same_round_ratios(rounds, cores)
    finally:
        if _KEEP.value:
            shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
