"""The trainer's own file writes: one atomic write for text and bytes, through tf.io.gfile.

The trainer reads and writes through TensorFlow's file systems (tf.io.gfile, tf.data, tf.train.Checkpoint,
tf.summary), which handle local paths and gs:// alike; paths are joined with tf.io.gfile.join, which keeps '/' in
URLs on every platform. metadata.json is the exception: it is read through data_prep's dataset contract. The rule
and its reasons: BUILD_NOTES.md, "Files and Cloud Storage".
"""

from __future__ import annotations

import tensorflow as tf


def write_atomic(path: str, content: str | bytes) -> None:
    """Writes `content` to `path` so that a reader, or a crash, sees the old file or the new one, never part of one."""
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    tf.io.gfile.rename(temporary, path, overwrite=True)
