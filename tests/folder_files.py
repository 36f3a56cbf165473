"""Generated raw image folders, and what a build of one holds, for the folder-build tests."""

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from data_prep import schema


def write_photos(root, relpaths, seed=0, size=(48, 40)):
    """Random-noise PNGs (distinct for any realistic count) at `relpaths` under `root`."""
    rng = np.random.default_rng(seed)
    for relpath in relpaths:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path, format="PNG")


def read_split(dataset_dir, split):
    """(filename -> label) of every record of a split, read through TFDS."""
    builder = tfds.builder_from_directory(str(dataset_dir))
    return {
        ex[schema.FILENAME].decode(): int(ex[schema.LABEL]) for ex in tfds.as_numpy(builder.as_dataset(split=split))
    }


def listed(report):
    """The paths a report lists as not written: rejected, duplicates, skipped and not selected."""
    return {item["path"] for kind in ("rejected", "duplicates", "skipped", "not_selected") for item in report[kind]}
