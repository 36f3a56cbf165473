"""TensorBoard summaries under model_dir/tensorboard/{train,validation}; the chief writes, others no-op."""

from __future__ import annotations

import tensorflow as tf

SUMMARY_SUBDIR = "tensorboard"
MAX_IMAGES = 6


class Summaries:
    def __init__(self, model_dir: str, enabled: bool) -> None:
        if enabled:
            root = tf.io.gfile.join(model_dir, SUMMARY_SUBDIR)
            self._train = tf.summary.create_file_writer(tf.io.gfile.join(root, "train"))
            self._validation = tf.summary.create_file_writer(tf.io.gfile.join(root, "validation"))
        else:
            self._train = self._validation = tf.summary.create_noop_writer()

    def train(self, step: int, scalars: dict[str, float]) -> None:
        self._scalars(self._train, step, scalars)

    def validation(self, step: int, scalars: dict[str, float]) -> None:
        self._scalars(self._validation, step, scalars)

    def images(self, step: int, images: tf.Tensor, normalization: str) -> None:
        """A few augmented training images, min-max scaled to 0..1 per image (whatever the normalization)."""
        images = tf.cast(images[:MAX_IMAGES], tf.float32)
        if normalization == "vgg16":  # keras.applications.vgg16.preprocess_input feeds BGR.
            images = images[..., ::-1]
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        with self._train.as_default():
            tf.summary.image(
                "augmented_inputs", (images - low) / tf.maximum(high - low, 1e-6), step=step, max_outputs=MAX_IMAGES
            )

    def flush(self) -> None:
        self._train.flush()
        self._validation.flush()

    @staticmethod
    def _scalars(writer, step: int, scalars: dict[str, float]) -> None:
        with writer.as_default():
            for name, value in scalars.items():
                tf.summary.scalar(name, value, step=step)
