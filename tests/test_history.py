"""The run's history files: metrics.jsonl, history.csv and the learning-curve PNG, and how a resume rebuilds them."""

import csv
import json

from PIL import Image

from trainer import history


def _record(epoch, phase="train", steps_per_epoch=10, **metrics):
    return {
        "phase": phase,
        "epoch": epoch,
        "step": epoch * steps_per_epoch,
        "train_loss": 1.0 / epoch,
        "train_accuracy": 0.5,
        "val_loss": 1.2 / epoch,
        "val_accuracy": 0.6,
        "learning_rate": 0.01,
        "images_per_second": 100.0,
        **metrics,
    }


def _csv_rows(model_dir):
    with open(model_dir / history.CSV_FILE) as f:
        return list(csv.DictReader(f))


def test_resume_keeps_the_epochs_the_checkpoint_holds_and_appends_after_them(tmp_path):
    run = history.History(str(tmp_path))
    for epoch in (1, 2, 3):
        run.append(_record(epoch))
    rows = _csv_rows(tmp_path)
    assert list(rows[0]) == list(history.COLUMNS)
    assert [(r["epoch"], r["step"], float(r["val_loss"])) for r in rows] == [
        ("1", "10", 1.2),
        ("2", "20", 0.6),
        ("3", "30", 1.2 / 3),
    ]

    # Epoch 3 was logged, then the process died before its checkpoint (the latest is at step 25).
    resumed = history.History.resume(str(tmp_path), up_to_step=25)
    assert [r["epoch"] for r in resumed.records] == [1, 2]
    with open(tmp_path / history.METRICS_FILE) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]
    assert [r["epoch"] for r in _csv_rows(tmp_path)] == ["1", "2"]

    resumed.append(_record(3, val_loss=0.5))
    again = history.History.resume(str(tmp_path), up_to_step=30)
    assert again.records == resumed.records
    assert [(r["epoch"], r["val_loss"]) for r in _csv_rows(tmp_path)] == [("1", "1.2"), ("2", "0.6"), ("3", "0.5")]


def test_missing_values_leave_csv_cells_empty(tmp_path):
    run = history.History(str(tmp_path))
    record = _record(1, images_per_second=None)
    del record["val_loss"], record["val_accuracy"]  # --mode=train
    run.append(record)
    (row,) = _csv_rows(tmp_path)
    assert (row["val_loss"], row["images_per_second"], row["train_loss"]) == ("", "", "1.0")


def test_learning_curves_mark_the_phase_change(tmp_path):
    records = [_record(1), _record(2), _record(3, phase="fine_tune"), _record(4, phase="fine_tune")]
    figure = history.plot(records)
    for ax, metric in zip(figure.axes, ("loss", "accuracy"), strict=True):
        assert ax.get_title() == metric
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines["train"].get_xdata()) == [1, 2, 3, 4]
        assert list(lines["validation"].get_ydata()) == [r[f"val_{metric}"] for r in records]
        assert list(lines["fine_tune starts"].get_xdata()) == [2.5, 2.5]

    run = history.History(str(tmp_path), records)
    run.plot()
    with Image.open(tmp_path / history.PLOT_FILE) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 100


def test_a_non_chief_worker_keeps_its_records_in_memory_and_touches_no_file(monkeypatch):
    def no_file_access(*args, **kwargs):
        raise AssertionError(f"a non-chief worker's history touched a file: {args}")

    for name in ("GFile", "exists", "rename", "makedirs", "remove"):
        monkeypatch.setattr(history.tf.io.gfile, name, no_file_access)
    run = history.History.resume(None, up_to_step=100)
    run.append(_record(1))
    run.plot()
    assert run.records == [_record(1)]
