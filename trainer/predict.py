"""usage: python -m trainer.predict --model=RUN/export/saved_model IMAGE... [--top_k=3]
Classifies image files with a model exported by training (installed as imgcls-predict too).

Needs only TensorFlow and the export. In Python: `trainer.load_export(path)` (trainer/api.py).

  python -m trainer.predict --model=RUN/export/saved_model cat.jpg dog.png [--top_k=3]

Prints `FILE: CLASS PROBABILITY, ...` per image, most probable first. A file that
cannot be read or decoded gets one `error: FILE: reason` line on stderr, the
other files are still classified, and the exit status is 1.

This module also names the serving signature's inputs and outputs (trainer.export
writes them), so that it imports nothing of the training code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags

from data_prep import logs

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


def classify_files(
    signature: Signature,
    paths: Sequence[str],
    top_k: int,
) -> tuple[dict[str, Prediction], dict[str, str]]:
    """Predictions of the files that could be classified, and the reason for each that could not."""
    predictions, errors = {}, {}
    for path in paths:
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                encoded = f.read()
            predictions[path] = classify(signature, encoded, top_k)
        except tf.errors.NotFoundError:
            errors[path] = "no such file"
        except (tf.errors.OpError, OSError) as e:
            errors[path] = f"cannot read it ({str(e).splitlines()[0]})"
        except ValueError as e:
            errors[path] = str(e)
    return predictions, errors


def format_prediction(path: str, prediction: Prediction) -> str:
    return f"{path}: " + ", ".join(f"{name} {probability:.4f}" for name, probability in prediction)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    flags.DEFINE_string(
        "model", None, "The export/saved_model directory of a training run.", flag_values=flag_values, required=True
    )
    flags.DEFINE_integer("top_k", 3, "Classes printed per image.", lower_bound=1, flag_values=flag_values)


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give one or more image files after the flags.")
    try:
        signature = load(flags.FLAGS.model)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    predictions, errors = classify_files(signature, paths, flags.FLAGS.top_k)
    for path in paths:
        if path in predictions:
            print(format_prediction(path, predictions[path]))
        else:
            print(f"error: {path}: {errors[path]}", file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=logs.parse_all_flags)
