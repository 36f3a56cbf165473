"""One build's settings, in one object with one name and one default per setting.

`data_prep.build` defines its flags from these fields' defaults, and the driver and the
write graph read them under the same names, so a setting is spelt the same from the
command line to the worker.
"""

from __future__ import annotations

import dataclasses

from data_prep import images, keras_sources, splits

FOLDER_DATASETS = ("catsdogs", "imagefolder")
DATASETS = FOLDER_DATASETS + keras_sources.DATASETS
LAYOUTS = ("auto", "class_folders", "split_folders", "flat")
# A job that processes no file and begins no shard for this long is cancelled: several times Dataflow's worker
# start-up (more when --setup_file pip-installs TensorFlow), and under the hour after which Dataflow itself fails a job
# with no worker activity.
STALL_TIMEOUT_S = 1800.0


class UserError(Exception):
    """Bad flags or input: printed as one line, exit status 1."""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Everything one build takes. Folder builds read `input_dir` and the image settings; Keras builds `input`
    and `validation_size` (their images are stored losslessly at the original size)."""

    dataset: str  # One of DATASETS.
    output_dir: str  # Local path or gs://.
    overwrite: bool = False
    name: str | None = None  # Shard file prefix; None: the dataset.
    shard_size_mb: float = 128  # Target shard size; ignored when num_shards is set.
    num_shards: int = 0  # Shards per split; 0: from shard_size_mb.
    augmentation: tuple[str, ...] = ()  # name=value overrides of the dataset's default policy (augmentation.py).
    augment_copies: int = 0  # Offline-augmented copies of each training example.
    seed: int = 0  # Of the offline augmentation.
    stall_timeout_s: float = STALL_TIMEOUT_S  # 0: wait for a job however long it shows no work.
    # Warn when a split's largest class has more than this many times the images of its smallest; 0: never.
    imbalance_warning_ratio: float = 1.5
    beam_args: tuple[str, ...] = ()  # Beam pipeline options (--runner, ...).
    # Raw image folders.
    input_dir: str | None = None
    layout: str = "auto"  # One of LAYOUTS.
    class_names: tuple[str, ...] | None = None  # imagefolder: class folder names in label order.
    # Hash-assigned splits for inputs that have none, or counts per class (splits.SplitSpec).
    split: str = "train:80,validation:10,test:10"
    max_examples_per_split: int | None = None  # A smoke build: at most N per split, chosen before decoding (smoke.py).
    image: images.ImageOptions = images.ImageOptions()
    decode_threads: int = 0  # Files each worker decodes at once; 0: from the runner and the cores.
    # Keras datasets.
    input: str | None = None  # A local copy; None: Keras's cache, downloading if online.
    validation_size: str = "5000"  # Carved out of train: a count or a percentage.

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise UserError(f"--dataset={self.dataset}: choose one of {DATASETS}")
        if not self.output_dir:
            raise UserError("--output_dir is required")
        if self.dataset in FOLDER_DATASETS and not self.input_dir:
            raise UserError(f"--input_dir is required for --dataset={self.dataset}")
        if self.layout not in LAYOUTS:
            raise UserError(f"--layout={self.layout}: choose one of {LAYOUTS}")
        check_imbalance_ratio(self.imbalance_warning_ratio)
        if self.split_spec.per_class and self.dataset not in FOLDER_DATASETS:
            raise UserError(
                f"--split={self.split}: counts per class are for image folders; --dataset={self.dataset} keeps its "
                "official train and test splits (and carves validation with --validation_size)"
            )
        if self.max_examples_per_split is not None:
            self._check_smoke(self.max_examples_per_split)

    def _check_smoke(self, n: int) -> None:
        flag = f"--max_examples_per_split={n}"
        if n < 1:
            raise UserError(f"{flag}: must be at least 1")
        if self.dataset not in FOLDER_DATASETS:
            raise UserError(f"{flag}: smoke builds are for image folders; --dataset={self.dataset} is built whole")
        if self.split_spec.per_class:
            raise UserError(
                f"{flag}: not with counts per class (--split={self.split}), which already choose a subset; ask for "
                "smaller counts instead"
            )

    @property
    def split_spec(self) -> splits.SplitSpec:
        try:
            return splits.SplitSpec.parse(self.split)
        except ValueError as e:
            raise UserError(str(e)) from None

    @property
    def dataset_name(self) -> str:
        return self.name or self.dataset


PRECISIONS = ("auto", "float32", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractOptions:
    """Feature extraction (data_prep.extract_features): a built image dataset in, its base model's features out.
    The output settings are BuildOptions', with its defaults."""

    data_dir: str  # The image dataset to read (local path or gs://).
    output_dir: str
    overwrite: bool = BuildOptions.overwrite
    name: str | None = None  # Shard file prefix; None: "<source dataset>_<base>".
    base: str = "vgg16"  # The frozen base (trainer.models).
    weights: str = "imagenet"  # Its weights: 'imagenet' (Keras's cache) or a weights file.
    input_size: int = 150  # Images are resized to input_size x input_size, as the trainer's input pipeline does.
    precision: str = "auto"  # One of PRECISIONS; auto: mixed_bfloat16 where the CPU has bfloat16 matrix units.
    batch_size: int = 32  # Largest batch RunInference gives the base.
    augment_copies: int = BuildOptions.augment_copies  # Augmented copies of each training image, also extracted.
    seed: int = BuildOptions.seed
    shard_size_mb: float = BuildOptions.shard_size_mb
    num_shards: int = BuildOptions.num_shards
    stall_timeout_s: float = BuildOptions.stall_timeout_s
    imbalance_warning_ratio: float = BuildOptions.imbalance_warning_ratio
    beam_args: tuple[str, ...] = BuildOptions.beam_args

    def __post_init__(self):
        if not self.data_dir or not self.output_dir:
            raise UserError("--data_dir and --output_dir are required")
        if self.base != "vgg16":
            raise UserError(f"--base={self.base}: the one base model is vgg16")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision={self.precision}: choose one of {PRECISIONS}")
        check_imbalance_ratio(self.imbalance_warning_ratio)
        if self.input_size < 32 or self.batch_size < 1 or self.augment_copies < 0:
            raise UserError(
                "--input_size must be at least 32 (VGG16's smallest), --batch_size at least 1 and "
                "--augment_copies at least 0"
            )


def check_imbalance_ratio(ratio: float) -> None:
    """A ratio of 1 or less would call every split imbalanced; 0 turns the warning off."""
    if ratio != 0 and ratio <= 1:
        raise UserError(f"--imbalance_warning_ratio={ratio}: must be above 1 (or 0: no warning)")
