r"""Builds a TFDS-compatible TFRecord dataset from raw images or a Keras dataset.

  python -m data_prep.build --dataset=catsdogs --input_dir=PetImages/.. --output_dir=/data/catsdogs
  python -m data_prep.build --dataset=imagefolder --input_dir=flowers --output_dir=/data/flowers

Flags this module does not define are Beam pipeline options (`--runner`,
`--direct_running_mode`, `--project` ...). With no `--runner`, the job runs locally on the
FnApiRunner on every core: a process per 2 cores (this one process on a 2-core machine), each
decoding on 2 threads. Beam's default DirectRunner would first try to download a Prism binary.
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from absl import app, flags

from data_prep import driver, folders, images

_DATASET = flags.DEFINE_enum("dataset", None, driver.DATASETS, "What to build.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to create (local path or gs://).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir (atomically).")
_NAME = flags.DEFINE_string("name", None, "Dataset name (shard file prefix); default: --dataset.")
_SHARD_SIZE_MB = flags.DEFINE_float("shard_size_mb", 128, "Target shard size; ignored when --num_shards is set.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 0, "Shards per split (0: from --shard_size_mb).")
_AUGMENTATION = flags.DEFINE_list(
    "augmentation", [], "Overrides of the recorded training-time augmentation policy, e.g. rotation=0.05,zoom=0.")
_AUGMENT_COPIES = flags.DEFINE_integer("augment_copies", 0, "Offline-augmented copies of each training example.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the offline augmentation.")
_STALL_TIMEOUT_S = flags.DEFINE_float(
    "stall_timeout_s", driver.STALL_TIMEOUT_S, "Cancel and fail a job that processes no file and begins no shard for "
    "this long (0: never), such as one whose workers died or lack Beam; the default allows for Dataflow's worker "
    "start-up. Runners other than the local ones only.", lower_bound=0)
# Raw image folders.
_INPUT_DIR = flags.DEFINE_string("input_dir", None, "catsdogs/imagefolder: raw image folder (local path or gs://).")
_LAYOUT = flags.DEFINE_enum("layout", "auto", folders.LAYOUTS, "Input folder layout.")
_CLASS_NAMES = flags.DEFINE_list("class_names", None, "imagefolder: class folder names in label order.")
_SPLIT = flags.DEFINE_string("split", "train:80,validation:10,test:10",
                             "Hash-assigned splits (name:percent) for inputs that have none.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Target size in pixels; see --resize_policy.")
_RESIZE_POLICY = flags.DEFINE_enum(
    "resize_policy", "shorter_side", images.RESIZE_POLICIES,
    "shorter_side: shorter side to --image_size, aspect kept, never upscaled; exact: squash to a square; none.")
_IMAGE_FORMAT = flags.DEFINE_enum("image_format", "jpeg", images.IMAGE_FORMATS, "Stored encoding (png is lossless).")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored images.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 50_000_000, "Reject images with more pixels (read from the header).")
_DECODE_THREADS = flags.DEFINE_integer(
    "decode_threads", 0, "Files each Beam worker decodes at once; 0: this machine's cores shared among the local "
    "worker processes, 1 on Dataflow, Flink or Spark.")
# Keras datasets.
_INPUT = flags.DEFINE_string("input", None, "Keras datasets: a local copy (mnist.npz, the Fashion-MNIST folder, "
                             "cifar-*-python.tar.gz or its folder); default: Keras's cache, downloading if online.")
_VALIDATION_SIZE = flags.DEFINE_string("validation_size", "5000",
                                       "Keras datasets: validation carved out of train, a count or a percentage.")


def _build(argv: Sequence[str]) -> None:
    for flag in (_DATASET, _OUTPUT_DIR):
        if flag.value is None:
            raise driver.UserError(f"--{flag.name} is required")
    common = driver.CommonOptions(
        output_dir=_OUTPUT_DIR.value, overwrite=_OVERWRITE.value, name=_NAME.value, shard_size_mb=_SHARD_SIZE_MB.value,
        num_shards=_NUM_SHARDS.value, policy=driver.augmentation_policy(_DATASET.value, _AUGMENTATION.value),
        augment_copies=_AUGMENT_COPIES.value, seed=_SEED.value, beam_args=argv[1:],
        stall_timeout_s=_STALL_TIMEOUT_S.value)
    if _DATASET.value not in driver.FOLDER_DATASETS:
        driver.build_keras_dataset(_DATASET.value, common, input_path=_INPUT.value,
                                   validation_size=_VALIDATION_SIZE.value)
        return
    if not _INPUT_DIR.value:
        raise driver.UserError(f"--input_dir is required for --dataset={_DATASET.value}")
    try:
        image_options = images.ImageOptions(
            image_size=_IMAGE_SIZE.value, resize_policy=_RESIZE_POLICY.value, image_format=_IMAGE_FORMAT.value,
            jpeg_quality=_JPEG_QUALITY.value, max_pixels=_MAX_PIXELS.value)
    except ValueError as e:
        raise driver.UserError(str(e)) from None
    driver.build_folder_dataset(_DATASET.value, _INPUT_DIR.value, common, layout=_LAYOUT.value,
                                class_names=_CLASS_NAMES.value, split=_SPLIT.value, image_options=image_options,
                                threads=_DECODE_THREADS.value)


def main(argv: Sequence[str]) -> None:
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Beam's INFO lines drown the progress.
    try:
        _build(argv)
    except driver.UserError as e:
        sys.exit(f"error: {e}")


def _parse_flags(argv: list[str]) -> list[str]:
    """Our flags are parsed; the rest are left for Beam."""
    try:
        return flags.FLAGS(argv, known_only=True)
    except flags.Error as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
