"""Per-class counts per split: counted by the shard writers, recorded in metadata.json and the report, logged, and
an imbalance warning past --imbalance_warning_ratio."""

import collections
import dataclasses
import json
import logging
import subprocess
import sys

import pytest
from conftest import build_folder, dataset_metadata
from folder_files import read_split, write_photos

from data_prep import driver, options, results, schema


def _labels_read_back(out, split):
    """Records per label of a split, read through TFDS (not through anything the build counted)."""
    return collections.Counter(read_split(out, split).values())


def test_counts_per_class_are_what_was_written_and_sum_to_the_split_sizes(sample_dataset):
    out, report = sample_dataset
    metadata = schema.DatasetMetadata.read(str(out))
    for split, info in metadata.splits.items():
        read_back = _labels_read_back(out, split)
        assert info.num_examples_per_class == (read_back[0], read_back[1])
        assert sum(info.num_examples_per_class) == info.num_examples == report["splits"][split]
        assert report["class_counts"][split] == {"cat": read_back[0], "dog": read_back[1]}
    assert report["augmented_copies_per_class"] == {}
    # The default threshold (1.5) on small hash-assigned splits: some are imbalanced by chance.
    imbalanced = {split for split, c in report["class_counts"].items() if max(c.values()) > 1.5 * min(c.values())}
    assert {item["split"] for item in report["class_imbalance"]} == imbalanced
    on_disk = json.loads((out / schema.REPORT_FILE).read_text())
    assert on_disk["class_counts"] == report["class_counts"]


def test_an_imbalanced_split_is_warned_about_and_reported(tmp_path, caplog):
    """12 cats and 4 dogs, all in train: 3x; the warning fires above the ratio, not at or below it, nor when off."""
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(12)] + [f"Dog/{i}.png" for i in range(4)])
    with caplog.at_level(logging.INFO):
        report = build_folder(raw, tmp_path / "out", split="train:100", imbalance_warning_ratio=2.5)
    assert report["class_counts"] == {"train": {"cat": 12, "dog": 4}}
    assert report["class_imbalance"] == [
        {"split": "train", "largest": "cat", "largest_count": 12, "smallest": "dog", "smallest_count": 4, "ratio": 3.0}
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert "train per class: cat=12, dog=4" in messages
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("class imbalance in train: 'cat' has 12 examples, 'dog' 4 (3.00x;" in m for m in warnings), warnings
    for ratio in (3.0, 0.0):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            again = build_folder(
                raw, tmp_path / f"out{ratio}", split="train:100", imbalance_warning_ratio=ratio, overwrite=True
            )
        assert again["class_imbalance"] == []
        assert not [r for r in caplog.records if "class imbalance" in r.getMessage()]


def test_augmented_copies_are_counted_with_their_class_and_listed_apart(tmp_path, caplog):
    raw = tmp_path / "raw"
    write_photos(raw, [f"Cat/{i}.png" for i in range(6)] + [f"Dog/{i}.png" for i in range(5)])
    with caplog.at_level(logging.INFO):
        report = build_folder(raw, tmp_path / "out", split="train:100", augment_copies=2)
    metadata = schema.DatasetMetadata.read(str(tmp_path / "out"))
    assert metadata.splits["train"].num_examples_per_class == (18, 15)
    assert report["class_counts"] == {"train": {"cat": 18, "dog": 15}}
    assert report["augmented_copies_per_class"] == {"train": {"cat": 12, "dog": 10}}
    assert "train per class: cat=18 (12 augmented copies), dog=15 (10 augmented copies)" in caplog.messages


def test_a_split_without_a_class_is_imbalanced_without_a_ratio():
    assert results.imbalance({"a": 3, "b": 0}, 1.5) == {
        "largest": "a",
        "largest_count": 3,
        "smallest": "b",
        "smallest_count": 0,
        "ratio": None,
    }
    assert results.imbalance({"a": 3, "b": 2}, 1.5) is None  # 1.5x exactly: not beyond the threshold.
    assert results.imbalance({"a": 30}, 1.5) is None


def test_many_classes_log_their_range():
    counts = {f"c{i}": 10 + i for i in range(12)}
    assert driver._class_counts(counts, None) == "12 classes, smallest c0=10, largest c11=21"


def test_the_contract_checks_the_counts_and_reads_files_without_them(sample_dataset, tmp_path):
    with pytest.raises(ValueError, match="num_examples=3 but its num_examples_per_class sum to 2"):
        schema.SplitInfo(3, (3,), 10, num_examples_per_class=(1, 1))
    with pytest.raises(ValueError, match="train: num_examples_per_class has 3 counts for 2 class_names"):
        dataset_metadata(("cat", "dog"), splits={"train": schema.SplitInfo(3, (3,), 10, (1, 1, 1))})
    out, _ = sample_dataset
    values = json.loads((out / schema.METADATA_FILE).read_text())
    for split in values["splits"].values():
        del split["num_examples_per_class"]  # As written before the counts were recorded.
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(values))
    older = schema.DatasetMetadata.read(str(tmp_path))
    current = schema.DatasetMetadata.read(str(out))
    assert older.splits == {
        split: dataclasses.replace(info, num_examples_per_class=None) for split, info in current.splits.items()
    }


@pytest.mark.parametrize("ratio", [1.0, 0.5, -2.0])
def test_a_ratio_that_would_warn_about_every_split_is_refused(tmp_path, ratio):
    with pytest.raises(options.UserError, match=f"--imbalance_warning_ratio={ratio}: must be above 1"):
        options.BuildOptions(
            dataset="catsdogs", output_dir=str(tmp_path), input_dir=str(tmp_path), imbalance_warning_ratio=ratio
        )


def test_the_flag_on_the_command_line(tmp_path):
    command = [sys.executable, "-m", "data_prep.build", "--dataset=catsdogs", f"--input_dir={tmp_path}"]
    result = subprocess.run(
        [*command, f"--output_dir={tmp_path / 'o'}", "--imbalance_warning_ratio=1"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: --imbalance_warning_ratio=1.0: must be above 1 (or 0: no warning)"
    )
