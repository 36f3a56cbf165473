"""Who owns a build's temporary directory, so that a later build can remove what no running build owns.

A build writes `OWNER_FILE` (host, pid) into its `.NAME.incomplete-<id>` directory and
rewrites it every HEARTBEAT_S while it runs. A later build of the same output removes a
sibling whose owner is a process of this host that no longer runs (kill -9, a crash, a
lost session), or whose owner file has not been rewritten for ABANDONED_AFTER_S (a build
on another host: Dataflow and Cloud Storage outputs are shared). A sibling without an owner
file (left by an older data_prep) counts from its newest file's modification time.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import threading
import time

import fsspec

_log = logging.getLogger(__name__)

OWNER_FILE = "_owner.json"
HEARTBEAT_S = 60.0
ABANDONED_AFTER_S = 15 * 60.0  # Many heartbeats: a slow file system or a paused VM does not lose a live build.


class Heartbeat:
    """Writes the owner file now and rewrites it every HEARTBEAT_S until `stop`."""

    def __init__(self, fs: fsspec.AbstractFileSystem, directory: str):
        self._fs = fs
        self._path = posixpath.join(directory, OWNER_FILE)
        self._owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        self._write()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="data_prep-heartbeat", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        with self._fs.open(self._path, "w") as f:
            f.write(self._owner)

    def _beat(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                self._write()
            except OSError as e:  # A missed beat is harmless; ABANDONED_AFTER_S spans many of them.
                _log.warning("Could not refresh %s: %s", self._path, e)

    def stop(self) -> None:
        """Stops beating and removes the owner file, which must not end up in the dataset. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join()
        self._fs.rm(self._path)


def abandoned_reason(fs: fsspec.AbstractFileSystem, directory: str, now: float | None = None) -> str | None:
    """Why no running build owns `directory`, or None if one may."""
    now = time.time() if now is None else now
    owner_path = posixpath.join(directory, OWNER_FILE)
    try:
        owner = json.loads(fs.cat_file(owner_path))
        last_sign_of_life = fs.modified(owner_path).timestamp()
    except (FileNotFoundError, ValueError):
        owner = None
        last_sign_of_life = max((fs.modified(p).timestamp() for p in fs.find(directory)), default=0.0)
    if owner and owner.get("host") == socket.gethostname() and not _running(int(owner.get("pid", 0))):
        return f"its build (process {owner['pid']} on this host) is no longer running"
    if now - last_sign_of_life > ABANDONED_AFTER_S:
        whose = f"its build (process {owner.get('pid')} on {owner.get('host')})" if owner else "it"
        return f"{whose} has shown no sign of life for {(now - last_sign_of_life) / 60:.0f} minutes"
    return None


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process.
        return True
    return True


def remove_abandoned(fs: fsspec.AbstractFileSystem, pattern: str) -> list[str]:
    """Removes the directories matching `pattern` that no running build owns; returns them. Others are named."""
    removed = []
    for directory in sorted(fs.glob(pattern)):
        reason = abandoned_reason(fs, directory)
        if reason is None:
            _log.warning("%s belongs to a build that may still be running; left alone.", directory)
            continue
        fs.rm(directory, recursive=True)
        _log.warning("Removed %s, left by an interrupted build: %s.", directory, reason)
        removed.append(directory)
    return removed
