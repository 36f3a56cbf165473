"""The serving export (encoded images in, per-class probabilities out) and the prediction CLI."""

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import dataset_metadata
from PIL import Image

from data_prep import schema
from trainer import export, input_pipeline, models, predict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


@pytest.fixture
def policy():
    """Sets a Keras dtype policy for one test and restores float32 after it."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def _info(class_names, channels=3, statistics=None) -> input_pipeline.DatasetInfo:
    """What export needs of a dataset (classes, channels, statistics), without writing one."""
    return input_pipeline.DatasetInfo(
        "in-memory", dataset_metadata(class_names, channels=channels, statistics=statistics)
    )


def _pixels(seed: int, height: int, width: int, channels: int) -> np.ndarray:
    """Smooth random images (JPEG keeps them close) with enough contrast to move the model's outputs."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, channels), dtype=np.uint8)
    image = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse).resize((width, height))
    return np.asarray(image).reshape(height, width, channels)


def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def _decode_png(encoded: bytes, channels: int) -> np.ndarray:
    """An independent decoder (PIL) for the expected values."""
    image = Image.open(io.BytesIO(encoded)).convert("L" if channels == 1 else "RGB")
    return np.asarray(image).reshape(image.height, image.width, channels)


def _decode_jpeg(encoded: bytes, channels: int) -> np.ndarray:
    """TensorFlow's JPEG decoder, as in training: its default (fast) IDCT differs from PIL's by up to 3 levels."""
    return tf.io.decode_jpeg(encoded, channels=channels).numpy()


@pytest.mark.parametrize(
    "model_name,class_names,channels,normalization,precision",
    [
        ("lenet5", ("cat", "dog"), 3, "unit", "float32"),  # One sigmoid unit.
        ("mnist_cnn", ("zero", "one", "two"), 1, "dataset", "mixed_float16"),  # Softmax, grey, float16 compute.
        ("lenet5", ("cat", "dog"), 3, "dataset", "mixed_bfloat16"),  # What `auto` trains on CPUs with AMX.
    ],
)
def test_serving_signature_matches_the_keras_model_on_encoded_images(
    tmp_path, policy, model_name, class_names, channels, normalization, precision
):
    policy(precision)
    info = _info(
        class_names,
        channels,
        statistics=schema.Statistics(
            split="train",
            mean=(120.0,) * channels,
            std=(60.0,) * channels,
            min=(0.0,) * channels,
            max=(255.0,) * channels,
            num_pixels=1,
        ),
    )
    model = models.build_model(model_name, (SIZE, SIZE, channels), len(class_names))
    saved_model = export.export_model(model, str(tmp_path / "export"), info, (SIZE, SIZE), normalization)
    assert saved_model == str(tmp_path / "export" / export.SAVED_MODEL_SUBDIR)
    stored = tf.train.load_checkpoint(os.path.join(saved_model, "variables", "variables"))
    assert (
        sum(
            np.prod(shape)
            for name, shape in stored.get_variable_to_shape_map().items()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
        )
        == model.count_params()
    )  # Each weight once.

    encoded = [
        _encode(_pixels(0, SIZE, SIZE, channels), "PNG"),
        _encode(_pixels(1, SIZE, SIZE, channels), "JPEG"),
        _encode(_pixels(2, 45, 60, channels), "PNG"),
    ]  # Resized in the signature.
    outputs = {k: v.numpy() for k, v in predict.load(saved_model)(**{predict.INPUT: tf.constant(encoded)}).items()}

    decoded = np.stack(
        [
            _decode_png(encoded[0], channels),
            _decode_jpeg(encoded[1], channels),
            input_pipeline.decode_resize(encoded[2], channels, SIZE, SIZE).numpy(),
        ]
    )
    normalized = input_pipeline.make_normalizer(info, normalization)(decoded)
    keras_outputs = np.asarray(model(normalized, training=False), np.float32)
    expected = np.concatenate([1.0 - keras_outputs, keras_outputs], -1) if len(class_names) == 2 else keras_outputs
    probabilities = outputs[predict.PROBABILITIES]
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, len(class_names))
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3 if precision == "mixed_float16" else 1e-6)
    assert outputs[predict.CLASSES].tolist() == [[name.encode() for name in class_names]] * 3
    assert outputs[predict.TOP_CLASS].tolist() == [class_names[i].encode() for i in expected.argmax(-1)]
    np.testing.assert_allclose(outputs[predict.TOP_PROBABILITY], expected.max(-1), atol=1e-6)

    reloaded = keras.models.load_model(tmp_path / "export" / export.KERAS_FILE)
    np.testing.assert_array_equal(np.asarray(reloaded(normalized, training=False)), keras_outputs)

    empty = predict.load(saved_model)(**{predict.INPUT: tf.constant([], tf.string)})
    assert {k: (v.shape.as_list(), v.dtype) for k, v in empty.items()} == {
        predict.PROBABILITIES: ([0, len(class_names)], tf.float32),
        predict.CLASSES: ([0, len(class_names)], tf.string),
        predict.TOP_CLASS: ([0], tf.string),
        predict.TOP_PROBABILITY: ([0], tf.float32),
    }


class _FailsOnEmptyBatches(keras.Model):
    """A classifier that fails when run on an empty batch, as a convolution does under oneDNN."""

    def __init__(self):
        super().__init__(name="fails_on_empty_batches")
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, images):
        tf.debugging.assert_positive(tf.shape(images)[0], message="the model ran on an empty batch")
        return self.head(tf.reshape(images, [-1, SIZE * SIZE * 3]))


def test_serving_never_runs_the_model_on_an_empty_request():
    model = _FailsOnEmptyBatches()
    model(tf.zeros([1, SIZE, SIZE, 3]))
    serve = tf.function(
        export.serving_function(
            model,
            class_names="abc",
            image_size=(SIZE, SIZE),
            channels=3,
            normalize=lambda images: tf.cast(images, tf.float32),
        )
    )
    assert serve(tf.constant([], tf.string))[predict.PROBABILITIES].shape == (0, 3)
    one = serve(tf.constant([_encode(_pixels(0, SIZE, SIZE, 3), "PNG")]))
    assert one[predict.PROBABILITIES].shape == (1, 3) and one[predict.TOP_CLASS].shape == (1,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the model ran on an empty batch"):
        model(tf.zeros([0, SIZE, SIZE, 3]))  # The guard above is live.


def test_export_refuses_a_model_of_another_dataset(tmp_path):
    model = models.build_model("lenet5", (SIZE, SIZE, 3), 3)
    with pytest.raises(ValueError, match="3 outputs, dataset in-memory has 5 classes"):
        export.export_model(model, str(tmp_path), _info("abcde"), (SIZE, SIZE), "unit")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-class export and a folder with two images and three files that are not."""
    root = tmp_path_factory.mktemp("predict")
    model = models.build_model("lenet5", (SIZE, SIZE, 3), 3)
    saved_model = export.export_model(model, str(root / "export"), _info(("a", "b", "c")), (SIZE, SIZE), "unit")
    files = {
        "photo.jpg": _encode(_pixels(3, 50, 40, 3), "JPEG"),
        "drawing.png": _encode(_pixels(4, 20, 20, 3), "PNG"),
        "notes.jpg": b"shopping list: milk, eggs",
        "empty.png": b"",
        "cut.png": _encode(_pixels(5, 20, 20, 3), "PNG")[:60],
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return saved_model, root


@pytest.fixture(scope="module")
def album(exported):
    """A nested folder as users have them: images, junk data_prep skips, files that are not images, a named pipe
    and links. Returns (folder, its files predict reads, in order)."""
    _, root = exported
    album = root / "album"
    for relpath, source in {
        "cats/photo.jpg": "photo.jpg",
        "cats/deeper/drawing.png": "drawing.png",
        "cats/notes.jpg": "notes.jpg",
        "dogs/cut.png": "cut.png",
        "Thumbs.db": "notes.jpg",
        "cats/._photo.jpg": "photo.jpg",
        ".thumbnails/photo.jpg": "photo.jpg",  # A hidden folder hides what it holds.
    }.items():
        (album / relpath).parent.mkdir(parents=True, exist_ok=True)
        (album / relpath).write_bytes((root / source).read_bytes())
    os.mkfifo(album / "dogs" / "pipe.jpg")  # Opening it would block forever.
    (album / "dogs" / "up").symlink_to("..")  # A link to a folder: not followed (it would loop).
    (album / "dogs" / "photo_link.jpg").symlink_to(album / "cats" / "photo.jpg")
    read = ["cats/deeper/drawing.png", "cats/notes.jpg", "cats/photo.jpg", "dogs/cut.png", "dogs/photo_link.jpg"]
    return album, [str(album / relpath) for relpath in read]


def test_predict_reports_top_classes_and_names_each_bad_file(exported):
    saved_model, root = exported
    signature = predict.load(saved_model)
    paths = [
        str(root / name) for name in ("photo.jpg", "notes.jpg", "drawing.png", "missing.jpg", "empty.png", "cut.png")
    ]
    results = list(predict.classify_files(signature, paths, top_k=2))

    assert [path for path, _, _ in results] == paths
    predictions = {path: prediction for path, prediction, error in results if error is None}
    errors = {path: error for path, prediction, error in results if prediction is None}
    assert set(predictions) == {paths[0], paths[2]}
    for path, prediction in predictions.items():
        with open(path, "rb") as f:
            probabilities = signature(**{predict.INPUT: tf.constant([f.read()])})[predict.PROBABILITIES].numpy()[0]
        best_two = np.argsort(-probabilities)[:2]
        assert [name for name, _ in prediction] == ["abc"[i] for i in best_two]
        np.testing.assert_allclose([p for _, p in prediction], probabilities[best_two])
    assert set(errors) == {paths[1], paths[3], paths[4], paths[5]}
    assert errors[paths[3]] == "no such file"
    assert all(errors[paths[i]].startswith("cannot be decoded: not an image") for i in (1, 4, 5))


def test_a_folder_stands_for_the_files_under_it_that_data_prep_would_read(exported, album):
    saved_model, root = exported
    folder, read = album
    signature = predict.load(saved_model)
    results = list(predict.classify_files(signature, [str(folder), str(root / "photo.jpg")], top_k=3))
    assert [path for path, _, _ in results] == [*read, str(root / "photo.jpg")]
    failed = {path for path, prediction, error in results if prediction is None and error}
    assert failed == {str(folder / "cats/notes.jpg"), str(folder / "dogs/cut.png")}
    by_path = {path: prediction for path, prediction, _ in results}
    assert by_path[str(folder / "dogs/photo_link.jpg")] == by_path[str(root / "photo.jpg")]
    assert by_path[str(folder / "cats/photo.jpg")] == by_path[str(root / "photo.jpg")]
    (empty := root / "empty_folder" / ".git").mkdir(parents=True)
    (empty / "HEAD").write_text("ref: refs/heads/main")
    assert list(predict.classify_files(signature, [str(empty.parent)], top_k=1)) == [
        (str(empty.parent), None, "a folder with no file to classify (junk and special files aside)")
    ]


def test_predict_refuses_a_directory_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved_model.pb there"):
        predict.load(str(tmp_path))


def _predict(saved_model, *args):
    return subprocess.run(
        [sys.executable, "-m", "trainer.predict", f"--model={saved_model}", "--top_k=3", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


NOT_AN_IMAGE = "cannot be decoded: not an image (JPEG, PNG, GIF, BMP or WebP), or a truncated one"


def test_predict_command_line_in_text(exported, album):
    saved_model, root = exported
    folder, read = album
    result = _predict(saved_model, str(root / "notes.jpg"), str(folder))
    assert result.returncode == 1
    classified = [path for path in read if not path.endswith(("notes.jpg", "cut.png"))]
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == classified
    for line in result.stdout.splitlines():
        assert sorted(entry.split()[0] for entry in line.split(": ")[1].split(", ")) == ["a", "b", "c"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {root / 'notes.jpg'}: {NOT_AN_IMAGE}",
        f"error: {folder / 'cats/notes.jpg'}: {NOT_AN_IMAGE}",
        f"error: {folder / 'dogs/cut.png'}: {NOT_AN_IMAGE}",
    ]


def test_predict_command_line_in_json_lines(exported, album):
    saved_model, root = exported
    folder, read = album
    result = _predict(saved_model, "--output=json", str(folder))
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == read, "one line per file, in order, errors included"
    for line in lines:
        if line["file"].endswith(("notes.jpg", "cut.png")):
            assert line == {"file": line["file"], "error": NOT_AN_IMAGE}
        else:
            assert list(line) == ["file", "class", "probability", "top_k"]
            assert sorted(p["class"] for p in line["top_k"]) == ["a", "b", "c"]
            assert line["top_k"][0] == {"class": line["class"], "probability": line["probability"]}
            probabilities = [p["probability"] for p in line["top_k"]]
            assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-5
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 2

    clean = _predict(saved_model, "--output=json", str(folder / "cats" / "deeper"), str(root / "photo.jpg"))
    assert clean.returncode == 0, clean.stderr
    assert [json.loads(line)["file"] for line in clean.stdout.splitlines()] == [read[0], str(root / "photo.jpg")]
