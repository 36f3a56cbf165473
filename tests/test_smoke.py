"""Smoke builds (`--max_examples_per_split=N`): the N first by content hash per split, chosen before decoding,
the rest reported, the cap recorded in metadata.json and warned about by the trainer."""

import hashlib
import io
import logging
import os
import shutil

import numpy as np
import pytest
from conftest import build_folder
from folder_files import read_split, write_photos
from PIL import Image

from data_prep import folders, options, schema, splits, subsets
from trainer import input_pipeline

TINY = (8, 8)
SPLIT = "train:80,validation:10,test:10"


def first_by_hash(raw, n, split=SPLIT):
    """What a smoke build should keep: per split, the files of the n smallest distinct selection ranks among
    `raw`'s class-folder images (computed here from the files alone)."""
    spec = splits.SplitSpec.parse(split)
    ranked = {}
    for path in sorted(raw.rglob("*.png")):
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        ranked.setdefault(spec.assign(key), []).append((subsets.selection_rank(key), str(path.relative_to(raw))))
    kept = {}
    for name, files in ranked.items():
        cutoff = sorted({rank for rank, _ in files})[:n][-1]
        kept[name] = {f for rank, f in files if rank <= cutoff}
    return kept


def test_a_smoke_build_keeps_the_first_n_of_each_split_by_content_hash_and_reports_the_rest(tmp_path, caplog):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(40)] + [f"Dog/{i}.png" for i in range(40)], size=TINY)
    kept = first_by_hash(raw, 5)
    original = sorted(kept["train"])[0]  # A byte-identical copy of a kept file shares its place among the five.
    copy = original.replace(".png", "_copy.png")  # Sorts after the original, which survives the dedupe.
    shutil.copy(raw / original, raw / copy)
    (raw / "Cat/Thumbs.db").write_bytes(b"junk")
    (raw / "Dog/empty.png").write_bytes(b"")  # Rejected by its header in the first pass, kept or not.
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        report = build_folder(raw, out, max_examples_per_split=5)

    assert {split: set(read_split(out, split)) for split in kept} == kept
    assert report["splits"] == {"train": 5, "validation": 5, "test": 5}
    counts = report["counts"]
    assert (counts["files_seen"], counts["skipped"], counts["rejected"], counts["not_selected"]) == (83, 1, 1, 65)
    assert report["duplicates"] == [{"path": copy, "duplicate_of": original}]
    assert report["rejected"] == [{"path": "Dog/empty.png", "reason": "empty file (0 bytes)"}]
    spec = splits.SplitSpec.parse(SPLIT)
    for item in report["not_selected"]:
        key = hashlib.sha256((raw / item["path"]).read_bytes()).hexdigest()
        assert item["split"] == spec.assign(key) and item["path"] not in kept[item["split"]]
        assert item["reason"] == "beyond the first 5 of its split by content hash (--max_examples_per_split)"

    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.build.max_examples_per_split == 5
    assert metadata.statistics.num_pixels == 5 * 8 * 8, "statistics of the kept training images only"
    assert f"{out} is a smoke build: at most 5 examples per split" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        input_pipeline.open_dataset(str(out))
    assert f"{out} is a smoke build (--max_examples_per_split=5), not the whole input." in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        input_pipeline.open_dataset(str(out), warn_if_smoke=False)  # The export's read, after training's.
    assert "smoke build" not in caplog.text


def placement(out, report, split_names):
    """Where a build put each file: its split, kept or not."""
    kept = {path: split for split in split_names for path in read_split(out, split)}
    return kept, {**kept, **{item["path"]: item["split"] for item in report["not_selected"]}}


def test_adding_files_moves_no_image_between_splits_and_drops_a_kept_one_only_for_a_new_one_ranked_ahead(tmp_path):
    raw, split, names = tmp_path / "raw", "train:50,test:50", ("train", "test")
    write_photos(raw, [f"{c}/{i}.png" for c in ("Cat", "Dog") for i in range(12)], size=TINY)
    report = build_folder(raw, tmp_path / "first", split=split, max_examples_per_split=4)
    first, first_split = placement(tmp_path / "first", report, names)
    assert len(first) == 8

    def rank(path):
        return subsets.selection_rank(hashlib.sha256(path.read_bytes()).hexdigest())

    cutoff = {name: max(rank(raw / p) for p, s in first.items() if s == name) for name in names}
    spec = splits.SplitSpec.parse(split)
    write_photos(tmp_path / "more", [f"Cat/{i}.png" for i in range(40)], seed=1, size=TINY)
    late, early = [], []
    for path in sorted((tmp_path / "more").rglob("*.png")):
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        (late if subsets.selection_rank(key) > cutoff[spec.assign(key)] else early).append(path)
    assert late and early

    for path in late:
        shutil.copy(path, raw / "Cat" / f"late_{path.name}")
    report = build_folder(raw, tmp_path / "late", split=split, max_examples_per_split=4)
    assert placement(tmp_path / "late", report, names)[0] == first, "files ranked after the cutoff change nothing"

    for path in early:
        shutil.copy(path, raw / "Cat" / f"early_{path.name}")
    report = build_folder(raw, tmp_path / "early", split=split, max_examples_per_split=4)
    kept, kept_split = placement(tmp_path / "early", report, names)
    assert {p: kept_split[p] for p in first_split} == first_split, "no file changes split"
    for name in names:
        old = {p for p, s in first.items() if s == name}
        new = {p for p, s in kept.items() if s == name}
        dropped, entered = old - new, new - set(first_split)
        assert len(new) == 4 and new - entered <= old, name
        assert len(dropped) == len(entered), "a kept file leaves only for a new one"
        assert all(rank(raw / e) < rank(raw / d) for e in entered for d in dropped), name
    assert any(p not in kept for p in first), "the new files displaced some"


def test_only_the_kept_files_are_decoded_and_one_that_fails_then_is_not_replaced(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(20)], size=TINY)
    best = min(subsets.selection_rank(hashlib.sha256(p.read_bytes()).hexdigest()) for p in raw.rglob("*.png"))
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(whole, "PNG")
    cut = next(  # Its header reads, its data is cut short, and it ranks before every good file.
        data
        for length in range(100, len(whole.getvalue()) - 100)
        for data in [whole.getvalue()[:length]]
        if subsets.selection_rank(hashlib.sha256(data).hexdigest()) < best
    )
    (raw / "Cat/cut.png").write_bytes(cut)
    kept = first_by_hash(raw, 3, split="train:100")["train"]
    assert "Cat/cut.png" in kept
    decoded = tmp_path / "decoded.txt"
    read_file = folders.read_file

    def logged_read_file(entry, options):
        with open(decoded, "a") as f:
            f.write(entry.relpath + "\n")
        return read_file(entry, options)

    monkeypatch.setattr(folders, "read_file", logged_read_file)
    out = tmp_path / "out"
    report = build_folder(raw, out, split="train:100", max_examples_per_split=3)
    assert sorted(decoded.read_text().split()) == sorted(kept), "the kept files are decoded, no other"
    ((path, reason),) = [(item["path"], item["reason"]) for item in report["rejected"]]
    assert path == "Cat/cut.png" and reason.startswith("truncated or corrupt image data")
    assert set(read_split(out, "train")) == kept - {"Cat/cut.png"}, (
        "at most N: a file failing to decode is not replaced"
    )


@pytest.mark.slow
def test_a_smoke_build_is_byte_identical_whatever_the_parallelism(tmp_path, sample_folder, monkeypatch):
    serial, threaded, parallel = tmp_path / "serial", tmp_path / "threaded", tmp_path / "parallel"
    report = build_folder(sample_folder.parent, serial, num_shards=2, max_examples_per_split=6)
    monkeypatch.setattr(folders, "FILES_PER_BATCH", 5)  # Many batches, each hashed and decoded on 3 threads.
    build_folder(sample_folder.parent, threaded, num_shards=2, threads=3, max_examples_per_split=6)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)  # The default there: 2 worker processes of 2 threads.
    build_folder(sample_folder.parent, parallel, num_shards=2, threads=0, beam_args=[], max_examples_per_split=6)
    names = sorted(os.listdir(serial))
    assert names == sorted(os.listdir(threaded)) == sorted(os.listdir(parallel))
    for name in names:
        assert (serial / name).read_bytes() == (threaded / name).read_bytes() == (parallel / name).read_bytes(), name
    left_out = {item["split"] for item in report["not_selected"]}
    assert set(report["splits"]) == {"train", "validation", "test"}
    for split, n in report["splits"].items():  # N of each split that has more; nothing kept fails to decode here.
        assert (n == 6) if split in left_out else (n <= 6), split


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"max_examples_per_split": 0}, "--max_examples_per_split=0: must be at least 1"),
        (
            {"dataset": "mnist", "max_examples_per_split": 10},
            "--max_examples_per_split=10: smoke builds are for image folders; --dataset=mnist is built whole",
        ),
        (
            {"split": "train:10/class,test:5/class", "max_examples_per_split": 10},
            "--max_examples_per_split=10: not with counts per class (--split=train:10/class,test:5/class), which "
            "already choose a subset; ask for smaller counts instead",
        ),
    ],
)
def test_smoke_settings_that_cannot_work_are_refused(settings, message):
    with pytest.raises(options.UserError) as error:
        options.BuildOptions(**{"dataset": "catsdogs", "output_dir": "out", "input_dir": "in", **settings})
    assert str(error.value) == message
