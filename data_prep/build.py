r"""usage: python -m data_prep.build --dataset=NAME --output_dir=DIR [--input_dir=DIR] [--split=...] [Beam flags]
Builds a TFDS-compatible TFRecord dataset from raw images or a Keras dataset (installed as imgcls-build too).

  python -m data_prep.build --dataset=catsdogs --input_dir=PetImages/.. --output_dir=/data/catsdogs
  python -m data_prep.build --dataset=imagefolder --input_dir=flowers --output_dir=/data/flowers
  python -m data_prep.build --dataset=catsdogs --input_dir=PetImages/.. --output_dir=/data/catsdogs_small \
    --split=train:1000/class,validation:500/class,test:500/class

Flags this module does not define are Beam pipeline options (`--runner`,
`--direct_running_mode`, `--project` ...). With no `--runner`, the job runs locally on the
FnApiRunner on every core: a process per 2 cores (this one process on a 2-core machine), each
decoding on 2 threads. Beam's default DirectRunner would first try to download a Prism binary.
In Python: `data_prep.build_dataset(dataset=..., output_dir=..., input_dir=..., image_size=...)`, every flag by its
name (data_prep/api.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import flags

from data_prep import api, cli, images, options

_DEFAULT = options.BuildOptions  # Its class attributes are the fields' defaults.
_IMAGE = images.ImageOptions

_DATASET = flags.DEFINE_enum("dataset", None, options.DATASETS, "What to build.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to create (local path or gs://).")
flags.DEFINE_bool("overwrite", _DEFAULT.overwrite, "Replace an existing --output_dir (atomically).")
flags.DEFINE_string("name", _DEFAULT.name, "Dataset name (shard file prefix); default: --dataset.")
flags.DEFINE_float("shard_size_mb", _DEFAULT.shard_size_mb, "Target shard size; ignored when --num_shards is set.")
flags.DEFINE_integer("num_shards", _DEFAULT.num_shards, "Shards per split (0: from --shard_size_mb).")
flags.DEFINE_list(
    "augmentation",
    list(_DEFAULT.augmentation),
    "Overrides of the recorded training-time augmentation policy, e.g. rotation=0.05,zoom=0.",
)
flags.DEFINE_integer("augment_copies", _DEFAULT.augment_copies, "Offline-augmented copies of each training example.")
flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed of the offline augmentation.")
flags.DEFINE_float(
    "stall_timeout_s",
    _DEFAULT.stall_timeout_s,
    "Cancel and fail a job that processes no file and begins no shard "
    "for this long (0: never), such as one whose workers died or lack Beam; the default allows for Dataflow's worker "
    "start-up. Runners other than the local ones only.",
    lower_bound=0,
)
flags.DEFINE_float(
    "imbalance_warning_ratio",
    _DEFAULT.imbalance_warning_ratio,
    "Warn (log and build_report.json's class_imbalance) when a split's largest class has more than this many times "
    "the images of its smallest; 0: never.",
)
# Raw image folders.
flags.DEFINE_string("input_dir", None, "catsdogs/imagefolder: raw image folder (local path or gs://).")
flags.DEFINE_enum("layout", _DEFAULT.layout, options.LAYOUTS, "Input folder layout.")
flags.DEFINE_list("class_names", None, "imagefolder: class folder names in label order.")
flags.DEFINE_string(
    "split",
    _DEFAULT.split,
    "Splits for inputs that have none, by a hash of each file's content: name:percent pairs adding up to 100; or a "
    "count per class for every split, name:N/class (train:1000/class,validation:500/class,test:500/class: N images "
    "of each class per split, the others listed as not_selected in build_report.json; too few is an error). "
    "With split folders, counts select within each folder split (percentages are ignored there). "
    "Not for the Keras datasets.",
)
flags.DEFINE_integer(
    "max_examples_per_split",
    _DEFAULT.max_examples_per_split,
    "A smoke build of a large folder: keep at most N examples per split, those first by content hash; every file is "
    "still listed and read (hashed), only the kept ones are decoded. The others are listed as not_selected in "
    "build_report.json, and metadata.json records N (the trainer warns). Image folders, percentage splits only.",
)
flags.DEFINE_integer("image_size", _IMAGE.image_size, "Target size in pixels; see --resize_policy.")
flags.DEFINE_enum(
    "resize_policy",
    _IMAGE.resize_policy,
    images.RESIZE_POLICIES,
    "shorter_side: shorter side to --image_size, aspect kept, never upscaled; exact: squash to a square; none.",
)
flags.DEFINE_enum("image_format", _IMAGE.image_format, images.IMAGE_FORMATS, "Stored encoding (png is lossless).")
flags.DEFINE_integer("jpeg_quality", _IMAGE.jpeg_quality, "JPEG quality of the stored images.")
flags.DEFINE_integer("max_pixels", _IMAGE.max_pixels, "Reject images with more pixels (read from the header).")
flags.DEFINE_integer(
    "decode_threads",
    _DEFAULT.decode_threads,
    "Files each Beam worker decodes at once; 0: this machine's cores "
    "shared among the local worker processes, 1 on Dataflow, Flink or Spark.",
)
# Keras datasets.
flags.DEFINE_string(
    "input",
    None,
    "Keras datasets: a local copy (mnist.npz, the Fashion-MNIST folder, "
    "cifar-*-python.tar.gz or its folder); default: Keras's cache, downloading if online.",
)
flags.DEFINE_string(
    "validation_size",
    _DEFAULT.validation_size,
    "Keras datasets: validation carved out of train, a count or a percentage.",
)


def build_from_flags(argv: Sequence[str]) -> dict[str, Any]:
    """The command: the API with every flag by its name; `argv[1:]` are the flags left for Beam."""
    for required in (_DATASET, _OUTPUT_DIR):
        if required.value is None:
            raise options.UserError(f"--{required.name} is required")
    values: dict[str, Any] = {name: flags.FLAGS[name].value for name in api.BUILD_SETTINGS if name != "beam_args"}
    return api.build_dataset(**values, beam_args=argv[1:])


main = cli.command(build_from_flags)

if __name__ == "__main__":
    cli.run(main)
