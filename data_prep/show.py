r"""usage: python -m data_prep.show --data_dir=DIR [--per_class=4] [--output=FILE.png] [--image_size=N] [--seed=N]
Draws a dataset's examples per class and split, as stored and as the model sees them (installed as imgcls-show too).

  python -m data_prep.show --data_dir=/data/catsdogs [--per_class=4] [--output=catsdogs_examples.png]

In Python: `data_prep.show_examples(data_dir, per_class=4)` (data_prep/api.py) returns the two paths.

Writes two PNGs: OUTPUT, a grid of the first `--per_class` examples of each class in each split (record order, which
is a hash of content: deterministic, and unrelated to file names or folders), labelled with class and file name; and
OUTPUT with `_augmented` before its extension, the grid's training images as the trainer's input pipeline hands them
to the model: decoded and resized to `--image_size` (`input_pipeline.decode_resize`), then the recorded augmentation
policy applied by `input_pipeline.augment_batch`, seeded by `--seed` as a training run seeds its first batch. What
`tfds.show_examples` shows, plus the model's view. Offline-augmented copies are left out of the first grid (the second
shows augmentation). Feature datasets hold no images and are refused.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import posixpath
import textwrap
from collections.abc import Sequence

import fsspec
import numpy as np
from absl import flags
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from PIL import Image

from data_prep import cli, example_proto, options, schema, tfrecord
from data_prep.output import write_whole
from trainer import input_pipeline  # Imports TensorFlow quietly (data_prep.logs), before anything here uses it.

CELL_INCHES = 2.0  # Each image's square; titles and labels take the rest.
DPI = 100
FILENAME_CHARS = 30  # A longer name shows its end: the folder and file that tell examples apart.
CLASS_CHARS = 20  # A longer class name shows its start (the label runs along the row's 2 inches).
AUGMENTED_SUFFIX = "_augmented"
_log = logging.getLogger(__name__)
TITLED_CLASSES = 10  # A split's title names each class's count up to this many classes, else gives their range.
TITLE_CHARS_PER_CELL = 20  # Split titles (11 pt bold) wrap to their panel's width: about 10 characters an inch.


@dataclasses.dataclass(frozen=True)
class Shown:
    """One record picked for the grid."""

    filename: str
    label: int
    image: bytes  # As stored (JPEG or PNG).


def pick_examples(
    data_dir: str, metadata: schema.DatasetMetadata, split: str, per_class: int, labels: Sequence[int]
) -> dict[int, list[Shown]]:
    """The first `per_class` original records of each of `labels` in `split`, in record order (shards in order, each
    ordered by a hash of its keys); reading stops once every class has its examples."""
    picked: dict[int, list[Shown]] = {label: [] for label in labels}
    missing = len(labels) * per_class
    for path in metadata.shard_paths(data_dir, split):
        with fsspec.open(path, "rb") as f:
            for record in tfrecord.read_records(f, path):
                feature = example_proto.Example.FromString(record).features.feature
                label = int(feature[schema.LABEL].int64_list.value[0])
                shown = picked.get(label)
                if shown is None or len(shown) >= per_class or feature[schema.AUGMENT_SOURCE_KEY].bytes_list.value[0]:
                    continue  # A class not shown or already complete, or an offline copy.
                filename = schema.record_filename(feature)
                shown.append(Shown(filename, label, feature[schema.IMAGE].bytes_list.value[0]))
                missing -= 1
                if not missing:
                    return picked
    return picked


def model_view(
    examples: Sequence[Shown], metadata: schema.DatasetMetadata, size: tuple[int, int], seed: int
) -> np.ndarray:
    """uint8 [N, H, W, C]: the images as the trainer's training input pipeline yields them before normalization."""
    import tensorflow as tf  # Imported by the trainer package already, without its start-up notices.

    assert metadata.image is not None
    channels = metadata.image.channels
    decoded = tf.stack([input_pipeline.decode_resize(e.image, channels, *size) for e in examples])
    # The first batch of the first input pipeline of a run with this seed (input_pipeline._training_batches).
    # The step must be int64 as there: fold_in's result takes the step's dtype, and an int32 seed draws other values.
    batch_seed = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), tf.constant(0, tf.int64))
    augmented = input_pipeline.augment_batch(tf.cast(decoded, tf.float32), metadata.augmentation, batch_seed)
    return tf.cast(tf.round(augmented), tf.uint8).numpy()


def training_size(metadata: schema.DatasetMetadata, first: Shown | None, image_size: int) -> tuple[int, int]:
    """--image_size, else the stored size: the square data_prep resized to, or (never resized) the first image's."""
    assert metadata.image is not None
    if image_size:
        return image_size, image_size
    if metadata.image.resize_policy != "none":
        return metadata.image.image_size, metadata.image.image_size
    assert first is not None, "no training image to show"
    height, width = _pixels(first.image).shape[:2]
    return height, width


def _pixels(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image)


def _short(filename: str) -> str:
    return filename if len(filename) <= FILENAME_CHARS else "…" + filename[-(FILENAME_CHARS - 1) :]


def _draw_rows(
    panel: Figure | SubFigure,
    rows: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    per_class: int,
    num_rows: int = 0,
) -> None:
    """One row of images per class: the class name at the left of each row, a file name above each image. With
    `num_rows`, rows past `rows` are left empty (panels side by side keep the same cell size)."""
    axes = panel.subplots(max(num_rows, len(rows)), per_class, squeeze=False)
    for row_axes in axes[len(rows) :]:
        for ax in row_axes:
            ax.set_visible(False)
    for row_axes, (class_name, cells) in zip(axes, rows, strict=False):
        for column, ax in enumerate(row_axes):
            _blank(ax)
            if column < len(cells):
                title, pixels = cells[column]
                if pixels.ndim == 3 and pixels.shape[-1] == 1:
                    pixels = pixels[..., 0]
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255)
                ax.set_title(_short(title), fontsize=7)
            elif column == 0:
                ax.text(0.5, 0.5, "no examples", ha="center", va="center", fontsize=8, transform=ax.transAxes)
        label = class_name if len(class_name) <= CLASS_CHARS else class_name[: CLASS_CHARS - 1] + "…"
        row_axes[0].set_ylabel(label, fontsize=10, fontweight="bold")


def _blank(ax: Axes) -> None:
    """No ticks or frame, but the y label stays (Axes.axis('off') would hide it)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _figure(num_rows: int, num_columns: int, panels: int = 1) -> Figure:
    """Room for `panels` side by side, each of rows x columns images with their titles and the class labels."""
    width = panels * (0.6 + CELL_INCHES * num_columns)
    return Figure(figsize=(width, 0.8 + (CELL_INCHES + 0.3) * num_rows), layout="constrained")


def side_by_side(num_splits: int, num_classes: int, per_class: int) -> bool:
    """Whether the splits' panels go side by side rather than one above the other: whichever figure is closer to
    square (two classes stack three splits; ten classes put them side by side)."""
    stacked = per_class / (num_splits * num_classes)
    beside = num_splits * per_class / num_classes
    return abs(np.log(beside)) < abs(np.log(stacked))


def _title(figure: Figure, text: str, fontsize: float) -> None:
    """A figure title wrapped to the figure's width (a narrow grid would cut a long path or policy off)."""
    width = int(figure.get_figwidth() * 130 / fontsize)  # Characters average about 0.55 of the font size.
    figure.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=fontsize)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _split_title(metadata: schema.DatasetMetadata, split: str, per_class: int) -> str:
    """The split's size (and its offline copies, not shown), then its count per class (their range, for many
    classes), wrapped to the panel's width."""
    info, copies = metadata.splits[split], metadata.build.augment_copies
    title = f"{split}: {info.num_examples} examples"
    if split == "train" and copies:
        title += f", with {copies} offline {'copy' if copies == 1 else 'copies'} of each (not shown)"
    counts = info.num_examples_per_class
    if counts is not None and len(counts) > TITLED_CLASSES:
        title += f", {min(counts)} to {max(counts)} per class"
    elif counts is not None:
        title += "\n" + ", ".join(f"{name}={n}" for name, n in zip(metadata.class_names, counts, strict=True))
    width = TITLE_CHARS_PER_CELL * per_class
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def examples_grid(
    data_dir: str, metadata: schema.DatasetMetadata, picked: dict[str, dict[int, list[Shown]]], per_class: int
) -> bytes:
    """PNG: a panel per split, titled with its counts; a row per class."""
    labels = list(next(iter(picked.values())))
    if side_by_side(len(picked), len(labels), per_class):
        figure = _figure(len(labels), per_class, panels=len(picked))
        panels = figure.subfigures(1, len(picked), squeeze=False)[0]
    else:
        figure = _figure(len(picked) * len(labels), per_class)
        panels = figure.subfigures(len(picked), 1, squeeze=False)[:, 0]
    _title(figure, f"{metadata.dataset} ({data_dir}): the first {per_class} examples per class", fontsize=12)
    for panel, (split, by_label) in zip(panels, picked.items(), strict=True):
        panel.suptitle(_split_title(metadata, split, per_class), fontsize=11, fontweight="bold")
        rows = [
            (metadata.class_names[label], [(e.filename, _pixels(e.image)) for e in by_label[label]]) for label in labels
        ]
        _draw_rows(panel, rows, per_class)
    return _png(figure)


def augmented_grid(
    metadata: schema.DatasetMetadata, train: dict[int, list[Shown]], per_class: int, size: tuple[int, int], seed: int
) -> bytes:
    """PNG: the training images of the examples grid, as the model sees them."""
    examples = [e for shown in train.values() for e in shown]
    views = iter(model_view(examples, metadata, size, seed)) if examples else iter(())
    rows = [(metadata.class_names[label], [(e.filename, next(views)) for e in shown]) for label, shown in train.items()]
    # Many classes wrap into panels side by side, so that the figure stays near square.
    panels = max(1, round(math.sqrt(len(rows) / per_class)))
    per_panel = math.ceil(len(rows) / panels)
    figure = _figure(per_panel, per_class, panels=panels)
    policy = ", ".join(f"{k}={v}" for k, v in metadata.augmentation.to_dict().items() if v) or "none"
    _title(
        figure,
        f"train as the model sees it: resized to {size[0]}x{size[1]}, augmented (seed {seed})\npolicy: {policy}",
        fontsize=10,
    )
    for i, panel in enumerate(figure.subfigures(1, panels, squeeze=False)[0]):
        _draw_rows(panel, rows[i * per_panel : (i + 1) * per_panel], per_class, per_panel)
    return _png(figure)


def augmented_path(output: str) -> str:
    stem, extension = posixpath.splitext(output)
    return f"{stem}{AUGMENTED_SUFFIX}{extension or '.png'}"


def show(
    data_dir: str, *, per_class: int = 4, output: str = "", image_size: int = 0, seed: int = 0, max_classes: int = 10
) -> tuple[str, str | None]:
    """Writes the two grids (the second only when there is a train split); returns their paths. UserError for a
    directory that holds no image dataset."""
    if per_class < 1 or max_classes < 1 or image_size < 0:
        raise options.UserError("--per_class and --max_classes must be at least 1, --image_size at least 0")
    try:
        metadata = schema.DatasetMetadata.read(data_dir)
    except (FileNotFoundError, schema.MetadataError) as e:
        raise options.UserError(str(e)) from None
    if metadata.image is None:
        raise options.UserError(
            f"--data_dir={data_dir} holds features of a frozen {metadata.features and metadata.features.base_model} "
            f"base, not images: show the image dataset they were extracted from (--data_dir="
            f"{metadata.source.get('input')})"
        )
    labels = list(range(min(max_classes, len(metadata.class_names))))
    if len(labels) < len(metadata.class_names):
        _log.info("showing the first %d of %d classes (--max_classes)", len(labels), len(metadata.class_names))
    known = [split for split in schema.SPLIT_ORDER if split in metadata.splits]
    splits = [s for s in known + sorted(set(metadata.splits) - set(known)) if metadata.splits[s].num_examples]
    picked = {split: pick_examples(data_dir, metadata, split, per_class, labels) for split in splits}
    output = output or f"{metadata.dataset}_examples.png"
    with write_whole(output) as f:
        f.write(examples_grid(data_dir, metadata, picked, per_class))
    _log.info("wrote %s", output)
    if "train" not in picked:
        _log.info("no train split: no augmented grid")
        return output, None
    first = next((e for shown in picked["train"].values() for e in shown), None)
    size = training_size(metadata, first, image_size)
    second = augmented_path(output)
    with write_whole(second) as f:
        f.write(augmented_grid(metadata, picked["train"], per_class, size, seed))
    _log.info("wrote %s", second)
    return output, second


def _define_flags() -> None:
    """Defined only when this module runs as the command: data_prep.build's flags share some names."""
    flags.DEFINE_string("data_dir", None, "The image dataset to show (built by data_prep.build; local or gs://).")
    flags.DEFINE_integer("per_class", 4, "Examples shown per class in each split.")
    flags.DEFINE_string(
        "output",
        "",
        "PNG to write (local or gs://); default <dataset>_examples.png here. The model's view goes beside it, with "
        f"{AUGMENTED_SUFFIX} before the extension.",
    )
    flags.DEFINE_integer(
        "image_size",
        0,
        "Side the training images are resized to before augmentation, as the trainer's config.image_size; 0: the "
        "dataset's --image_size (or, for datasets stored at their original size, that size).",
    )
    flags.DEFINE_integer("seed", 0, "Seed of the augmentation, as the trainer's config.seed.")
    flags.DEFINE_integer("max_classes", 10, "Show the first N classes (by label) of datasets with more.")


def _main(argv: Sequence[str]) -> None:
    if argv[1:]:
        raise options.UserError(f"unknown flag(s): {' '.join(argv[1:])}")
    f = flags.FLAGS
    if not f.data_dir:
        raise options.UserError("--data_dir is required")
    show(
        f.data_dir,
        per_class=f.per_class,
        output=f.output,
        image_size=f.image_size,
        seed=f.seed,
        max_classes=f.max_classes,
    )


main = cli.command(_main)

if __name__ == "__main__":
    _define_flags()
    cli.run(main)
