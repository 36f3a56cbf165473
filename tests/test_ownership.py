"""Leftovers of interrupted builds: removed by the next build when no running build owns them, never otherwise."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import build_folder

from data_prep import output, ownership

# A process that starts a build's output (owner file and heartbeat) and then waits to be killed.
OWNER_PROCESS = (
    "import sys, time; from data_prep import output; output.AtomicOutput(sys.argv[1], False); "
    "print('ready', flush=True); time.sleep(600)"
)


def leftovers(parent, name="out"):
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}.incomplete-"))


@pytest.mark.slow
def test_each_build_removes_what_builds_killed_with_kill_9_left(tmp_path, sample_folder, caplog):
    out = tmp_path / "out"
    for _ in range(3):  # One after the other, as a user reruns a build: never more than the last one's left.
        owner = subprocess.Popen([sys.executable, "-c", OWNER_PROCESS, str(out)], stdout=subprocess.PIPE, text=True)
        assert owner.stdout.readline().strip() == "ready"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()
        (killed,) = leftovers(tmp_path)
        assert os.path.exists(tmp_path / killed / ownership.OWNER_FILE)
    with caplog.at_level(logging.WARNING):
        build_folder(sample_folder.parent, out)
    assert leftovers(tmp_path) == []
    removed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Removed ")]
    assert removed == [
        f"Removed {tmp_path / killed}, left by an interrupted build: its build (process {owner.pid} on "
        "this host) is no longer running."
    ]
    assert ownership.OWNER_FILE not in os.listdir(out)


def test_a_build_still_running_keeps_its_directory(tmp_path, sample_folder, caplog):
    out = tmp_path / "out"
    running = output.AtomicOutput(str(out), overwrite=False)
    try:
        with caplog.at_level(logging.WARNING):
            build_folder(sample_folder.parent, out)
        assert os.path.isdir(running.temp_path)
        assert any("may still be running; left alone" in r.getMessage() for r in caplog.records)
    finally:
        running.abort()
    assert leftovers(tmp_path) == []


def test_a_build_on_another_host_is_gone_once_its_heartbeat_is_old(tmp_path):
    remote = tmp_path / ".out.incomplete-remote"
    remote.mkdir()
    (remote / ownership.OWNER_FILE).write_text(json.dumps({"host": "another-host", "pid": os.getpid()}))
    beat = os.path.getmtime(remote / ownership.OWNER_FILE)
    fs = output.fsspec.filesystem("file")
    assert ownership.abandoned_reason(fs, str(remote), now=beat + ownership.ABANDONED_AFTER_S - 1) is None
    reason = ownership.abandoned_reason(fs, str(remote), now=beat + ownership.ABANDONED_AFTER_S + 60)
    assert reason == f"its build (process {os.getpid()} on another-host) has shown no sign of life for 16 minutes"


def test_a_directory_without_owner_file_counts_from_its_newest_file(tmp_path):
    old = tmp_path / ".out.incomplete-old"
    (old / "_work").mkdir(parents=True)
    (old / "_work" / "manifest.jsonl").write_text("{}\n")
    written = os.path.getmtime(old / "_work" / "manifest.jsonl")
    fs = output.fsspec.filesystem("file")
    assert ownership.abandoned_reason(fs, str(old), now=written + 60) is None
    assert "no sign of life for 20 minutes" in ownership.abandoned_reason(fs, str(old), now=written + 20 * 60)


def test_the_heartbeat_rewrites_the_owner_file_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(ownership, "HEARTBEAT_S", 0.01)
    fs = output.fsspec.filesystem("file")
    owner = tmp_path / ownership.OWNER_FILE
    heartbeat = ownership.Heartbeat(fs, str(tmp_path))
    first = os.stat(owner).st_mtime_ns
    deadline = time.monotonic() + 10
    while os.stat(owner).st_mtime_ns == first:
        assert time.monotonic() < deadline, "the owner file was never rewritten"
        time.sleep(0.01)  # Polling interval; the changed mtime is the synchronisation.
    heartbeat.stop()
    heartbeat.stop()
    assert not owner.exists()
