"""Model architectures, output heads, VGG16 weights handling and (un)freezing."""

import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format  # Writes the Keras 2 .h5 layout of the official VGG16 file.

from trainer import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def mixed_float16():
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy("float32")


# Parameter counts published with the reference architectures.
@pytest.mark.parametrize(
    "name,input_shape,num_classes,params",
    [
        (
            "lenet5",
            (28, 28, 1),
            10,
            61_706,
        ),  # LeCun et al. 1998: ~60k parameters; 61,706 with a 28x28 'same' first conv.
        ("mnist_cnn", (28, 28, 1), 10, 34_826),  # keras.io Simple MNIST convnet summary.
        ("catsdogs_cnn", (150, 150, 3), 2, 3_453_121),  # Chollet 5.2 model.summary().
    ],
)
def test_reference_parameter_counts(name, input_shape, num_classes, params):
    assert models.build_model(name, input_shape, num_classes).count_params() == params


@pytest.mark.parametrize(
    "name,input_shape",
    [
        ("lenet5", (28, 28, 1)),
        ("mnist_cnn", (28, 28, 1)),
        ("separable_cnn", (28, 28, 1)),
        ("cifar_cnn", (32, 32, 3)),
        ("catsdogs_cnn", (150, 150, 3)),
    ],
)
@pytest.mark.parametrize("num_classes", [2, 10])
def test_output_head_is_float32_sigmoid_or_softmax(mixed_float16, name, input_shape, num_classes):
    model = models.build_model(name, input_shape, num_classes)
    head = model.layers[-1]
    assert head.dtype_policy.compute_dtype == "float32"
    assert model.layers[0].dtype_policy.compute_dtype == "float16"
    probs = np.asarray(model(np.random.default_rng(0).random((3, *input_shape), np.float32)))
    assert probs.dtype == np.float32
    if num_classes == 2:
        assert probs.shape == (3, 1) and models.is_binary(model)
        assert head.activation is keras.activations.sigmoid
    else:
        assert probs.shape == (3, num_classes) and not models.is_binary(model)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_batch_norm_is_synchronized_across_replicas():
    assert models.has_synchronized_batch_norm(models.build_model("cifar_cnn", (32, 32, 3), 10))
    assert models.has_synchronized_batch_norm(models.build_model("separable_cnn", (28, 28, 1), 10))
    assert not models.has_synchronized_batch_norm(models.build_model("lenet5", (28, 28, 1), 10))


def test_vgg16_transfer_matches_chollet_and_freezes_by_phase():
    model = models.build_model("vgg16_transfer", (150, 150, 3), 2, weights="none")
    assert model.count_params() == 16_812_353  # Chollet 5.3: conv base + Flatten-Dense(256)-Dense(1).
    base = model.get_layer(models.VGG16_BASE)

    def trained_base_layers():
        return {layer.name for layer in base.layers if layer.trainable_weights}

    models.set_base_trainable(model, None)
    assert trained_base_layers() == set()
    assert len(model.trainable_variables) == 4  # Dense(256) and the output layer.
    models.set_base_trainable(model, "block5_conv1")
    assert trained_base_layers() == {"block5_conv1", "block5_conv2", "block5_conv3"}
    assert len(model.trainable_variables) == 10
    models.set_base_trainable(model, models.WHOLE_BASE)
    assert len(trained_base_layers()) == 13 and len(model.trainable_variables) == 30
    with pytest.raises(ValueError, match="block9_conv1"):
        models.set_base_trainable(model, "block9_conv1")


def test_vgg16_head_is_the_transfer_models_head_on_features():
    head = models.build_model("vgg16_head", (4, 4, 512), 2)
    assert head.count_params() == 2_097_665  # Chollet 5.3, fast feature extraction: Dense(256) on 4*4*512 + Dense(1).
    transfer = models.build_model("vgg16_transfer", (150, 150, 3), 2, weights="none")
    assert [layer.name for layer in head.layers[1:]] == [layer.name for layer in transfer.layers[2:]]
    assert [layer.name for layer in head.layers if layer.weights] == list(models.HEAD_LAYERS)
    models.copy_head(head, transfer)
    for name in models.HEAD_LAYERS:
        for a, b in zip(head.get_layer(name).weights, transfer.get_layer(name).weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match=r"head layer head_dense of vgg16_head has weights of shapes \[\(512, 256\)"):
        models.copy_head(models.build_model("vgg16_head", (1, 1, 512), 2), transfer)


@pytest.mark.parametrize("file_format", ["keras3", "legacy_h5"])
def test_vgg16_loads_local_weights_file(tmp_path, file_format):
    keras.utils.set_random_seed(1)
    source = models.build_model("vgg16_transfer", (32, 32, 3), 2, weights="none")
    base = source.get_layer(models.VGG16_BASE)
    if file_format == "keras3":
        path = str(tmp_path / "vgg16_notop.weights.h5")
        base.save_weights(path)
    else:  # The format of the official download the offline error names.
        path = str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, base)
    keras.utils.set_random_seed(2)
    loaded = models.build_model("vgg16_transfer", (32, 32, 3), 2, weights=path)
    for a, b in zip(
        source.get_layer(models.VGG16_BASE).weights, loaded.get_layer(models.VGG16_BASE).weights, strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_model_arguments_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.build_model("vgg16_transfer", (32, 32, 3), 2, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="RGB"):
        models.build_model("vgg16_transfer", (32, 32, 1), 2, weights="none")
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("resnet", (32, 32, 3), 2)
    with pytest.raises(ValueError, match="from scratch"):
        models.build_model("lenet5", (28, 28, 1), 10, weights="imagenet")
    with pytest.raises(ValueError, match="at least 2"):
        models.build_model("lenet5", (28, 28, 1), 1)


@pytest.mark.slow
def test_missing_imagenet_weights_message_names_the_file(tmp_path):
    """Offline (a proxy on a closed port) with an empty Keras cache, as on this machine."""
    env = dict(
        os.environ,
        KERAS_HOME=str(tmp_path / "keras"),
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
        NO_PROXY="",
        PYTHONPATH=REPO,
    )
    code = (
        "from trainer import models\n"
        "try:\n"
        "    models.build_model('vgg16_transfer', (32, 32, 3), 2, weights='imagenet')\n"
        "except models.MissingWeightsError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    message = result.stdout
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert os.path.join(str(tmp_path / "keras"), "models", models.VGG16_NOTOP_WEIGHTS_FILE) in message
    assert "--config.model.weights=" in message


@pytest.mark.parametrize("size", [(32, 32), (150, 150), (224, 160), (75, 33)])
def test_the_vgg16_output_shape_is_the_built_bases(size):
    assert models.vgg16_output_shape(*size) == models.vgg16_base((*size, 3), weights=None).output_shape[1:]
