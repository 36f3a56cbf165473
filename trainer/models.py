"""Image classifiers: VGG16 transfer learning, its Dense head alone (vgg16_head, for feature datasets), the tutorial
CNNs, and the output head they all end in.

The output head is defined here once: a float32 output layer (so mixed precision keeps the loss in float32) of one
sigmoid unit for two classes, a softmax otherwise; `class_probabilities`, `predicted_class` and `per_example_loss` read
any model's outputs by that convention (training, evaluation and export use them). Models take images already
normalized by the input pipeline; vgg16_head takes a feature dataset's features. BatchNormalization is `synchronized`
(why: BUILD_NOTES.md, "The loop").
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras
import tensorflow as tf
from keras import layers

from trainer.errors import UserError

# The file keras.applications.VGG16(weights='imagenet', include_top=False) looks for in ~/.keras/models.
VGG16_NOTOP_WEIGHTS_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_WEIGHTS_URL = (
    f"https://storage.googleapis.com/tensorflow/keras-applications/vgg16/{VGG16_NOTOP_WEIGHTS_FILE}"
)
VGG16_NOTOP_WEIGHTS_MD5 = "6d6bbae143d832006294945121d1f1fc"  # keras.applications.vgg16's own check.
VGG16_BASE = "vgg16"  # Name of the pretrained base inside the transfer model.
WHOLE_BASE = "all"  # set_base_trainable: every base layer trains.
HEAD_MODEL = "vgg16_head"  # The transfer model's head alone, trained on a feature dataset of its base.
HEAD_LAYERS = ("head_dense", "predictions")  # The head's layers with weights, named alike in both models.
HEAD_DROPOUT = 0.5  # Chollet's; read when a head is built (a test sets 0 to compare two ways of training).


class MissingWeightsError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable (e.g. offline)."""


# The head: two classes are one sigmoid unit p, standing for the class probabilities (1-p, p); more are a softmax.
def head_units(num_classes: int) -> int:
    """Units of the output layer for `num_classes` classes."""
    if num_classes < 2:
        raise UserError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
    return 1 if num_classes == 2 else num_classes


def output_layer(num_classes: int) -> layers.Dense:
    units = head_units(num_classes)
    return layers.Dense(units, activation="sigmoid" if units == 1 else "softmax", dtype="float32", name="predictions")


def is_binary(model: keras.Model) -> bool:
    """Whether the model's head is one sigmoid unit (two classes)."""
    return model.output_shape[-1] == 1


def class_probabilities(outputs: tf.Tensor) -> tf.Tensor:
    """float32 [B, num_classes] from a model's outputs [B, units]."""
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape[-1] == 1:
        return tf.concat([1.0 - outputs, outputs], axis=-1)
    return outputs


def predicted_class(outputs: tf.Tensor) -> tf.Tensor:
    """int64 [B]: the most probable class; for one sigmoid unit, class 1 exactly when p > 0.5 (as the argmax of
    `class_probabilities` is)."""
    if outputs.shape[-1] == 1:
        return tf.cast(outputs[:, 0] > 0.5, tf.int64)
    return tf.argmax(outputs, axis=-1)


def per_example_loss(labels: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of each example [B] from integer labels [B] and the model's outputs [B, units]."""
    if outputs.shape[-1] == 1:
        return keras.losses.binary_crossentropy(tf.cast(labels, outputs.dtype)[:, None], outputs)
    return keras.losses.sparse_categorical_crossentropy(labels, outputs)


def vgg16_transfer(
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: str | None = "imagenet",
) -> keras.Model:
    """Chollet's VGG16 feature extraction model: frozen-able conv base, Flatten-Dense(256)-Dropout head.

    Expects `keras.applications.vgg16.preprocess_input` scaling (input pipeline
    normalization 'vgg16'). The base always runs in inference mode, so unfreezing
    part of it for fine-tuning never changes how its frozen layers compute.
    """
    if input_shape[-1] != 3:
        raise UserError(
            f"vgg16_transfer needs RGB input, got {input_shape[-1]} channels "
            "(use normalization='vgg16', which converts grey to RGB)."
        )
    base = vgg16_base(input_shape, weights)
    inputs = keras.Input(input_shape, name="images")
    return keras.Model(inputs, _head(base(inputs, training=False), num_classes), name="vgg16_transfer")


def vgg16_head(features_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """vgg16_transfer's head alone, on the base's outputs (a feature dataset): its layers have the transfer
    model's names, so its weights initialise that model's head (`copy_head`)."""
    inputs = keras.Input(features_shape, name="features")
    return keras.Model(inputs, _head(inputs, num_classes), name=HEAD_MODEL)


def _head(features: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    x = layers.Flatten(name="head_flatten")(features)
    x = layers.Dense(256, activation="relu", name="head_dense")(x)
    x = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(x)
    return output_layer(num_classes)(x)


def copy_head(source: keras.Model, target: keras.Model) -> None:
    """Sets `target`'s head weights (HEAD_LAYERS) to `source`'s; UserError naming a layer whose shapes differ."""
    for name in HEAD_LAYERS:
        values = source.get_layer(name).get_weights()
        layer = target.get_layer(name)
        shapes, expected = [v.shape for v in values], [tuple(w.shape) for w in layer.weights]
        if shapes != expected:
            raise UserError(
                f"head layer {name} of {source.name} has weights of shapes {shapes}, {target.name}'s {expected}: "
                "the head was trained on features of another shape (another base or input size)."
            )
        layer.set_weights(values)


def vgg16_base(input_shape: tuple[int, int, int], weights: str | None) -> keras.Model:
    """VGG16's convolutional base (no top) with `weights`: 'imagenet', a local weights file, or none (random)."""
    path = None if not weights or weights == "none" else vgg16_weights_file(weights)
    return keras.applications.VGG16(include_top=False, weights=path, input_shape=input_shape)


def vgg16_output_shape(height: int, width: int) -> tuple[int, int, int]:
    """The base's output shape for an input size, without building it: five 2x2 max-pools (floor) and 512 channels."""
    for _ in range(5):
        height, width = height // 2, width // 2
    return height, width, 512


def vgg16_weights_file(weights: str) -> str:
    """The local file VGG16 base weights come from: `weights` itself, or for 'imagenet' the no-top file in Keras's
    cache (downloaded there when online, as keras.applications does; a clear error offline)."""
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise FileNotFoundError(
                f"VGG16 weights file {weights} does not exist; give the path of a local .h5/.weights.h5 file, "
                "'imagenet' or 'none'."
            )
        return weights
    try:
        return keras.utils.get_file(
            VGG16_NOTOP_WEIGHTS_FILE, VGG16_NOTOP_WEIGHTS_URL, cache_subdir="models", file_hash=VGG16_NOTOP_WEIGHTS_MD5
        )
    except Exception as e:  # Keras raises a bare Exception when the download fails.
        keras_home = os.environ.get("KERAS_HOME", "~/.keras")
        raise MissingWeightsError(
            f"VGG16 ImageNet weights are not cached and could not be downloaded ({e}). Put "
            f"{VGG16_NOTOP_WEIGHTS_FILE} (from {VGG16_NOTOP_WEIGHTS_URL}) at "
            f"{os.path.join(keras_home, 'models', VGG16_NOTOP_WEIGHTS_FILE)}, or pass a local path with "
            f"--config.model.weights=/path/to/{VGG16_NOTOP_WEIGHTS_FILE}."
        ) from e


def is_transfer(model: keras.Model) -> bool:
    return any(layer.name == VGG16_BASE for layer in model.layers)


def set_base_trainable(model: keras.Model, unfreeze_from: str | None) -> None:
    """Trains the transfer model's base from layer `unfreeze_from` on (WHOLE_BASE: all of it; None: none).

    Takes effect for a train step built afterwards: rebuild the optimizer and step.
    """
    base = model.get_layer(VGG16_BASE)
    names = [layer.name for layer in base.layers]
    if unfreeze_from not in (None, WHOLE_BASE, *names):
        raise UserError(f"unfreeze_from={unfreeze_from!r} is not a layer of {base.name}; layers: {names}.")
    base.trainable = unfreeze_from is not None
    trainable = unfreeze_from == WHOLE_BASE
    for layer in base.layers:
        trainable = trainable or layer.name == unfreeze_from
        layer.trainable = trainable


def batch_norm() -> layers.BatchNormalization:
    return layers.BatchNormalization(synchronized=True)


def lenet5(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """LeCun et al. 1998 with ReLU: conv5(6)-pool-conv5(16)-pool-120-84."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(6, 5, padding="same", activation="relu"),
            layers.AveragePooling2D(2),
            layers.Conv2D(16, 5, activation="relu"),
            layers.AveragePooling2D(2),
            layers.Flatten(),
            layers.Dense(120, activation="relu"),
            layers.Dense(84, activation="relu"),
            output_layer(num_classes),
        ],
        name="lenet5",
    )


def mnist_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The Keras 'Simple MNIST convnet' example: two conv/pool blocks, dropout."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.5),
            output_layer(num_classes),
        ],
        name="mnist_cnn",
    )


def separable_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Depthwise-separable blocks at 32/64/128 filters; the stem is a plain Conv2D (few input channels)."""
    model = keras.Sequential(
        [keras.Input(input_shape), layers.Conv2D(32, 3, padding="same", activation="relu")], name="separable_cnn"
    )
    for filters in (32, 64, 128):
        model.add(layers.SeparableConv2D(filters, 3, padding="same", activation="relu"))
        model.add(batch_norm())
        model.add(layers.MaxPooling2D(2))
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dropout(0.3))
    model.add(output_layer(num_classes))
    return model


def cifar_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Three (conv-BN-ReLU x2, max-pool, dropout) blocks at 32/64/128 filters, then Dense(128)."""
    model = keras.Sequential([keras.Input(input_shape)], name="cifar_cnn")
    for filters, dropout in ((32, 0.2), (64, 0.3), (128, 0.4)):
        for _ in range(2):
            model.add(layers.Conv2D(filters, 3, padding="same", use_bias=False))
            model.add(batch_norm())
            model.add(layers.Activation("relu"))
        model.add(layers.MaxPooling2D(2))
        model.add(layers.Dropout(dropout))
    model.add(layers.Flatten())
    model.add(layers.Dense(128, activation="relu"))
    model.add(layers.Dropout(0.5))
    model.add(output_layer(num_classes))
    return model


def catsdogs_cnn(input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Chollet, Deep Learning with Python (1st ed.) 5.2: four conv/pool blocks from scratch, 150x150 input."""
    model = keras.Sequential([keras.Input(input_shape)], name="catsdogs_cnn")
    for filters in (32, 64, 128, 128):
        model.add(layers.Conv2D(filters, 3, activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    model.add(layers.Dropout(0.5))
    model.add(layers.Dense(512, activation="relu"))
    model.add(output_layer(num_classes))
    return model


SCRATCH_MODELS: dict[str, Callable[[tuple[int, int, int], int], keras.Model]] = {
    "lenet5": lenet5,
    "mnist_cnn": mnist_cnn,
    "separable_cnn": separable_cnn,
    "cifar_cnn": cifar_cnn,
    "catsdogs_cnn": catsdogs_cnn,
}
MODEL_NAMES = ("vgg16_transfer", HEAD_MODEL, *SCRATCH_MODELS)


def takes_features(name: str) -> bool:
    """Whether model `name` trains on a feature dataset (a frozen base's outputs) rather than on images."""
    return name == HEAD_MODEL


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    weights: str | None = None,
) -> keras.Model:
    """Builds model `name` (see MODEL_NAMES) for inputs of `input_shape` (images, or a feature dataset's features
    for vgg16_head); `weights` applies to vgg16_transfer only."""
    shape = tuple(int(n) for n in input_shape)
    if name == "vgg16_transfer":
        return vgg16_transfer((shape[0], shape[1], shape[2]), num_classes, weights)
    if name not in (HEAD_MODEL, *SCRATCH_MODELS):
        raise ValueError(f"unknown model {name!r} (config model.name); choose one of {MODEL_NAMES}.")
    if weights and weights != "none":
        raise ValueError(f"model {name} trains from scratch: config model.weights must be empty, got {weights!r}.")
    if name == HEAD_MODEL:
        return vgg16_head(shape, num_classes)
    return SCRATCH_MODELS[name]((shape[0], shape[1], shape[2]), num_classes)


def has_synchronized_batch_norm(model: keras.Model) -> bool:
    return any(
        isinstance(layer, layers.BatchNormalization)
        and layer.synchronized
        or isinstance(layer, keras.Model)
        and has_synchronized_batch_norm(layer)
        for layer in model.layers
    )
