"""End-to-end builds of raw folders: reconciliation, TFDS interop, determinism, splits, atomicity, CLI."""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from conftest import FAST_BEAM_ARGS, assert_report_lists_match_counts, build_folder, jpeg_with_malformed_exif
from folder_files import listed, read_split, write_photos
from PIL import Image

from data_prep import build, cli, driver, folders, images, pipeline, progress, results, runners, schema, spill


def test_report_reconciles_and_lists_every_bad_file(sample_dataset, sample_folder):
    out, report = sample_dataset
    counts = report["counts"]
    every_file = {
        os.path.relpath(os.path.join(directory, name), sample_folder.parent)
        for directory, _, names in os.walk(sample_folder.parent)
        for name in names
    }
    assert counts["files_seen"] == len(every_file)
    assert counts["files_seen"] == counts["written"] + counts["rejected"] + counts["duplicates"] + counts["skipped"]
    assert counts["not_selected"] == 0 and "per_class" not in report  # Percentages select nothing out.
    assert_report_lists_match_counts(report)
    stored = set().union(*(read_split(out, split) for split in report["splits"]))
    assert len(stored) == counts["written"]
    assert stored | listed(report) == every_file and not stored & listed(report)  # Each file written or listed.
    reasons = {item["path"]: item.get("reason", "") for kind in ("rejected", "skipped") for item in report[kind]}
    # The download's loose files beside PetImages/ (the README's command points at their folder).
    assert (
        reasons["CDLA-Permissive-2.0.pdf"] == reasons["readme[1].txt"] == "skipped: outside the data folder PetImages"
    )
    assert "empty file" in reasons["PetImages/Cat/666.jpg"]
    assert "truncated" in reasons["PetImages/Dog/11702.jpg"]
    assert "HTML" in reasons["PetImages/Dog/error_page.jpg"]
    assert "thumbnail" in reasons["PetImages/Cat/Thumbs.db"] and "thumbnail" in reasons["PetImages/Dog/Thumbs.db"]
    assert "macOS" in reasons["PetImages/Dog/.DS_Store"]
    assert report["duplicates"] == [{"path": "PetImages/Cat/copy of 0.jpg", "duplicate_of": "PetImages/Cat/0.jpg"}]
    on_disk = json.loads((out / schema.REPORT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(report))


def test_tfds_reads_every_split_with_exact_counts_and_labels(sample_dataset):
    out, report = sample_dataset
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features[schema.LABEL].names == ["cat", "dog"]
    total = 0
    for split, count in report["splits"].items():
        records = read_split(out, split)
        assert len(records) == count == builder.info.splits[split].num_examples
        for filename, label in records.items():
            assert label == (0 if "/Cat/" in filename else 1)
        total += count
    assert total == report["counts"]["written"]
    kept = {
        "PetImages/Cat/10073.jpg",
        "PetImages/Cat/cmyk.jpg",
        "PetImages/Cat/transparent.PNG",
        "PetImages/Cat/gray scale ünïcode.jpeg",
        "PetImages/Cat/rotated_exif.jpg",
    }
    assert kept <= set().union(*(read_split(out, s) for s in report["splits"])), "odd but valid images are kept"


def test_stored_images_follow_the_size_policy_and_metadata(sample_dataset):
    out, _ = sample_dataset
    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.image.image_size == 64
    builder = tfds.builder_from_directory(str(out))
    for example in tfds.as_numpy(builder.as_dataset(split="train").take(10)):
        assert min(example[schema.IMAGE].shape[:2]) == 64
        assert example[schema.IMAGE].shape[2] == 3
    assert metadata.augmentation.horizontal_flip is True
    stats = metadata.statistics
    assert stats.split == "train"
    assert len(stats.mean) == 3 and all(0 < m < 255 for m in stats.mean)


def test_statistics_match_numpy_on_the_train_split(tmp_path, sample_folder):
    out = tmp_path / "png"
    build_folder(sample_folder.parent, out, image_options=images.ImageOptions(image_size=32, image_format="png"))
    builder = tfds.builder_from_directory(str(out))
    pixels = np.concatenate(
        [ex[schema.IMAGE].reshape(-1, 3).astype(np.float64) for ex in tfds.as_numpy(builder.as_dataset(split="train"))]
    )
    stats = schema.DatasetMetadata.read(str(out)).statistics
    np.testing.assert_allclose(stats.mean, pixels.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats.std, pixels.std(0), atol=1e-4)
    assert stats.min == tuple(pixels.min(0)) and stats.max == tuple(pixels.max(0))
    assert stats.num_pixels == len(pixels)


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train:80,validation:10,test:10", "train:12/class,validation:5/class,test:5/class"])
def test_byte_identical_output_whatever_the_parallelism(tmp_path, sample_folder, monkeypatch, split):
    serial, threaded, parallel = tmp_path / "serial", tmp_path / "threaded", tmp_path / "parallel"
    build_folder(sample_folder.parent, serial, num_shards=3, split=split)
    monkeypatch.setattr(folders, "FILES_PER_BATCH", 5)  # Many batches, each decoded on 3 threads.
    build_folder(sample_folder.parent, threaded, num_shards=3, threads=3, split=split)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # The default there: 2 worker processes of 2 decode threads.
    build_folder(sample_folder.parent, parallel, num_shards=3, threads=0, beam_args=[], split=split)
    names = sorted(os.listdir(serial))
    assert names == sorted(os.listdir(threaded)) == sorted(os.listdir(parallel))
    assert sum(n.startswith("catsdogs-train.tfrecord-") for n in names) == 3
    for name in names:
        assert (serial / name).read_bytes() == (threaded / name).read_bytes() == (parallel / name).read_bytes(), name


def test_records_are_ordered_by_key_hash_within_shards(sample_dataset):
    out, _ = sample_dataset
    for path in schema.DatasetMetadata.read(str(out)).shard_paths(str(out), "train"):
        keys = [
            tf.train.Example.FromString(r.numpy()).features.feature[schema.KEY].bytes_list.value[0].decode()
            for r in tf.data.TFRecordDataset(path)
        ]
        hashes = [pipeline.shard_hash("train", k) for k in keys]
        assert hashes == sorted(hashes)


def test_adding_files_never_moves_existing_ones(tmp_path):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(30)] + [f"Dog/{i}.png" for i in range(30)])
    build_folder(raw, tmp_path / "v1")
    write_photos(raw, [f"Cat/new{i}.png" for i in range(20)], seed=1)
    build_folder(raw, tmp_path / "v2")

    def split_of(dataset):
        return {f: s for s in ("train", "validation", "test") for f in read_split(dataset, s)}

    before, after = split_of(tmp_path / "v1"), split_of(tmp_path / "v2")
    assert len(after) == len(before) + 20
    assert all(after[f] == s for f, s in before.items())
    assert set(before.values()) == {"train", "validation", "test"}


def test_split_percentages_are_configurable(tmp_path):
    raw = tmp_path / "raw"
    write_photos(raw, [f"a/{i}.png" for i in range(100)] + [f"b/{i}.png" for i in range(100)])
    report = build_folder(raw, tmp_path / "out", dataset="imagefolder", split="fit:50,holdout:50")
    assert set(report["splits"]) == {"fit", "holdout"}
    assert 60 < report["splits"]["fit"] < 140


def test_split_folders_are_kept_and_duplicates_never_cross_splits(tmp_path):
    raw = tmp_path / "cats_and_dogs_small"
    write_photos(
        raw,
        [
            "train/cats/cat.1.png",
            "train/dogs/dog.1.png",
            "validation/cats/cat.2.png",
            "test/dogs/dog.3.png",
            "test/cats/cat.4.png",
        ],
    )
    shutil.copy(raw / "train/cats/cat.1.png", raw / "test/cats/cat.1 copy.png")
    report = build_folder(raw, tmp_path / "out")
    assert report["splits"] == {"train": 1, "validation": 1, "test": 3}  # The survivor is the first by path.
    assert report["duplicates"] == [{"path": "train/cats/cat.1.png", "duplicate_of": "test/cats/cat.1 copy.png"}]
    found = {s: set(read_split(tmp_path / "out", s)) for s in report["splits"]}
    assert not (found["train"] & found["test"])


def test_warnings_and_duplicates_of_either_label_are_listed_by_an_in_process_build(tmp_path):
    raw = tmp_path / "raw"
    latin1 = os.fsdecode(b"Cat/caf\xe9.png")  # A file name that is not UTF-8.
    write_photos(raw, ["Cat/a.png", "Cat/b.png", "Dog/c.png"])
    write_photos(raw, [latin1], seed=1)
    shutil.copy(raw / "Cat/a.png", raw / "Dog/a copy.png")  # The same photo under the other label.
    shutil.copy(raw / "Cat/b.png", raw / "Cat/b copy.png")
    (raw / "Dog/exif.jpg").write_bytes(jpeg_with_malformed_exif())
    (raw / "Dog/empty.jpg").write_bytes(b"")
    report = build_folder(raw, tmp_path / "out", split="train:100")
    assert report["counts"] == {
        "files_seen": 8,
        "written": 5,
        "rejected": 1,
        "duplicates": 2,
        "skipped": 0,
        "not_selected": 0,
        "augmented_copies": 0,
    }
    assert sorted(report["duplicates"], key=lambda item: item["path"]) == [  # The survivor is the first by path.
        {"path": "Cat/b.png", "duplicate_of": "Cat/b copy.png"},
        {"path": "Dog/a copy.png", "duplicate_of": "Cat/a.png", "note": "labelled differently"},
    ]
    warnings = {item["path"]: item["reason"] for item in report["warnings"]}
    assert len(report["warnings"]) == len(warnings) == 2
    assert warnings[latin1].startswith("file name is not valid UTF-8: image/filename holds its original bytes")
    assert warnings["Dog/exif.jpg"].startswith("EXIF malformed, its orientation applied: ")
    on_disk = json.loads((tmp_path / "out" / schema.REPORT_FILE).read_text())
    assert on_disk["warnings"] == report["warnings"]


def test_pixel_identical_files_of_different_formats_are_duplicates(tmp_path):
    raw = tmp_path / "raw"
    write_photos(raw, ["Cat/a.png", "Dog/b.png"])
    Image.open(raw / "Cat/a.png").save(raw / "Cat/a.bmp", format="BMP")
    report = build_folder(raw, tmp_path / "out", split="train:100")
    assert report["duplicates"] == [{"path": "Cat/a.png", "duplicate_of": "Cat/a.bmp"}]
    assert report["counts"]["written"] == 2


def test_shards_sized_by_bytes(tmp_path, sample_folder):
    report = build_folder(sample_folder.parent, tmp_path / "out", shard_size_mb=0.05, split="train:100")
    train = schema.DatasetMetadata.read(str(tmp_path / "out")).splits["train"]
    assert len(train.shard_lengths) == -(-train.num_bytes // int(0.05 * 2**20))
    assert sum(train.shard_lengths) == report["counts"]["written"]


def test_failure_mid_run_leaves_previous_dataset_untouched(tmp_path, sample_folder, monkeypatch):
    out = tmp_path / "out"
    build_folder(sample_folder.parent, out, split="train:100")
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}

    def fail(self, element):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline.WriteShard, "process", fail)
    with pytest.raises(Exception, match="disk full"):
        build_folder(sample_folder.parent, out, overwrite=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert os.listdir(tmp_path) == ["out"], "no temporary directory may be left behind"


def test_overwrite_replaces_the_whole_dataset(tmp_path, monkeypatch):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_photos(raw, [f"Cat/{i}.png" for i in range(6)] + [f"Dog/{i}.png" for i in range(6)])
    build_folder(raw, out, split="train:100", num_shards=2)
    with monkeypatch.context() as patch, pytest.raises(driver.UserError, match="--overwrite"):
        patch.setattr(folders, "list_input", lambda *args: pytest.fail("listed the input before checking the output"))
        build_folder(raw, out, split="train:100")
    build_folder(raw, out, split="train:50,test:50", overwrite=True)
    train, test = read_split(out, "train"), read_split(out, "test")
    assert train and test and len(train) + len(test) == 12
    assert sorted(n for n in os.listdir(out) if ".tfrecord-" in n) == [
        "catsdogs-test.tfrecord-00000-of-00001",
        "catsdogs-train.tfrecord-00000-of-00001",
    ]
    assert sorted(os.listdir(tmp_path)) == ["out", "raw"], "nothing may be left beside the dataset"


def test_failure_on_first_build_leaves_no_dataset(tmp_path, sample_folder, monkeypatch):
    monkeypatch.setattr(results, "build_report", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        build_folder(sample_folder.parent, tmp_path / "out")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_kill_9_mid_build_leaves_previous_dataset(tmp_path, sample_folder):
    out = tmp_path / "out"
    build_folder(sample_folder.parent, out, split="train:100")
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "data_prep.build",
            "--dataset=catsdogs",
            f"--input_dir={sample_folder.parent}",
            f"--output_dir={out}",
            "--overwrite",
            "--image_size=64",
            "--runner=FnApiRunner",
            "--direct_running_mode=in_memory",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    spill = None
    while spill is None and process.poll() is None and time.monotonic() < deadline:
        temps = [n for n in os.listdir(tmp_path) if n.startswith(".out.incomplete-")]
        if temps and os.path.isdir(tmp_path / temps[0] / "_work" / "spill"):
            spill = temps[0]
        time.sleep(0.05)  # Polling interval only; the condition above is the synchronisation.
    assert spill, "the build should have started writing before it was killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before


def test_progress_and_beam_counters_are_logged(tmp_path, sample_folder, monkeypatch, caplog):
    monkeypatch.setattr(runners, "PROGRESS_INTERVAL_S", 0.01)
    monkeypatch.setattr(progress.Progress, "INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO):
        report = build_folder(sample_folder.parent, tmp_path / "out")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines, "expected progress lines"
    assert lines[-1].split(" / ")[1].startswith(f"{report['counts']['files_seen']} files")
    counts = report["counts"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"built {tmp_path / 'out'}: files_seen={counts['files_seen']}, written={counts['written']}")
        for m in messages
    )
    assert (
        f"Beam counters agree with the report: files_seen={counts['files_seen']}, written={counts['written']}, "
        f"augmented=0, rejected={counts['rejected']}, duplicates={counts['duplicates']}, "
        f"skipped={counts['skipped']}, not_selected=0"
    ) in messages


@pytest.mark.slow
def test_a_fork_after_a_build_prints_no_error(tmp_path):
    """Python's fork handler calls Thread._stop() on every thread object still in memory: the progress logger's
    attributes must not shadow it (it printed "TypeError: 'Event' object is not callable" in every child)."""
    script = textwrap.dedent(f"""
        import os
        from data_prep import runners
        logger = runners.JobWatcher({str(tmp_path)!r}, {str(tmp_path)!r}, 1)
        logger.start()
        logger.stop()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    assert "_after_fork" not in child.stderr and "not callable" not in child.stderr, child.stderr


def test_counters_that_disagree_with_the_report_are_logged(caplog):
    class Result:
        def metrics(self):
            return self

        def query(self, _):
            key = lambda name: MetricKey("Decode", MetricName(results.METRICS_NAMESPACE, name))  # noqa: E731
            return {"counters": [MetricResult(key("files_seen"), 5, 6), MetricResult(key("written"), None, 4)]}

    counts = {
        "files_seen": 5,
        "written": 3,
        "augmented_copies": 0,
        "rejected": 2,
        "duplicates": 0,
        "skipped": 0,
        "not_selected": 0,
    }
    assert driver.check_counters(Result(), counts) == {
        "files_seen": 5,
        "written": 4,
        "augmented": 0,
        "rejected": 0,
        "duplicates": 0,
        "skipped": 0,
        "not_selected": 0,
    }
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("Beam counters")] == ["WARNING"]
    caplog.clear()  # The warning was the point: beam_counters_agree_with_reports must not fail this test.


def run_cli(*args):
    """The command line's parse-then-main path, in process (a subprocess per case costs ~15 s of imports)."""
    flags.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as exit_info:
        build.main(cli.parse_flags(["data_prep.build", *args, *FAST_BEAM_ARGS]))
    return str(exit_info.value.code)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset=catsdogs", "--input_dir={t}/missing", "--output_dir={t}/o"], "does not exist"),
        (["--dataset=catsdogs", "--input_dir={t}/empty", "--output_dir={t}/o"], "contains no files"),
        (["--dataset=dogsonly", "--input_dir={t}/in", "--output_dir={t}/o"], "--dataset"),
        (["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/existing"], "already exists; pass --overwrite"),
        (["--dataset=catsdogs", "--output_dir={t}/o"], "--input_dir is required"),
        (["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/o", "--shard_sise_mb=3"], "unknown flag"),
        (
            ["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/o", "--augmentation=horizontal_flip=banana"],
            "--augmentation=horizontal_flip=banana: expected true or false",
        ),
        (
            ["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/o", "--augmentation=hflip=1"],
            "with a name of ['horizontal_flip'",
        ),
        (
            ["--dataset=cifar10", "--input={t}/in", "--output_dir={t}/o", "--augmentation=rotation=2"],
            "must be in [0, 1)",
        ),
        (
            ["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/o", "--split=train:10/class,test:10"],
            "--split=train:10/class,test:10: give every split as a count per class",
        ),
        (
            ["--dataset=mnist", "--input={t}/in", "--output_dir={t}/o", "--split=train:10/class"],
            "--split=train:10/class: counts per class are for image folders; --dataset=mnist keeps its official",
        ),
        (
            ["--dataset=catsdogs", "--input_dir={t}/in", "--output_dir={t}/o", "--split=train:1/class"],
            "--split=train:1/class: too few files, before any was read: 'dog' has 0 (1 asked per class in all).",
        ),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    write_photos(tmp_path / "in", ["Cat/a.png"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "existing").mkdir()
    error = run_cli(*(a.format(t=tmp_path) for a in args))
    assert error.startswith("error:") and message in error and "\n" not in error
    assert not (tmp_path / "o").exists()


def test_offline_augmented_copies_of_folder_images(tmp_path):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(6)] + [f"Dog/{i}.png" for i in range(6)])
    report = build_folder(raw, tmp_path / "out", split="train:50,test:50", augment_copies=1)
    assert report["counts"]["augmented_copies"] == report["splits"]["train"] - report["counts"]["augmented_copies"]
    test_names = read_split(tmp_path / "out", "test")
    train_names = read_split(tmp_path / "out", "train")
    assert not any("#augment" in n for n in test_names)
    copies = [n for n in train_names if "#augment" in n]
    assert copies and all(n.split("#")[0] in train_names for n in copies)
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    params = [
        json.loads(ex[schema.AUGMENT_PARAMS])
        for ex in tfds.as_numpy(builder.as_dataset(split="train"))
        if ex[schema.AUGMENT_SOURCE_KEY]
    ]
    assert len(params) == len(copies) and all("rotation_degrees" in p for p in params)


@pytest.mark.slow
def test_files_users_really_have_are_listed_and_never_hang_or_crash_the_command(tmp_path, monkeypatch):
    """The README's command on the download's folder, holding what real folders hold: a named pipe (opening it
    would block forever), a socket, a link looping to its parent, a broken link, a link to a photo elsewhere
    (followed), a Latin-1 file name (not UTF-8), a stray image and a readme beside PetImages/."""
    raw = tmp_path / "kagglecatsanddogs_5340"
    latin1 = os.fsdecode(b"PetImages/Cat/caf\xe9.png")
    write_photos(raw, ["PetImages/Cat/1.png", "PetImages/Dog/1.png", latin1, "stray.png"])
    write_photos(tmp_path / "elsewhere", ["dog.png"], seed=1)
    (raw / "readme[1].txt").write_text("Dogs vs. Cats\n")
    dog = raw / "PetImages" / "Dog"
    os.mkfifo(dog / "fifo.jpg")
    with monkeypatch.context() as patch, socket.socket(socket.AF_UNIX) as unix_socket:
        patch.chdir(dog)  # A socket's path is limited to ~100 bytes.
        unix_socket.bind("socket.jpg")
    (dog / "loop").symlink_to("..")
    (dog / "broken.jpg").symlink_to("nowhere.jpg")
    (dog / "linked.png").symlink_to(tmp_path / "elsewhere" / "dog.png")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.build",
            "--dataset=catsdogs",
            f"--input_dir={raw}",
            f"--output_dir={out}",
            "--split=train:100",
            "--image_size=64",
            *FAST_BEAM_ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / schema.REPORT_FILE).read_text())
    assert report["counts"] == {
        "files_seen": 10,
        "written": 4,
        "rejected": 0,
        "duplicates": 0,
        "skipped": 6,
        "not_selected": 0,
        "augmented_copies": 0,
    }
    assert {item["path"]: item["reason"] for item in report["skipped"]} == {
        "PetImages/Dog/fifo.jpg": "skipped: named pipe (FIFO), not a regular file (not opened)",
        "PetImages/Dog/socket.jpg": "skipped: socket, not a regular file (not opened)",
        "PetImages/Dog/loop": "skipped: link to a folder (not followed)",
        "PetImages/Dog/broken.jpg": "skipped: broken link (its target does not exist)",
        "readme[1].txt": "skipped: outside the data folder PetImages",
        "stray.png": "skipped: outside the data folder PetImages",
    }
    assert [w["path"] for w in report["warnings"]] == [latin1]
    assert "not valid UTF-8" in report["warnings"][0]["reason"]
    builder = tfds.builder_from_directory(str(out))
    stored = {ex[schema.FILENAME]: int(ex[schema.LABEL]) for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
    assert stored == {
        b"PetImages/Cat/1.png": 0,
        b"PetImages/Cat/caf\xe9.png": 0,
        b"PetImages/Dog/1.png": 1,
        b"PetImages/Dog/linked.png": 1,
    }


def test_a_full_disk_is_one_line_naming_the_output_and_the_space_needed(tmp_path, sample_folder, monkeypatch):
    def disk_full(self, example):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill.SpillRecords, "process", disk_full)
    out = tmp_path / "out"
    with pytest.raises(driver.UserError) as error:
        build_folder(sample_folder.parent, out)
    input_bytes = sum(
        os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(sample_folder.parent) for n in names
    )
    message = str(error.value)
    assert message.startswith(
        f"no space left on the device holding --output_dir={out}: a build needs room beside it "
        "for its spill files and then the shards, about twice the size of the stored images, "
        f"at most about {driver._size(2 * input_bytes)} for this input"
    )
    assert message.endswith("Free space there or choose another --output_dir; the partial build was removed.")
    assert "\n" not in message and os.listdir(tmp_path) == []


@pytest.mark.slow
def test_a_really_full_disk_ends_the_command_in_one_line(tmp_path, sample_folder):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "data_prep.build",
                "--dataset=catsdogs",
                f"--input_dir={sample_folder.parent}",
                f"--output_dir={disk / 'out'}",
                "--image_size=64",
                *FAST_BEAM_ARGS,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1].startswith(
            f"error: no space left on the device holding --output_dir={disk / 'out'}: a build needs room"
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
