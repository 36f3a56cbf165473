"""usage: python -m trainer.predict --model=RUN/export/saved_model IMAGE_OR_FOLDER... [--top_k=3] [--output=json]
Classifies image files with a model exported by training (installed as imgcls-predict too).

Needs only TensorFlow and the export. In Python: `trainer.load_export(path)` (trainer/api.py).

  python -m trainer.predict --model=RUN/export/saved_model cat.jpg dog.png photos/ [--top_k=3] [--output=json]

A folder stands for every file under it, recursively, in sorted order, that data_prep
would read: junk names (Thumbs.db, .DS_Store, ._ files), hidden files and folders,
and entries that are not regular files are left out; links to folders are not followed.
Prints `FILE: CLASS PROBABILITY, ...` per image, most probable first, or with
--output=json one JSON object per line and file: `{"file": ..., "class": ...,
"probability": ..., "top_k": [{"class": ..., "probability": ...}, ...]}`, or
`{"file": ..., "error": ...}`. A file that cannot be read or decoded also gets one
`error: FILE: reason` line on stderr; the other files are still classified, and the
exit status is 1.

This module also names the serving signature's inputs and outputs (trainer.export
writes them), so that it imports nothing of the training code.
"""

from __future__ import annotations

import json
import posixpath
import sys
from collections.abc import Callable, Iterator, Sequence

import fsspec
import numpy as np
import tensorflow as tf
from absl import app, flags

from data_prep import logs, walk

SIGNATURE = "serving_default"
INPUT = "image_bytes"
PROBABILITIES = "probabilities"
CLASSES = "classes"
TOP_CLASS = "top_class"
TOP_PROBABILITY = "top_probability"

Signature = Callable[..., dict[str, tf.Tensor]]
Prediction = list[tuple[str, float]]  # (class name, probability), most probable first


def load(model_path: str) -> Signature:
    """The serving signature of an export; a clear error if `model_path` is not one."""
    if not tf.io.gfile.exists(tf.io.gfile.join(model_path, "saved_model.pb")):
        raise FileNotFoundError(
            f"--model={model_path}: no saved_model.pb there; pass the export/saved_model "
            "directory of a training run (model_dir/export/saved_model)."
        )
    signatures = tf.saved_model.load(model_path).signatures
    signature = signatures.get(SIGNATURE)
    if signature is None or INPUT not in signature.structured_input_signature[1]:
        raise ValueError(f"--model={model_path}: not a trainer export (no {SIGNATURE} signature taking {INPUT}).")
    return signature


def classify(signature: Signature, encoded: bytes, top_k: int) -> Prediction:
    """The `top_k` most probable classes of one encoded image; ValueError if it does not decode."""
    try:
        outputs = signature(**{INPUT: tf.constant([encoded])})
    except tf.errors.InvalidArgumentError as e:
        raise ValueError("cannot be decoded: not an image (JPEG, PNG, GIF, BMP or WebP), or a truncated one") from e
    probabilities = outputs[PROBABILITIES].numpy()[0]
    names = [name.decode() for name in outputs[CLASSES].numpy()[0]]
    order = np.argsort(-probabilities, kind="stable")[:top_k]
    return [(names[i], float(probabilities[i])) for i in order]


def image_files(paths: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """Each path, or for a folder each file under it (sorted) that data_prep would read; with an error or None."""
    for path in paths:
        fs, root = fsspec.core.url_to_fs(path)
        if not fs.isdir(root):
            yield path, None
            continue
        relpaths, special, _ = walk.find(fs, root)
        found = [r for r in relpaths if not walk.skip_reason(r, special)]
        if not found:
            yield path, "a folder with no file to classify (junk and special files aside)"
        for relpath in found:
            yield posixpath.join(path, relpath), None


def classify_files(
    signature: Signature, paths: Sequence[str], top_k: int
) -> Iterator[tuple[str, Prediction | None, str | None]]:
    """(path, prediction, None) for each file that could be classified, (path, None, reason) for each that could
    not; folders are expanded (`image_files`), and each file is yielded as soon as it is classified."""
    for path, error in image_files(paths):
        if error:
            yield path, None, error
            continue
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                encoded = f.read()
            yield path, classify(signature, encoded, top_k), None
        except tf.errors.NotFoundError:
            yield path, None, "no such file"
        except (tf.errors.OpError, OSError) as e:
            yield path, None, f"cannot read it ({str(e).splitlines()[0]})"
        except ValueError as e:
            yield path, None, str(e)


def format_prediction(path: str, prediction: Prediction) -> str:
    return f"{path}: " + ", ".join(f"{name} {probability:.4f}" for name, probability in prediction)


def json_line(path: str, prediction: Prediction | None, error: str | None) -> str:
    """One --output=json line: the file's most probable class and the --top_k list, or why it has none."""
    if prediction is None:
        return json.dumps({"file": path, "error": error})
    (top, probability), top_k = prediction[0], [{"class": c, "probability": p} for c, p in prediction]
    return json.dumps({"file": path, "class": top, "probability": probability, "top_k": top_k})


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_string(
        "model", None, "The export/saved_model directory of a training run.", flag_values=flag_values, required=True
    )
    flags.DEFINE_integer("top_k", 3, "Classes printed per image.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_enum(
        "output",
        "text",
        ["text", "json"],
        "text: `FILE: CLASS PROBABILITY, ...` lines; json: one JSON object per line and file (file, class, "
        "probability, top_k; or file, error). Folders are read recursively (see the usage above).",
        flag_values=flag_values,
    )


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image files or folders after the flags.")
    try:
        signature = load(flags.FLAGS.model)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    failed = False
    for path, prediction, error in classify_files(signature, paths, flags.FLAGS.top_k):
        if error:
            failed = True
            print(f"error: {path}: {error}", file=sys.stderr, flush=True)
        if flags.FLAGS.output == "json":
            print(json_line(path, prediction, error), flush=True)
        elif prediction is not None:
            print(format_prediction(path, prediction), flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=logs.parse_all_flags)
