"""What a person sees while a job runs: the trainer's progress within an epoch (a bar on a terminal or in a notebook,
log lines elsewhere) and data_prep's progress with its ETA, driven by fake clocks; that progress never changes what
is trained; a real terminal (a pseudo-terminal) gets the bar; a rerun of a finished run says so in one line."""

import fcntl
import io
import logging
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import tensorflow as tf
from multiworker_train import make_config, make_data

from data_prep import display, progress, runners
from trainer import checkpointing, export, history, input_pipeline, train
from trainer import progress as train_progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def messages(caplog, prefix):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]


def test_durations_read_as_minutes_and_seconds_then_hours():
    assert [display.duration(s) for s in (0, 59.4, 61, 3599, 3600, 3725.2)] == [
        "0:00",
        "0:59",
        "1:01",
        "59:59",
        "1:00:00",
        "1:02:05",
    ]


def test_the_eta_is_what_remains_at_the_rate_so_far_and_unknown_before_any_work():
    assert display.eta(70, 1.0) == "1:10" and display.eta(9000, 2.5) == "1:00:00" and display.eta(5, 0.0) == "?"


def test_a_terminal_and_a_jupyter_kernels_stream_show_a_bar_a_file_or_pipe_does_not():
    kernel_stream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})()
    assert display.live(Terminal()) and display.live(kernel_stream)
    assert not display.live(io.StringIO())


def _run_epoch(epoch_progress, clock, updates, total=100, title="epoch 1/3 (train)", done=0, sums=None):
    """Updates at (time, steps done) with every step's batch of 32 at loss 0.5 and accuracy 0.75."""
    with epoch_progress.epoch(title, done, total, sums or {"loss": 0.0, "correct": 0.0, "count": 0.0}):
        for now, steps_done in updates:
            clock.now = now
            count = 32.0 * (steps_done - done)
            epoch_progress.update(steps_done, {"loss": 0.5 * count, "correct": 0.75 * count, "count": count})
            done = steps_done


def test_off_a_terminal_a_line_every_n_seconds_with_steps_rates_and_eta(caplog):
    """The first call (10 steps in 12 s: it traced) is left out of the rates: 1 step/s, 32 images/s after it."""
    clock = FakeClock()
    with caplog.at_level(logging.INFO):
        _run_epoch(
            train_progress.EpochProgress(30, io.StringIO(), clock),
            clock,
            [(12, 10), (22, 20), (32, 30), (42, 40), (62, 60), (102, 100)],
        )
    assert messages(caplog, "epoch ") == [
        "epoch 1/3 (train): step 30/100 (30%), loss=0.5000 accuracy=0.7500, 32.0 images/s, ETA 1:10",
        "epoch 1/3 (train): step 60/100 (60%), loss=0.5000 accuracy=0.7500, 32.0 images/s, ETA 0:40",
    ]  # None at 100/100: the epoch's own line follows.


def test_a_resumed_epochs_progress_counts_its_steps_and_sums_from_before(caplog):
    clock = FakeClock()
    before = {"loss": 0.0, "correct": 0.0, "count": 32.0 * 50}  # 50 steps at loss 0 and accuracy 0.
    with caplog.at_level(logging.INFO):
        _run_epoch(train_progress.EpochProgress(5, io.StringIO(), clock), clock, [(10, 60)], done=50, sums=before)
    assert messages(caplog, "epoch ") == [
        "epoch 1/3 (train): step 60/100 (60%), loss=0.0833 accuracy=0.1250, 32.0 images/s, ETA 0:40"
    ]


def test_on_a_terminal_a_bar_reaches_the_total_and_is_cleared_for_the_epoch_line(caplog):
    clock, terminal = FakeClock(), Terminal()
    with caplog.at_level(logging.INFO):
        _run_epoch(train_progress.EpochProgress(30, terminal, clock), clock, [(12, 3), (22, 6), (32, 8)], total=8)
    drawn = terminal.getvalue()
    assert "epoch 1/3 (train) 100%|" in drawn and "| 8/8, loss=0.5000 accuracy=0.7500, " in drawn
    assert "images/s, ETA 0:00" in drawn and "\r" in drawn
    assert drawn.endswith("\r")  # Cleared, so the line logged next starts at the margin.
    assert not messages(caplog, "epoch ")


def test_progress_every_s_0_shows_nothing(caplog):
    clock, terminal = FakeClock(), Terminal()
    with caplog.at_level(logging.INFO):
        _run_epoch(train_progress.EpochProgress(0, terminal, clock), clock, [(40, 50), (80, 100)])
    assert terminal.getvalue() == "" and not messages(caplog, "epoch ")


def _without_timing(records):
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in records]


def test_progress_never_changes_what_is_trained(tmp_path, monkeypatch, caplog):
    """The same run without progress, with a bar (stderr a terminal) and with a line after every call."""
    off_model, off = train.train_and_evaluate(
        make_config(str(tmp_path / "off"), progress_every_s=0.0), tf.distribute.get_strategy(), make_data(8)
    )
    terminal = Terminal()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        bar_model, bar = train.train_and_evaluate(
            make_config(str(tmp_path / "bar")), tf.distribute.get_strategy(), make_data(8)
        )
    with caplog.at_level(logging.INFO):
        lines_model, lines = train.train_and_evaluate(
            make_config(str(tmp_path / "lines"), progress_every_s=1e-9), tf.distribute.get_strategy(), make_data(8)
        )
    assert _without_timing(off) == _without_timing(bar) == _without_timing(lines)
    for model in (bar_model, lines_model):
        for a, b in zip(off_model.weights, model.weights, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    drawn = terminal.getvalue()
    assert "epoch 1/2 (train) 100%|" in drawn and "epoch 2/2 (train) 100%|" in drawn and "| 8/8, loss=" in drawn
    # 8 steps per epoch, 3 per call: lines after steps 3 and 6; after 8 the epoch's own line.
    assert [m.split(", loss=")[0] for m in messages(caplog, "epoch ") if "step " in m] == [
        f"epoch {e}/2 (train): step {s}/8 ({100 * s // 8}%)" for e in (1, 2) for s in (3, 6)
    ]


@pytest.mark.parametrize("steps_per_loop, updates", [(3, [3, 6, 8]), (100, [8])])
def test_progress_moves_once_per_step_loop_with_the_sums_the_loop_already_brought_to_the_host(
    tmp_path, monkeypatch, steps_per_loop, updates
):
    """Never slower: nothing is added inside the tf.function, and between calls progress reads only the Python floats
    the loop returned anyway (no tensor, so no extra host sync), once per call; the bar is drawn at most once per
    update, plus its first draw."""
    seen, update = [], train_progress.EpochProgress.update

    def spy(self, done, totals):
        seen.append((done, {type(v) for v in totals.values()}))
        update(self, done, totals)

    terminal = Terminal()
    monkeypatch.setattr(train_progress.EpochProgress, "update", spy)
    monkeypatch.setattr(sys, "stderr", terminal)
    train.train_and_evaluate(
        make_config(str(tmp_path), steps_per_loop=steps_per_loop), tf.distribute.get_strategy(), make_data(8)
    )
    assert seen == [(done, {float}) for done in updates * 2]  # 2 epochs of 8 steps.
    assert terminal.getvalue().count("(train) ") <= 2 * (len(updates) + 1)


def _read_all(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # EIO: the other end closed (Linux).
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_on_a_pseudo_terminal_the_trainer_draws_a_bar_to_the_end_of_each_epoch(sample_dataset, tmp_path):
    data_dir, _ = sample_dataset
    steps = input_pipeline.steps_per_epoch(input_pipeline.open_dataset(str(data_dir)), "train", 4)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # Rows, columns: a terminal's.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trainer.main",
            "--config=configs/mnist_cnn.py",
            "--epochs=2",
            "--global_batch_size=4",
            "--config.image_size=(32, 32)",
            "--config.steps_per_loop=2",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = _read_all(primary)
    os.close(primary)
    assert process.wait(timeout=300) == 0, output[-3000:]
    for epoch in (1, 2):
        assert f"epoch {epoch}/2 (train) 100%|" in output, output[-3000:]
        assert f"| {steps}/{steps}, loss=" in output
    assert "images/s, ETA " in output and "epoch 2/2 (train): train_loss=" in output


def test_a_line_logged_while_a_bar_is_shown_starts_at_the_margin_and_leaves_no_filter_behind():
    terminal, root = Terminal(), logging.getLogger()
    handler = logging.StreamHandler(terminal)
    root.addHandler(handler)
    try:
        bar = display.bar(terminal, 10, "progress")
        bar.n = 5
        bar.set_postfix_str("1.0 files/s")
        logging.warning("a library's warning")
        bar.close()
    finally:
        root.removeHandler(handler)
    before, after = terminal.getvalue().split("a library's warning\n")
    assert "| 5/10, 1.0 files/s" in before and before.endswith(" \r") and not after.strip()
    assert not handler.filters


def test_a_pseudo_terminal_that_reports_no_size_still_gets_the_whole_bar():
    """tqdm would cut every line to the width such a terminal reports (0, as `script` or `docker run -t` may give)."""
    primary, secondary = pty.openpty()
    with open(secondary, "w", closefd=True) as terminal:
        bar = display.bar(terminal, 10, "epoch 1/2 (train)")
        bar.n = 5
        bar.set_postfix_str("loss=0.5000")
        bar.close()
    drawn = _read_all(primary)
    os.close(primary)
    assert "epoch 1/2 (train)  50%|" in drawn and "| 5/10, loss=0.5000" in drawn


def test_a_rerun_of_a_finished_run_says_so_in_one_line_and_only_exports_again(sample_dataset, tmp_path, caplog):
    data_dir, _ = sample_dataset
    config = make_config(str(tmp_path), data_dir=str(data_dir), image_size=(16, 16), strategy="off")
    config.mixed_precision = "float32"
    with caplog.at_level(logging.INFO):
        train.run(config.copy_and_resolve_references())
    best = checkpointing.best_or_latest_checkpoint(str(tmp_path))
    saved_model = os.path.join(str(tmp_path), export.EXPORT_SUBDIR, export.SAVED_MODEL_SUBDIR)
    assert messages(caplog, "Exported ") == [
        f"Exported {saved_model} (serving signature on encoded images) and {export.KERAS_FILE} from {best}."
    ]
    latest = checkpointing.latest_checkpoint(str(tmp_path))
    metrics = (tmp_path / history.METRICS_FILE).read_text()
    shutil.rmtree(tmp_path / export.EXPORT_SUBDIR)
    caplog.clear()

    with caplog.at_level(logging.INFO):
        train.run(config.copy_and_resolve_references())
    epochs, step = config.epochs, int(latest.rsplit("-", 1)[1])
    assert messages(caplog, f"{tmp_path} ") == [
        f"{tmp_path} already finished at step {step} (epoch {epochs}): nothing to train; re-exported {saved_model} "
        f"(serving signature on encoded images) and {export.KERAS_FILE} from {best}."
    ]
    assert not messages(caplog, "Resuming") and not messages(caplog, "Exported ")
    assert not messages(caplog, "epoch ")  # No epoch trained or evaluated.
    assert checkpointing.latest_checkpoint(str(tmp_path)) == latest
    assert (tmp_path / history.METRICS_FILE).read_text() == metrics
    assert os.path.exists(os.path.join(saved_model, "saved_model.pb"))


def test_data_prep_progress_lines_have_the_rate_since_the_first_file_and_the_eta(tmp_path, caplog):
    """Workers starting (nothing done for the first 10 s) do not count in the rate; the ETA waits for 10 s of work
    (workers' counts are up to 5 s old)."""
    work_dir, clock = str(tmp_path / "_work"), FakeClock()
    watcher = runners.JobWatcher(work_dir, str(tmp_path), total=100, stream=io.StringIO(), clock=clock)
    files, before = progress.Progress(work_dir), 0
    with caplog.at_level(logging.INFO):
        for now, done in ((10, 0), (15, 10), (20, 20), (60, 100)):
            files.add(done - before)
            files.flush()
            before = done
            clock.now = now
            if done == 100:
                (tmp_path / "x-train.tfrecord-00000-of-00002").touch()
            watcher.look()
    assert messages(caplog, "progress: ") == [
        "progress: 0 / 100 files (0%), waiting for the first file",
        "progress: 10 / 100 files (10%), 2.0 files/s",
        "progress: 20 / 100 files (20%), 2.0 files/s, ETA 0:40",
        "progress: 100 / 100 files (100%), 2.0 files/s; 1 shard files begun",
    ]


def test_data_prep_on_a_terminal_draws_a_bar_to_the_total_with_the_eta(tmp_path, caplog):
    work_dir, clock, terminal = str(tmp_path / "_work"), FakeClock(), Terminal()
    watcher = runners.JobWatcher(work_dir, str(tmp_path), total=50, stream=terminal, clock=clock)
    files, before = progress.Progress(work_dir), 0
    with caplog.at_level(logging.INFO):
        for now, done in ((12, 10), (16, 50)):
            files.add(done - before)
            files.flush()
            before = done
            clock.now = now
            watcher.look()
    drawn = terminal.getvalue()
    assert "progress  20%|" in drawn and "| 10/50, 0.8 files/s, ETA 0:48" in drawn
    assert "progress 100%|" in drawn and "| 50/50, 3.1 files/s; 0 shard files begun" in drawn
    assert not messages(caplog, "progress: ")
