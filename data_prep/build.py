r"""Builds a TFDS-compatible TFRecord dataset from raw images or a Keras dataset.

  python -m data_prep.build --dataset=catsdogs --input_dir=PetImages/.. --output_dir=/data/catsdogs
  python -m data_prep.build --dataset=imagefolder --input_dir=flowers --output_dir=/data/flowers
  python -m data_prep.build --dataset=catsdogs --input_dir=PetImages/.. --output_dir=/data/catsdogs_small \
    --split=train:1000/class,validation:500/class,test:500/class

Flags this module does not define are Beam pipeline options (`--runner`,
`--direct_running_mode`, `--project` ...). With no `--runner`, the job runs locally on the
FnApiRunner on every core: a process per 2 cores (this one process on a 2-core machine), each
decoding on 2 threads. Beam's default DirectRunner would first try to download a Prism binary.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from data_prep import cli, driver, images, options

_DEFAULT = options.BuildOptions  # Its class attributes are the fields' defaults.
_IMAGE = images.ImageOptions

_DATASET = flags.DEFINE_enum("dataset", None, options.DATASETS, "What to build.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to create (local path or gs://).")
_OVERWRITE = flags.DEFINE_bool("overwrite", _DEFAULT.overwrite, "Replace an existing --output_dir (atomically).")
_NAME = flags.DEFINE_string("name", _DEFAULT.name, "Dataset name (shard file prefix); default: --dataset.")
_SHARD_SIZE_MB = flags.DEFINE_float(
    "shard_size_mb", _DEFAULT.shard_size_mb, "Target shard size; ignored when --num_shards is set."
)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", _DEFAULT.num_shards, "Shards per split (0: from --shard_size_mb).")
_AUGMENTATION = flags.DEFINE_list(
    "augmentation",
    list(_DEFAULT.augmentation),
    "Overrides of the recorded training-time augmentation policy, e.g. rotation=0.05,zoom=0.",
)
_AUGMENT_COPIES = flags.DEFINE_integer(
    "augment_copies", _DEFAULT.augment_copies, "Offline-augmented copies of each training example."
)
_SEED = flags.DEFINE_integer("seed", _DEFAULT.seed, "Seed of the offline augmentation.")
_STALL_TIMEOUT_S = flags.DEFINE_float(
    "stall_timeout_s",
    _DEFAULT.stall_timeout_s,
    "Cancel and fail a job that processes no file and begins no shard "
    "for this long (0: never), such as one whose workers died or lack Beam; the default allows for Dataflow's worker "
    "start-up. Runners other than the local ones only.",
    lower_bound=0,
)
_IMBALANCE_WARNING_RATIO = flags.DEFINE_float(
    "imbalance_warning_ratio",
    _DEFAULT.imbalance_warning_ratio,
    "Warn (log and build_report.json's class_imbalance) when a split's largest class has more than this many times "
    "the images of its smallest; 0: never.",
)
# Raw image folders.
_INPUT_DIR = flags.DEFINE_string("input_dir", None, "catsdogs/imagefolder: raw image folder (local path or gs://).")
_LAYOUT = flags.DEFINE_enum("layout", _DEFAULT.layout, options.LAYOUTS, "Input folder layout.")
_CLASS_NAMES = flags.DEFINE_list("class_names", None, "imagefolder: class folder names in label order.")
_SPLIT = flags.DEFINE_string(
    "split",
    _DEFAULT.split,
    "Splits for inputs that have none, by a hash of each file's content: name:percent pairs adding up to 100; or a "
    "count per class for every split, name:N/class (train:1000/class,validation:500/class,test:500/class: N images "
    "of each class per split, the others listed as not_selected in build_report.json; too few is an error). "
    "With split folders, counts select within each folder split (percentages are ignored there). "
    "Not for the Keras datasets.",
)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _IMAGE.image_size, "Target size in pixels; see --resize_policy.")
_RESIZE_POLICY = flags.DEFINE_enum(
    "resize_policy",
    _IMAGE.resize_policy,
    images.RESIZE_POLICIES,
    "shorter_side: shorter side to --image_size, aspect kept, never upscaled; exact: squash to a square; none.",
)
_IMAGE_FORMAT = flags.DEFINE_enum(
    "image_format", _IMAGE.image_format, images.IMAGE_FORMATS, "Stored encoding (png is lossless)."
)
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", _IMAGE.jpeg_quality, "JPEG quality of the stored images.")
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", _IMAGE.max_pixels, "Reject images with more pixels (read from the header)."
)
_DECODE_THREADS = flags.DEFINE_integer(
    "decode_threads",
    _DEFAULT.decode_threads,
    "Files each Beam worker decodes at once; 0: this machine's cores "
    "shared among the local worker processes, 1 on Dataflow, Flink or Spark.",
)
# Keras datasets.
_INPUT = flags.DEFINE_string(
    "input",
    None,
    "Keras datasets: a local copy (mnist.npz, the Fashion-MNIST folder, "
    "cifar-*-python.tar.gz or its folder); default: Keras's cache, downloading if online.",
)
_VALIDATION_SIZE = flags.DEFINE_string(
    "validation_size",
    _DEFAULT.validation_size,
    "Keras datasets: validation carved out of train, a count or a percentage.",
)


def build_options(argv: Sequence[str]) -> options.BuildOptions:
    """The parsed flags as one BuildOptions; `argv[1:]` are the flags left for Beam."""
    dataset, output_dir = _DATASET.value, _OUTPUT_DIR.value
    if dataset is None or output_dir is None:
        raise options.UserError(f"--{'dataset' if dataset is None else 'output_dir'} is required")
    try:
        image = images.ImageOptions(
            image_size=_IMAGE_SIZE.value,
            resize_policy=_RESIZE_POLICY.value,
            image_format=_IMAGE_FORMAT.value,
            jpeg_quality=_JPEG_QUALITY.value,
            max_pixels=_MAX_PIXELS.value,
        )
    except ValueError as e:
        raise options.UserError(str(e)) from None
    return options.BuildOptions(
        dataset=dataset,
        output_dir=output_dir,
        overwrite=_OVERWRITE.value,
        name=_NAME.value,
        shard_size_mb=_SHARD_SIZE_MB.value,
        num_shards=_NUM_SHARDS.value,
        augmentation=tuple(_AUGMENTATION.value),
        augment_copies=_AUGMENT_COPIES.value,
        seed=_SEED.value,
        stall_timeout_s=_STALL_TIMEOUT_S.value,
        imbalance_warning_ratio=_IMBALANCE_WARNING_RATIO.value,
        beam_args=tuple(argv[1:]),
        input_dir=_INPUT_DIR.value,
        layout=_LAYOUT.value,
        class_names=tuple(_CLASS_NAMES.value) if _CLASS_NAMES.value else None,
        split=_SPLIT.value,
        image=image,
        decode_threads=_DECODE_THREADS.value,
        input=_INPUT.value,
        validation_size=_VALIDATION_SIZE.value,
    )


main = cli.command(lambda argv: driver.build(build_options(argv)))

if __name__ == "__main__":
    cli.run(main)
