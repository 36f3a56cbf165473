"""--mode=eval's report (checked against numpy on the same predictions), on one device and on 2 replicas."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import replica_mistakes
import tensorflow as tf
from conftest import build_folder
from multiworker_train import make_arrays, make_config, make_data
from PIL import Image

from configs import default
from data_prep import images, sample_data, schema
from trainer import evaluate, export, input_pipeline, models, predict, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_quietly(command: list[str]) -> None:
    """Runs a command from the repository (in its own process: 2 logical CPU devices), failing with its stderr."""
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _config(data_dir, model_dir, **overrides):
    config = default.get_config()
    config.update(
        {
            "data_dir": str(data_dir),
            "model_dir": str(model_dir),
            "strategy": "off",
            "image_size": (32, 32),
            "global_batch_size": 8,
            "epochs": 10,
            "steps_per_loop": 10,
            "mixed_precision": "float32",  # The reports are checked against numpy at float32's tolerances.
            **overrides,
        }
    )
    config.model.name = "lenet5"
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Generated cat/dog photos split train/test (23 test examples), lenet5 trained 10 epochs, then --mode=eval."""
    root = tmp_path_factory.mktemp("eval")
    sample_data.write_sample_folder(
        str(root / "raw" / "PetImages"), images_per_class=22, min_side=40, max_side=64, include_broken=False
    )
    data_dir, model_dir = root / "data", root / "run"
    build_folder(
        root / "raw",
        data_dir,
        dataset="imagefolder",
        split="train:50,test:50",
        image_options=images.ImageOptions(image_size=32, resize_policy="exact"),
    )
    train.run(_config(data_dir, model_dir, mode="train"))
    model, (record,) = train.run(_config(data_dir, model_dir, mode="eval"))
    return data_dir, model_dir, model, record


def _test_split(data_dir):
    """The test split as the evaluation reads it on one pipeline, in record order."""
    info = input_pipeline.open_dataset(str(data_dir))
    input_fn = input_pipeline.make_input_fn(
        info, "test", training=False, image_size=(32, 32), global_batch_size=8, normalization="unit"
    )
    images_, labels, mask, index = (
        np.concatenate(part) for part in zip(*input_fn(None).as_numpy_iterator(), strict=True)
    )
    real = mask > 0
    return info, images_[real], labels[real], index[real]


def _numpy_confusion(labels, predicted, num_classes):
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def test_report_matches_numpy_on_the_same_predictions(trained):
    data_dir, model_dir, model, record = trained
    info, images_, labels, index = _test_split(data_dir)
    probs = np.asarray(model(images_, training=False))[:, 0]  # One sigmoid unit: P(Dog).
    predicted = (probs > 0.5).astype(np.int64)
    confusion = _numpy_confusion(labels, predicted, 2)
    loss = -np.mean(np.log(np.where(labels == 1, probs, 1.0 - probs)))

    with open(model_dir / evaluate.REPORT_SUBDIR / "test.json") as f:
        report = json.load(f)
    assert (report["split"], report["checkpoint"], report["num_examples"]) == (
        "test",
        record["checkpoint"],
        info.split_sizes["test"],
    )
    assert record["checkpoint"] == tf.train.latest_checkpoint(str(model_dir / train.CHECKPOINT_SUBDIR))
    assert report["class_names"] == ["Cat", "Dog"]
    assert report["confusion_matrix"] == confusion.tolist()
    assert report["accuracy"] == pytest.approx(np.mean(predicted == labels)) == record["val_accuracy"]
    assert report["loss"] == pytest.approx(loss, rel=1e-4)
    # The short training does not always predict both classes (its data order varies with thread timing); the
    # precision of a class never predicted is null.
    for k, name in enumerate(["Cat", "Dog"]):
        true_positives = np.sum((predicted == k) & (labels == k))
        assert report["per_class"][name] == {
            "precision": pytest.approx(true_positives / np.sum(predicted == k)) if np.any(predicted == k) else None,
            "recall": pytest.approx(true_positives / np.sum(labels == k)),
            "support": int(np.sum(labels == k)),
            "predicted": int(np.sum(predicted == k)),
        }
    with Image.open(model_dir / evaluate.REPORT_SUBDIR / "test_confusion_matrix.png") as plot:
        assert plot.format == "PNG" and min(plot.size) >= 300

    # The most confident mistakes: by the probability of the predicted class, ties by record order, named by file.
    assert index.tolist() == list(range(23))  # One pipeline reads the records in order.
    filenames = [
        schema.record_filename(tf.train.Example.FromString(record).features.feature)
        for path in info.shard_paths("test")
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator()
    ]
    confidence = np.where(predicted == 1, probs, 1.0 - probs)
    wrong = [i for i in np.lexsort((np.arange(23), -confidence)) if predicted[i] != labels[i]]
    with open(model_dir / evaluate.REPORT_SUBDIR / "test_mistakes.json") as f:
        mistakes = json.load(f)
    assert mistakes == [
        {
            "filename": filenames[i],
            "true": ["Cat", "Dog"][labels[i]],
            "predicted": ["Cat", "Dog"][predicted[i]],
            "probability": pytest.approx(float(confidence[i]), abs=1e-6),
        }
        for i in wrong[: evaluate.MISTAKES_KEPT]
    ]
    with Image.open(model_dir / evaluate.REPORT_SUBDIR / "test_mistakes.png") as plot:
        assert plot.format == "PNG" and min(plot.size) >= 200


def test_training_exports_the_evaluated_model(trained):
    """The export a training run ends with serves the test records' bytes as the evaluation saw them."""
    data_dir, model_dir, model, _ = trained
    info, images_, _, _ = _test_split(data_dir)
    encoded = [
        schema.parse_examples(tf.constant([record]))[schema.IMAGE][0].numpy()
        for path in info.shard_paths("test")
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator()
    ]
    signature = predict.load(str(model_dir / export.EXPORT_SUBDIR / export.SAVED_MODEL_SUBDIR))
    served = signature(**{predict.INPUT: tf.constant(encoded)})[predict.PROBABILITIES].numpy()
    np.testing.assert_allclose(served, models.class_probabilities(model(images_, training=False)).numpy(), atol=1e-6)


def test_two_replicas_report_the_same_as_one_device(trained, tmp_path):
    """23 examples in global batches of 22 on 2 replicas: in the last step one replica gets 1 real example, the
    other none. Runs under the oneDNN setting of the test process (TF_ENABLE_ONEDNN_OPTS), where a convolution
    on an empty batch fails: the second replica must get a full batch of padding instead."""
    data_dir, model_dir, _, _ = trained
    with open(model_dir / evaluate.REPORT_SUBDIR / "test.json") as f:
        one_device = json.load(f)
    assert one_device["num_examples"] == 23
    info = input_pipeline.open_dataset(str(data_dir))
    input_fn = input_pipeline.make_input_fn(
        info, "test", training=False, image_size=(32, 32), global_batch_size=22, normalization="unit"
    )
    two_replicas_input = input_fn(tf.distribute.InputContext(num_replicas_in_sync=2))
    assert [int(mask.sum()) for _, _, mask, _ in two_replicas_input.as_numpy_iterator()] == [11, 11, 1, 0]
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns(evaluate.REPORT_SUBDIR))
    run_quietly(
        [
            sys.executable,
            "-m",
            "trainer.main",
            "--config=configs/default.py",
            "--config.model.name=lenet5",
            "--config.image_size=(32, 32)",
            f"--data_dir={data_dir}",
            f"--model_dir={copy}",
            "--mode=eval",
            "--strategy=mirrored",
            "--num_cpu_devices=2",
            "--global_batch_size=22",
            "--mixed_precision=float32",
        ]
    )
    with open(copy / evaluate.REPORT_SUBDIR / "test.json") as f:
        two_replicas = json.load(f)
    assert two_replicas["confusion_matrix"] == one_device["confusion_matrix"]
    assert two_replicas["loss"] == pytest.approx(one_device["loss"], rel=1e-5)
    assert two_replicas["checkpoint"] == one_device["checkpoint"].replace(str(model_dir), str(copy))
    # The same mistakes; their order is compared exactly where the probabilities are (test_mistakes_on_replicas).
    mistakes = [
        json.loads((run / evaluate.REPORT_SUBDIR / "test_mistakes.json").read_text()) for run in (model_dir, copy)
    ]
    by_file = [sorted(listed, key=lambda m: m["filename"]) for listed in mistakes]
    assert [{**m, "probability": pytest.approx(m["probability"], abs=1e-5)} for m in by_file[0]] == by_file[1]
    assert (copy / evaluate.REPORT_SUBDIR / "test_mistakes.png").is_file()


@pytest.mark.slow
def test_mistakes_on_replicas_are_the_single_device_answer(tmp_path):
    """The top-K of each replica, gathered and merged, is the top-K of all examples whatever the strategy and batch
    size, with the same tie order; padding (which the model gets wrong with certainty) never appears."""
    out = tmp_path / "mistakes.json"
    run_quietly([sys.executable, os.path.join(REPO, "tests", "replica_mistakes.py"), f"--out={out}"])
    probabilities, labels = replica_mistakes.probability_arrays(23, (3,), 3, seed=2)  # make_data's eval arrays.
    predicted = probabilities.argmax(-1)
    confidence = probabilities.max(-1)
    order = [i for i in np.lexsort((np.arange(23), -confidence)) if predicted[i] != labels[i]]
    assert confidence[order[4]] == confidence[order[5]]  # K=5 cuts a tie: kept by record order.
    expected = [[int(i), int(labels[i]), int(predicted[i]), float(confidence[i])] for i in order]
    for run, listed in json.loads(out.read_text()).items():
        k = int(run.split("/")[-1])
        assert listed == expected[:k], run


def test_mistakes_merged_from_any_split_into_replicas_and_batches_are_the_same():
    """most_confident over each replica's batches, then merge_mistakes of the replicas' lists, against a sort of
    all candidates; padding (score NOT_A_MISTAKE, index -1) and correct predictions never listed."""
    rng = np.random.default_rng(0)
    n, k = 40, 5
    score = rng.choice([0.5, 0.75, 0.9, evaluate.NOT_A_MISTAKE], n).astype(np.float32)
    index = rng.permutation(n).astype(np.int64)
    index[:6] = -1
    score[:6] = evaluate.NOT_A_MISTAKE  # Padding.
    label, predicted = rng.integers(0, 3, n), rng.integers(0, 3, n)
    real = [i for i in np.lexsort((index, -score)) if score[i] != evaluate.NOT_A_MISTAKE]
    expected = [evaluate.Mistake(int(index[i]), int(label[i]), int(predicted[i]), float(score[i])) for i in real][:k]
    for replicas, batch_size in [(1, 40), (1, 3), (2, 4), (4, 5), (8, 1)]:
        kept_lists = []
        for replica in range(replicas):
            kept = evaluate.nothing_kept(k)
            mine = np.arange(n)[replica::replicas]
            for start in range(0, len(mine), batch_size):
                rows = mine[start : start + batch_size]
                kept = evaluate.most_confident(kept, (score[rows], index[rows], label[rows], predicted[rows]), k)
            kept_lists.append([t.numpy() for t in kept])
        gathered = (np.concatenate(parts) for parts in zip(*kept_lists, strict=True))
        assert list(evaluate.merge_mistakes(*gathered, num_mistakes=k)) == expected, (replicas, batch_size)


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mistakes_are_written_as_json_and_a_grid(tmp_path):
    mistakes = [evaluate.Mistake(7, 0, 1, 0.98), evaluate.Mistake(2, 1, 0, 0.75)]
    examples = {
        7: input_pipeline.StoredExample("Cat/7.jpg", _png((40, 30), (200, 0, 0))),
        2: input_pipeline.StoredExample("a/very/long/folder/name/that/goes/on/Dog/2.jpg", _png((20, 20), (0, 0, 200))),
    }
    json_path, png_path = evaluate.write_mistakes(mistakes, examples, ["Cat", "Dog"], str(tmp_path), "test")
    assert json_path == str(tmp_path / "eval" / "test_mistakes.json")
    with open(json_path) as f:
        assert json.load(f) == [
            {"filename": "Cat/7.jpg", "true": "Cat", "predicted": "Dog", "probability": 0.98},
            {"filename": examples[2].filename, "true": "Dog", "predicted": "Cat", "probability": 0.75},
        ]
    assert png_path == str(tmp_path / "eval" / "test_mistakes.png")
    with Image.open(png_path) as plot:
        assert plot.format == "PNG" and plot.size[0] > plot.size[1] >= 200  # One row of two.

    _, png_path = evaluate.write_mistakes([], {}, ["Cat", "Dog"], str(tmp_path), "validation")
    assert json.loads((tmp_path / "eval" / "validation_mistakes.json").read_text()) == []
    assert png_path is not None and Image.open(png_path).format == "PNG"  # Says "no mistakes".


def test_feature_dataset_mistakes_are_listed_without_a_grid(tmp_path):
    """A feature dataset's records hold no image: the JSON names the files, no PNG is written."""
    mistakes = [evaluate.Mistake(3, 1, 0, 0.6)]
    examples = {3: input_pipeline.StoredExample("Dog/3.jpg", None)}
    json_path, png_path = evaluate.write_mistakes(mistakes, examples, ["Cat", "Dog"], str(tmp_path), "test")
    assert png_path is None and not (tmp_path / "eval" / "test_mistakes.png").exists()
    with open(json_path) as f:
        assert json.load(f) == [{"filename": "Dog/3.jpg", "true": "Dog", "predicted": "Cat", "probability": 0.6}]

    # No mistakes at all: still no grid (an image dataset's would say "no mistakes").
    _, png_path = evaluate.write_mistakes([], {}, ["Cat", "Dog"], str(tmp_path), "validation", images=False)
    assert png_path is None and not (tmp_path / "eval" / "validation_mistakes.png").exists()


def test_three_class_report_and_an_explicit_checkpoint(tmp_path):
    """In-memory data (classes named by index); eval_checkpoint picks the first epoch's checkpoint, not the best."""
    config = make_config(str(tmp_path), epochs=2)
    data = make_data(8, num_classes=3)
    train.train_and_evaluate(config, tf.distribute.get_strategy(), data)
    first = os.path.join(tmp_path, train.CHECKPOINT_SUBDIR, "ckpt-8")
    config.update(mode="eval", eval_checkpoint=first)
    model, (record,) = train.train_and_evaluate(config, tf.distribute.get_strategy(), data)

    assert record["checkpoint"] == first
    images_, labels = make_arrays(33, num_classes=3, seed=2)
    probs = np.asarray(model(images_, training=False))
    with open(tmp_path / evaluate.REPORT_SUBDIR / "test.json") as f:
        report = json.load(f)
    assert report["class_names"] == ["0", "1", "2"]
    assert report["confusion_matrix"] == _numpy_confusion(labels, probs.argmax(-1), 3).tolist()
    assert report["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(33), labels])), rel=1e-5)


def test_report_arithmetic_and_undefined_precision():
    confusion = np.array([[3, 0, 1], [1, 0, 0], [2, 0, 4]])  # Class b is never predicted.
    report = evaluate.make_report(
        confusion, loss_sum=5.5, class_names=["a", "b", "c"], split="test", checkpoint="ckpt-1"
    )
    assert (report["num_examples"], report["accuracy"], report["loss"]) == (11, 7 / 11, 0.5)
    assert report["per_class"]["a"] == {"precision": 0.5, "recall": 0.75, "support": 4, "predicted": 6}
    assert report["per_class"]["b"] == {"precision": None, "recall": 0.0, "support": 1, "predicted": 0}
    assert json.loads(json.dumps(report)) == report
    assert evaluate.plot_confusion_matrix(np.eye(40, dtype=int), [str(i) for i in range(40)], "many").startswith(
        b"\x89PNG"
    )


def test_eval_without_a_checkpoint_says_what_to_do(tmp_path):
    config = make_config(str(tmp_path), mode="eval")
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*; train first"):
        train.train_and_evaluate(config, tf.distribute.get_strategy(), make_data(8))
    config.eval_checkpoint = str(tmp_path / "ckpt-3")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no checkpoint {tmp_path}/ckpt-3; train first")):
        train.train_and_evaluate(config, tf.distribute.get_strategy(), make_data(8))
