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
    beam_args: tuple[str, ...] = ()  # Beam pipeline options (--runner, ...).
    # Raw image folders.
    input_dir: str | None = None
    layout: str = "auto"  # One of LAYOUTS.
    class_names: tuple[str, ...] | None = None  # imagefolder: class folder names in label order.
    # Hash-assigned splits for inputs that have none, or counts per class (splits.SplitSpec).
    split: str = "train:80,validation:10,test:10"
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
        if self.split_spec.per_class and self.dataset not in FOLDER_DATASETS:
            raise UserError(
                f"--split={self.split}: counts per class are for image folders; --dataset={self.dataset} keeps its "
                "official train and test splits (and carves validation with --validation_size)"
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
