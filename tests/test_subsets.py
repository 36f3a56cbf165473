"""Subsets by count per class (`--split=train:1000/class,...`): parsing, the selection, and builds of generated folders
in each layout, the tutorial's exact numbers among them."""

import hashlib
import itertools
import os
import random
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import build_folder
from folder_files import listed, read_split, write_photos

from data_prep import folders, images, options, schema, splits, subsets

TUTORIAL = "train:1000/class,validation:500/class,test:500/class"
SMALL = "train:10/class,validation:5/class,test:5/class"
TINY = (8, 8)  # Pixels of the generated photos: the builds' cost is per file, not per pixel.


def test_counts_per_class_take_the_counts_shares_and_every_split_must_say_per_class():
    spec = splits.SplitSpec.parse(TUTORIAL)
    assert spec.counts == {"train": 1000, "validation": 500, "test": 500}
    assert spec.percentages == (("train", 50.0), ("validation", 25.0), ("test", 25.0))
    assert splits.SplitSpec.parse("train:80,validation:10,test:10").counts == {}
    for text, message in [
        ("train:1000/class,validation:10", "every split as a count per class (train:1000/class) or every split as"),
        ("train:1000/class,test:0/class", "counts per class must be whole numbers of at least 1"),
        ("train:2.5/class", "counts per class must be whole numbers of at least 1"),
        ("train:-3/class", "counts per class must be whole numbers of at least 1"),
        ("train:1000/klass", "expected name:percent pairs adding up to 100"),
        ("train:1000/class,train:5/class", "distinct identifiers"),
    ]:
        with pytest.raises(ValueError, match=r"^--split=") as error:
            splits.SplitSpec.parse(text)
        assert text in str(error.value) and message in str(error.value)


def test_keras_datasets_refuse_counts_per_class():
    with pytest.raises(options.UserError) as error:
        options.BuildOptions(dataset="mnist", output_dir="out", split=TUTORIAL)
    assert str(error.value) == (
        f"--split={TUTORIAL}: counts per class are for image folders; --dataset=mnist keeps its official train and "
        "test splits (and carves validation with --validation_size)"
    )


def test_smallest_ranks_do_not_depend_on_how_the_input_is_split_among_workers():
    ranks = [subsets.selection_rank(f"key{i}") for i in range(500)]
    combine = subsets.SmallestRanks(7)
    expected = (500, sorted(ranks)[:7])
    for seed in range(5):
        shuffled = random.Random(seed).sample(ranks, len(ranks))
        cuts = sorted(random.Random(seed).sample(range(1, 500), 4))
        parts = []
        for chunk in (shuffled[a:b] for a, b in itertools.pairwise([0, *cuts, 500])):
            accumulator = combine.create_accumulator()
            for rank in chunk:
                accumulator = combine.add_input(accumulator, rank)
            parts.append(accumulator)
        merged = combine.merge_accumulators([combine.merge_accumulators(parts[:2]), *parts[2:]])
        assert combine.extract_output(merged) == expected
    assert combine.extract_output(combine.add_input(combine.create_accumulator(), 5)) == (1, [5])


def test_equal_ranks_take_one_place_among_the_smallest():
    """Byte-identical files share a key (and a rank) until dedupe: a smoke build's n are n distinct examples."""
    combine = subsets.SmallestRanks(3)
    accumulators = []
    for ranks in ([5, 1, 1, 9], [1, 5, 7, 2], [2, 8]):
        accumulator = combine.create_accumulator()
        for rank in ranks:
            accumulator = combine.add_input(accumulator, rank)
        accumulators.append(accumulator)
    assert combine.extract_output(accumulators[0]) == (4, [1, 5, 9])
    assert combine.extract_output(combine.merge_accumulators(accumulators)) == (10, [1, 2, 5])


def test_a_reliable_class_size_leaves_every_share_three_standard_deviations_above_its_count():
    total = subsets.reliable_total([1000, 500, 500])
    assert total == 2247
    for n in (1000, 500):  # The smaller shares bind: 2247 * 0.25 - 3 sd >= 500.
        p = n / 2000
        assert total * p - 3 * np.sqrt(total * p * (1 - p)) >= n
    p = 0.25
    assert (total - 1) * p - 3 * np.sqrt((total - 1) * p * (1 - p)) < 500
    assert subsets.reliable_total([7]) == 7  # One split takes every image.


def class_folders(root, per_class, seed=0, prefix=""):
    write_photos(root, [f"PetImages/Cat/{prefix}{i}.png" for i in range(per_class)], seed=seed, size=TINY)
    write_photos(root, [f"PetImages/Dog/{prefix}{i}.png" for i in range(per_class)], seed=seed + 100, size=TINY)


@pytest.mark.slow
def test_the_tutorials_subset_from_class_folders(tmp_path):
    """1,000 cats + 1,000 dogs train, 500 + 500 validation, 500 + 500 test, from PetImages/Cat and PetImages/Dog of
    2,300 each (a little above subsets.reliable_total, 2,247; the generated content is seeded): ~4 s to build."""
    raw, out = tmp_path / "kagglecatsanddogs_5340", tmp_path / "out"
    class_folders(raw, 2300)
    png = images.ImageOptions(image_size=64, image_format="png")  # Lossless, for the statistics below.
    report = build_folder(raw, out, split=TUTORIAL, image_options=png)
    assert report["counts"] == {
        "files_seen": 4600,
        "written": 4000,
        "rejected": 0,
        "duplicates": 0,
        "skipped": 0,
        "not_selected": 600,
        "augmented_copies": 0,
    }
    assert report["splits"] == {"train": 2000, "validation": 1000, "test": 1000}
    wanted = {"train": 1000, "validation": 500, "test": 500}
    records = {split: read_split(out, split) for split in wanted}  # filename -> label, through TFDS.
    for split, n in wanted.items():
        labels = [label for filename, label in records[split].items() if f"/{('Cat', 'Dog')[label]}/" in filename]
        assert len(labels) == 2 * n and labels.count(0) == labels.count(1) == n, split
        for name in ("cat", "dog"):
            row = report["per_class"][split][name]
            assert row["selected"] == n and row["available"] > n
    assert sum(row["available"] for rows in report["per_class"].values() for row in rows.values()) == 4600
    stored = set().union(*records.values())
    every_file = {f"PetImages/{c}/{i}.png" for c in ("Cat", "Dog") for i in range(2300)}
    assert stored | listed(report) == every_file and not stored & listed(report)
    assert {item["split"] for item in report["not_selected"]} == set(wanted)
    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.source["split"] == TUTORIAL
    assert {split: info.num_examples for split, info in metadata.splits.items()} == report["splits"]
    # The statistics are of the 2,000 selected training images, not of the 2,300 x 2 that were decoded.
    builder = tfds.builder_from_directory(str(out))
    pixels = np.concatenate(
        [ex[schema.IMAGE].reshape(-1, 3).astype(np.float64) for ex in tfds.as_numpy(builder.as_dataset(split="train"))]
    )
    assert metadata.statistics.num_pixels == len(pixels) == 2000 * 64
    np.testing.assert_allclose(metadata.statistics.mean, pixels.mean(0), atol=1e-4)


def test_adding_files_never_moves_an_image_between_splits_and_enters_a_subset_only_by_displacing_one(tmp_path):
    raw = tmp_path / "raw"
    class_folders(raw, 60)
    v1 = build_folder(raw, tmp_path / "v1", split=SMALL)
    class_folders(raw, 30, seed=1, prefix="new")
    v2 = build_folder(raw, tmp_path / "v2", split=SMALL)

    def placed(report, dataset_dir):
        """filename -> (split, selected) of every image that reached the selection."""
        selected = {f: (s, True) for s in report["splits"] for f in read_split(dataset_dir, s)}
        return selected | {item["path"]: (item["split"], False) for item in report["not_selected"]}

    before, after = placed(v1, tmp_path / "v1"), placed(v2, tmp_path / "v2")
    assert len(before) == 120 and len(after) == 180
    assert all(after[f][0] == split for f, (split, _) in before.items()), "an image moved between splits"
    assert not [f for f, (_, chosen) in before.items() if not chosen and after[f][1]], "only new files may enter"
    left = [f for f, (_, chosen) in before.items() if chosen and not after[f][1]]
    entered = [f for f, (_, chosen) in after.items() if chosen and f not in before]
    assert left, "the added files should displace some (or the test shows nothing)"

    def groups(files):
        return sorted((after[f][0], f.split("/")[1]) for f in files)

    assert groups(left) == groups(entered), "each (split, class) lost exactly as many as it gained"
    assert v1["splits"] == v2["splits"] == {"train": 20, "validation": 10, "test": 10}


def test_too_few_images_in_a_split_fails_in_one_line_naming_every_shortfall_and_commits_nothing(tmp_path):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(20)], size=TINY)  # As many as asked: the shares vary.
    write_photos(raw, [f"Dog/{i}.png" for i in range(40)], seed=1, size=TINY)
    (raw / "Cat/empty.png").write_bytes(b"")  # Listed, so the listing shows no shortfall; rejected when read.
    spec = splits.SplitSpec.parse(SMALL)
    with pytest.raises(options.UserError) as error:
        build_folder(raw, tmp_path / "out", split=SMALL)
    message = str(error.value)
    assert message.startswith(f"--split={SMALL}: too few images: 'cat' has ")
    for name, folder, n in (("cat", "Cat", 20), ("dog", "Dog", 40)):  # Every shortfall is named, and only those.
        hashed = [spec.assign(hashlib.sha256((raw / f"{folder}/{i}.png").read_bytes()).hexdigest()) for i in range(n)]
        for split, asked in spec.per_class:
            has = hashed.count(split)
            assert (f"{name!r} has {has} in {split} ({asked} asked)" in message) == (has < asked), (name, split)
    assert "Usable images per class in all (after rejected files and duplicates): 'cat' 20, 'dog' 40," in message
    assert "for 20 asked per class" in message and "(train 50%, validation 25%, test 25%)" in message
    assert "about 61 images per class meet these counts reliably" in message
    assert message.endswith("nothing was committed.") and "\n" not in message
    assert os.listdir(tmp_path) == ["raw"], "no dataset and no temporary directory"


def test_a_class_the_listing_shows_short_fails_before_any_file_is_read(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(19)] + [f"Dog/{i}.png" for i in range(40)], size=TINY)
    monkeypatch.setattr(folders, "read_file", lambda *args: pytest.fail("a file was read"))
    with pytest.raises(options.UserError) as error:
        build_folder(raw, tmp_path / "out", split=SMALL)
    assert str(error.value) == (
        f"--split={SMALL}: too few files, before any was read: 'cat' has 19 (20 asked per class in all). Ask for "
        "fewer per class or add images."
    )
    assert os.listdir(tmp_path) == ["raw"]


def test_flat_kaggle_names_with_a_duplicate_and_offline_copies_of_selected_training_images_only(tmp_path):
    raw = tmp_path / "dogs-vs-cats"
    names = [f"train/{c}.{i}.png" for c in ("cat", "dog") for i in range(30)]
    write_photos(raw, names, size=TINY)
    write_photos(raw, [f"test1/{i}.png" for i in range(4)], seed=1, size=TINY)  # Unlabelled: skipped.
    shutil.copy(raw / "train/cat.0.png", raw / "train/cat.0 copy.png")
    out = tmp_path / "out"
    report = build_folder(raw, out, split="train:8/class,test:4/class", augment_copies=1)
    counts = report["counts"]
    assert (counts["written"], counts["skipped"], counts["duplicates"], counts["augmented_copies"]) == (24, 4, 1, 16)
    assert counts["not_selected"] == 60 - 24
    train, test = read_split(out, "train"), read_split(out, "test")
    copies = {f for f in train if "#augment" in f}
    originals = {f: label for f, label in train.items() if f not in copies}
    assert len(originals) == 16 and sorted(originals.values()) == [0] * 8 + [1] * 8
    assert {f.split("#")[0] for f in copies} == set(originals), "one copy of each selected training image"
    assert len(test) == 8 and not set(test) & set(originals)
    stored = set(originals) | set(test)
    every_file = {*names, "train/cat.0 copy.png", *(f"test1/{i}.png" for i in range(4))}
    assert stored | listed(report) == every_file and not stored & listed(report)


def test_split_folders_select_within_each_folder_split(tmp_path):
    raw = tmp_path / "cats_and_dogs_small"
    sizes = {"train": 15, "validation": 6, "test": 6}
    write_photos(
        raw,
        [f"{split}/{c}/{c[:-1]}.{i}.png" for split, n in sizes.items() for c in ("cats", "dogs") for i in range(n)],
        size=TINY,
    )
    out = tmp_path / "out"
    report = build_folder(raw, out, split="train:10/class,validation:4/class,test:4/class")
    assert report["splits"] == {"train": 20, "validation": 8, "test": 8}
    assert report["counts"]["not_selected"] == 2 * (5 + 2 + 2)
    for split in sizes:
        assert all(f.startswith(f"{split}/") for f in read_split(out, split))
    assert all(item["path"].startswith(item["split"] + "/") for item in report["not_selected"])
    assert schema.DatasetMetadata.read(str(out)).source["split"] == (
        "from folders, train:10/class,validation:4/class,test:4/class within each"
    )
    with pytest.raises(options.UserError) as error:
        build_folder(raw, tmp_path / "other", split="train:10/class,test:4/class")
    assert str(error.value) == (
        "--split=train:10/class,test:4/class: the input's split folders are test, train, validation; with split "
        "folders, give a count per class for each of them and no other"
    )
    with pytest.raises(options.UserError) as error:
        build_folder(raw, tmp_path / "other", split="train:10/class,validation:7/class,test:4/class")
    assert str(error.value) == (
        "--split=train:10/class,validation:7/class,test:4/class: too few files, before any was read: 'cat' has 6 in "
        "the validation split folder (7 asked); 'dog' has 6 in the validation split folder (7 asked). Ask for fewer "
        "per class or add images."
    )
    (raw / "validation/cats/cat.5.png").write_bytes(b"")  # Listed, so only the job finds the split short.
    with pytest.raises(options.UserError) as error:
        build_folder(raw, tmp_path / "other", split="train:10/class,validation:6/class,test:4/class")
    assert str(error.value) == (
        "--split=train:10/class,validation:6/class,test:4/class: too few images: 'cat' has 5 in validation (6 "
        "asked). Usable images per class in all (after rejected files and duplicates): 'cat' 26, 'dog' 27, for 20 "
        "asked per class. The split folders fix each image's split. Ask for fewer per class or add images; nothing "
        "was committed."
    )
    assert sorted(os.listdir(tmp_path)) == ["cats_and_dogs_small", "out"]
