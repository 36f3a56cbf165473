"""Export for serving: a SavedModel that classifies encoded images, and the Keras model file.

  model_dir/export/saved_model/  signature `serving_default`:
                                   image_bytes  string [B]: encoded JPEG, PNG, GIF, BMP or WebP files (B may be 0)
                                 ->probabilities float32 [B, K]; classes string [B, K] (the class names);
                                   top_class string [B]; top_probability float32 [B]
  model_dir/export/model.keras   the Keras model itself (takes images normalized as in training)

The signature decodes, resizes and normalizes with the input pipeline's own
functions, so a served image is prepared as a training image is after data_prep.
A head trained on a feature dataset is exported as the image classifier it stands
for: vgg16_transfer with the base the features came from (trainer/features.py), so
its export too takes image bytes, prepared as extraction prepared them.
(data_prep's offline resize, antialiased, is not repeated: an image much larger
than image_size is squashed to it in one bilinear step.) Outputs are float32 and
per class whatever the model's head or dtype policy. The input is named
`image_bytes` because Vertex AI / AI Platform base64-decode JSON inputs whose name
ends in `_bytes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import keras
import tensorflow as tf
from absl import logging

from trainer import features, input_pipeline, models, predict

EXPORT_SUBDIR = "export"
SAVED_MODEL_SUBDIR = "saved_model"
KERAS_FILE = "model.keras"


def serving_function(
    model: keras.Model,
    *,
    class_names: Sequence[str],
    image_size: tuple[int, int],
    channels: int,
    normalize: Callable[[tf.Tensor], tf.Tensor],
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Encoded images [B] -> the output dict described in the module docstring."""
    height, width = (int(n) for n in image_size)
    names = tf.constant(list(class_names))

    def classify(image_bytes: tf.Tensor) -> tf.Tensor:
        images = tf.map_fn(
            lambda encoded: input_pipeline.decode_resize(encoded, channels, height, width),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.uint8),
        )
        return models.class_probabilities(model(normalize(images), training=False))

    def serve(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # A request of no images never reaches the model: oneDNN's convolution mis-shapes an empty batch.
        probabilities = tf.cond(
            tf.size(image_bytes) > 0, lambda: classify(image_bytes), lambda: tf.zeros([0, len(class_names)])
        )
        top = tf.argmax(probabilities, axis=-1)
        return {
            predict.PROBABILITIES: probabilities,
            predict.CLASSES: tf.broadcast_to(names, tf.shape(probabilities)),
            predict.TOP_CLASS: tf.gather(names, top),
            predict.TOP_PROBABILITY: tf.reduce_max(probabilities, axis=-1),
        }

    return serve


def export_model(
    model: keras.Model,
    export_dir: str,
    info: input_pipeline.DatasetInfo,
    image_size: tuple[int, int],
    normalization: str,
) -> str:
    """Writes `export_dir`/saved_model (for `info`'s images and classes) and `export_dir`/model.keras.

    For a feature dataset, `model` is the head and both files hold the image classifier (features.classifier).
    Returns the SavedModel's path. Call on the chief only: reading the model's
    (mirrored) variables needs no other worker.
    """
    units = models.head_units(info.num_classes)
    if model.output_shape[-1] != units:
        raise ValueError(
            f"model {model.name} has {model.output_shape[-1]} outputs, dataset {info.data_dir} has "
            f"{info.num_classes} classes (a model for it has {units})."
        )
    if info.metadata.features is not None:
        input_pipeline.check_feature_images(info, image_size, normalization)
        model = features.classifier(model, info)
    serve = serving_function(
        model,
        class_names=info.class_names,
        image_size=image_size,
        channels=input_pipeline.image_channels(info),
        normalize=input_pipeline.make_normalizer(info, normalization),
    )
    # No archive.track(model): the endpoint tracks the variables it uses, and tracking the model too stores every
    # weight twice (keras-team/keras#23553: a 2x SavedModel and 2x memory wherever it is loaded).
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        predict.SIGNATURE, serve, input_signature=[tf.TensorSpec([None], tf.string, name=predict.INPUT)]
    )
    saved_model_dir = tf.io.gfile.join(export_dir, SAVED_MODEL_SUBDIR)
    with _absl_level_kept():
        archive.write_out(saved_model_dir, verbose=False)
    model.save(tf.io.gfile.join(export_dir, KERAS_FILE))
    return saved_model_dir


@contextlib.contextmanager
def _absl_level_kept() -> Iterator[None]:
    """TensorFlow's SavedModel writer (AutoTrackable._trackable_children) sets absl's verbosity to FATAL and then to
    the --verbosity flag's value, which outside absl.app.run (tests, notebooks) is WARNING: every INFO line after an
    export, the one saying it was exported included, would be lost."""
    logger = logging.get_absl_logger()
    level = logger.level
    try:
        yield
    finally:
        logger.setLevel(level)
