"""The dataset contract: our serializer against TensorFlow's, metadata.json as a typed object, and no TensorFlow
or Beam where they are not needed."""

import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import dataset_metadata

from data_prep import output, schema, stats, tfrecord


@pytest.mark.parametrize("label,coarse,source", [(0, None, ""), (-3, 2**40, ""), (7, 1, "a" * 64)])
def test_serialized_bytes_equal_tensorflows(label, coarse, source):
    image = bytes(range(256)) * 50
    ours = schema.serialize_example(
        image,
        "Cat/ü 1.jpg",
        "k" * 64,
        label,
        coarse_label=coarse,
        augment_source_key=source,
        augment_params={"zoom": 1.1} if source else None,
    )
    feature = {
        schema.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        schema.FILENAME: tf.train.Feature(bytes_list=tf.train.BytesList(value=["Cat/ü 1.jpg".encode()])),
        schema.KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"k" * 64])),
        schema.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        schema.AUGMENT_SOURCE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[source.encode()])),
        schema.AUGMENT_PARAMS: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b'{"zoom": 1.1}' if source else b""])
        ),
    }
    if coarse is not None:
        feature[schema.COARSE_LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(value=[coarse]))
    theirs = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)
    assert ours == theirs
    parsed = schema.parse_examples(tf.constant([ours]), with_coarse_label=coarse is not None)
    assert parsed[schema.IMAGE].numpy()[0] == image and parsed[schema.LABEL].numpy()[0] == label


def test_beam_worker_modules_do_not_import_tensorflow():
    code = (
        "import sys; import data_prep.folders, data_prep.pipeline, data_prep.keras_pipeline, data_prep.stats; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_contract_imports_neither_beam_nor_tensorflow():
    code = "import sys; import data_prep.schema; print(sorted({'apache_beam', 'tensorflow', 'PIL'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_metadata_reads_back_to_the_very_file_a_build_wrote(sample_dataset, tmp_path):
    out, report = sample_dataset
    written = json.loads((out / schema.METADATA_FILE).read_text())
    metadata = schema.DatasetMetadata.read(str(out))
    assert metadata.to_dict() == written
    assert metadata.split_sizes == report["splits"]
    metadata.write(str(tmp_path))
    assert (tmp_path / schema.METADATA_FILE).read_bytes() == (out / schema.METADATA_FILE).read_bytes()
    assert [p.rsplit("/", 1)[1] for p in metadata.shard_paths(str(out), "train")] == sorted(
        p.name for p in out.iterdir() if p.name.startswith("catsdogs-train.tfrecord-")
    )


def test_metadata_written_before_smoke_builds_reads_as_a_whole_build(sample_dataset, tmp_path):
    out, _ = sample_dataset
    values = json.loads((out / schema.METADATA_FILE).read_text())
    assert values["build"].pop("max_examples_per_split") is None
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(values))
    assert schema.DatasetMetadata.read(str(tmp_path)).build.max_examples_per_split is None


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["splits"]["train"].update(num_examples=1), "splits: train: num_examples=1 but its"),
        (lambda m: m["image"].pop("channels"), "image: missing fields ['channels']"),
        (
            lambda m: m["augmentation"].update(rotation=2.0),
            "augmentation: augmentation rotation=2.0: must be in [0, 1)",
        ),
        (lambda m: m.update(statistics={"mean": [1.0]}), "statistics: missing fields"),
        (lambda m: m.update(colour="blue"), "unknown fields ['colour']"),
    ],
)
def test_a_malformed_field_is_named_with_what_to_do(sample_dataset, tmp_path, edit, message):
    out, _ = sample_dataset
    values = json.loads((out / schema.METADATA_FILE).read_text())
    edit(values)
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(values))
    with pytest.raises(schema.MetadataError) as error:
        schema.DatasetMetadata.read(str(tmp_path))
    assert str(error.value).startswith(f"{tmp_path / schema.METADATA_FILE} is malformed: ")
    assert message in str(error.value) and "rebuild it with" in str(error.value)


def test_another_schema_version_is_refused(sample_dataset, tmp_path):
    out, _ = sample_dataset
    values = json.loads((out / schema.METADATA_FILE).read_text()) | {"schema_version": 99}
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(values))
    with pytest.raises(schema.MetadataError, match="schema_version 99, this code reads 1"):
        schema.DatasetMetadata.read(str(tmp_path))


@pytest.mark.parametrize("channels", [1, 3])
def test_channel_moments_are_exact(channels):
    pixels = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    pixels[0, 0] = 3  # Known extremes on every channel.
    pixels[-1, -1] = 250
    flat = pixels.reshape(-1, channels).astype(np.float64)
    expected = np.stack([flat.sum(0), np.square(flat).sum(0), flat.min(0), flat.max(0)])
    np.testing.assert_array_equal(stats.channel_moments(pixels), expected)


def test_a_features_record_equals_tensorflows_and_tfds_reads_a_feature_dataset(tmp_path):
    values = np.random.default_rng(0).standard_normal((2, 2, 3)).astype(np.float32)
    ours = schema.serialize_example(None, "Cat/1.jpg", "k" * 64, 1, features=values.ravel().tolist())
    theirs = tf.train.Example.FromString(ours)
    assert list(theirs.features.feature[schema.FEATURES].float_list.value) == values.ravel().tolist()
    assert theirs.SerializeToString(deterministic=True) == ours, "the same bytes as TensorFlow's serializer"
    parsed = schema.parse_examples(tf.constant([ours]), features_shape=(2, 2, 3))
    np.testing.assert_array_equal(parsed[schema.FEATURES].numpy()[0], values)
    with pytest.raises(ValueError, match="either an image or features"):
        schema.serialize_example(b"jpeg", "a.jpg", "k", 0, features=[1.0])

    metadata = dataset_metadata(("cat", "dog"), splits={"train": schema.SplitInfo(1, (1,), 0)})
    metadata = dataclasses.replace(
        metadata,
        image=None,
        features=schema.FeatureSpec(
            shape=(2, 2, 3),
            base_model="vgg16",
            weights="/w.h5",
            weights_sha256="0" * 64,
            input_size=(150, 150),
            normalization="vgg16",
            precision="float32",
        ),
    )
    path = metadata.shard_paths(str(tmp_path), "train")[0]
    with open(path, "wb") as f:
        f.write(tfrecord.tfrecord_frame(ours))
    metadata = dataclasses.replace(metadata, splits={"train": schema.SplitInfo(1, (1,), os.path.getsize(path))})
    output.write_metadata(str(tmp_path), metadata)
    assert schema.DatasetMetadata.read(str(tmp_path)) == metadata
    (record,) = tfds.as_numpy(tfds.builder_from_directory(str(tmp_path)).as_dataset(split="train"))
    np.testing.assert_array_equal(record[schema.FEATURES], values)
    assert record[schema.LABEL] == 1 and record[schema.FILENAME] == b"Cat/1.jpg"


def test_metadata_holds_images_or_features_and_reads_files_written_before_features_existed(sample_dataset, tmp_path):
    out, _ = sample_dataset
    metadata = schema.DatasetMetadata.read(str(out))
    with pytest.raises(ValueError, match="exactly one of them"):
        dataclasses.replace(metadata, image=None)
    values = json.loads((out / schema.METADATA_FILE).read_text())
    del values["features"]  # As data_prep wrote metadata.json before feature datasets.
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(values))
    assert schema.DatasetMetadata.read(str(tmp_path)) == metadata


def test_tfrecords_written_by_tensorflow_read_back_and_damage_is_named(tmp_path):
    records = [b"", b"one", bytes(range(256)) * 9]
    path = str(tmp_path / "shard")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    data = (tmp_path / "shard").read_bytes()
    assert data == b"".join(tfrecord.tfrecord_frame(r) for r in records), "our framing is TensorFlow's"
    assert list(tfrecord.read_records(io.BytesIO(data), "shard")) == records
    damaged_payload = bytearray(data)
    damaged_payload[12 + 0 + 4 + 12] ^= 1  # The first byte of the second record ("o").
    for damaged, where in (
        (data[:-1], "truncated or corrupt record at byte 35"),
        (data[:5], "corrupt record length at byte 0"),
        (bytes(damaged_payload), "truncated or corrupt record at byte 16"),
    ):
        with pytest.raises(tfrecord.CorruptRecordError, match=f"^shard: {where}$"):
            list(tfrecord.read_records(io.BytesIO(damaged), "shard"))
