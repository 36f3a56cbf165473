"""data_prep.show: which examples it picks, that its second grid is the trainer's own augmentation, the PNGs, and
its command line."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import build_folder, dataset_metadata
from folder_files import write_photos
from PIL import Image

from data_prep import images, options, schema, show
from trainer import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three classes (5 'c' images only), one offline copy of each training image."""
    root = tmp_path_factory.mktemp("show")
    names = [f"a/{i}.png" for i in range(8)] + [f"b/{i}.png" for i in range(7)] + [f"c/{i}.png" for i in range(5)]
    write_photos(root / "raw", names, size=(40, 30))
    build_folder(
        root / "raw",
        root / "data",
        dataset="imagefolder",
        split="train:60,test:40",
        augment_copies=1,
        image_options=images.ImageOptions(image_size=24),
    )
    return root / "data"


def _originals_in_record_order(data_dir, split):
    """(filename, label) of a split's records as TensorFlow reads them, offline copies left out."""
    info = input_pipeline.open_dataset(str(data_dir))
    found = []
    for record in tf.data.TFRecordDataset(info.shard_paths(split)):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        if not feature[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0]:
            found.append(
                (feature[schema.FILENAME].bytes_list.value[0].decode(), feature[schema.LABEL].int64_list.value[0])
            )
    return found


def test_the_first_originals_of_each_class_in_record_order_are_picked(dataset):
    metadata = schema.DatasetMetadata.read(str(dataset))
    for split in ("train", "test"):
        picked = show.pick_examples(str(dataset), metadata, split, 3, [0, 2])
        records = _originals_in_record_order(dataset, split)
        for label in (0, 2):
            expected = [name for name, found in records if found == label][:3]
            assert [e.filename for e in picked[label]] == expected
            assert all(e.label == label and "#augment" not in e.filename for e in picked[label])
        assert set(picked) == {0, 2}, "a class not asked for is not shown"


def test_the_model_view_is_the_first_training_batch_of_the_trainers_pipeline(dataset):
    """The trainer's own batches (shuffle buffer 1 keeps the order) augment the picked images exactly as shown."""
    metadata = schema.DatasetMetadata.read(str(dataset))
    assert not metadata.augmentation.is_identity
    examples = [
        e for shown in show.pick_examples(str(dataset), metadata, "train", 2, [0, 1, 2]).values() for e in shown
    ]
    viewed = show.model_view(examples, metadata, (20, 28), seed=5)
    decoded = tf.data.Dataset.from_tensor_slices(
        (tf.stack([input_pipeline.decode_resize(e.image, 3, 20, 28) for e in examples]), tf.zeros(len(examples)))
    )
    batches = input_pipeline._training_batches(
        decoded, len(examples), 1, 5, 0, metadata.augmentation, lambda images: images
    )
    trainer_batch, _ = next(iter(batches))
    assert viewed.shape == (len(examples), 20, 28, 3) and viewed.dtype == np.uint8
    np.testing.assert_allclose(viewed, trainer_batch.numpy(), atol=0.5)
    unaugmented = show.model_view(
        examples, dataclasses.replace(metadata, augmentation=schema.AugmentationPolicy()), (20, 28), seed=5
    )
    assert not np.array_equal(viewed, unaugmented)


def test_two_grids_are_written_the_same_each_time(dataset, tmp_path):
    first, second = show.show(str(dataset), per_class=2, output=str(tmp_path / "look.png"))
    assert (first, second) == (str(tmp_path / "look.png"), str(tmp_path / "look_augmented.png"))
    with Image.open(first) as grid, Image.open(second) as augmented:
        assert grid.format == augmented.format == "PNG"
        # Two split panels side by side, each of 3 class rows of 2 images; the train rows alone.
        assert grid.size[0] > grid.size[1] == augmented.size[1] > augmented.size[0]
    again = show.show(str(dataset), per_class=2, output=str(tmp_path / "again.png"))
    assert [pathlib.Path(p).read_bytes() for p in again] == [pathlib.Path(p).read_bytes() for p in (first, second)]


def test_panels_go_side_by_side_for_many_classes():
    assert not show.side_by_side(num_splits=3, num_classes=2, per_class=4)
    assert show.side_by_side(num_splits=3, num_classes=10, per_class=3)


def test_a_feature_dataset_is_refused_naming_its_image_dataset(tmp_path):
    spec = schema.FeatureSpec((1, 1, 512), "vgg16", "w.h5", "0" * 64, (32, 32), "vgg16", "float32")
    metadata = dataset_metadata(("a", "b"), splits={})
    dataclasses.replace(metadata, image=None, features=spec, source={"input": "/data/images"}).write(str(tmp_path))
    with pytest.raises(options.UserError, match=r"holds features of a frozen vgg16 base, not images: .*/data/images"):
        show.show(str(tmp_path))


def test_the_command_writes_both_grids_and_errors_are_one_line(dataset, tmp_path):
    command = [sys.executable, "-m", "data_prep.show", f"--data_dir={dataset}"]
    result = subprocess.run(
        [*command, "--per_class=1", f"--output={tmp_path / 'x.png'}"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "x.png").exists() and (tmp_path / "x_augmented.png").exists()
    result = subprocess.run([*command, "--per_clas=1"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == "error: unknown flag(s): --per_clas=1"
