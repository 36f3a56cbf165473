"""Walking an image folder: every file under it, and what is skipped without being read (junk that folders
collect; entries that are not regular files, since opening a named pipe would block forever).

Free of Beam, TensorFlow and Pillow: data_prep's listing and trainer.predict's folder walk share it, so both read
the same files of a folder.
"""

from __future__ import annotations

import os
import posixpath
import stat

import fsspec
from fsspec.implementations.local import LocalFileSystem

JUNK_FILES = {
    "thumbs.db": "Windows thumbnail cache",
    "desktop.ini": "Windows folder settings",
    ".ds_store": "macOS folder metadata",
    "ehthumbs.db": "Windows thumbnail cache",
}


def junk_reason(basename: str) -> str | None:
    """Why a file or folder name is skipped without reading it, or None to process it."""
    lowered = basename.lower()
    if lowered in JUNK_FILES:
        return f"skipped: {JUNK_FILES[lowered]} ({basename})"
    if basename.startswith("._"):
        return "skipped: macOS resource fork (._ file)"
    if basename.startswith("."):
        return "skipped: hidden file"
    return None


def path_junk_reason(relpath: str) -> str | None:
    """The junk reason of the first junk name on a relative path (a hidden folder hides what it holds)."""
    return next((r for r in map(junk_reason, relpath.split("/")) if r), None)


def skip_reason(relpath: str, special: dict[str, str]) -> str | None:
    """Why a file `find` listed is skipped unread (junk on its path, or in `special`: not a regular file), or None."""
    return path_junk_reason(relpath) or special.get(relpath)


def find(fs: fsspec.AbstractFileSystem, root: str) -> tuple[list[str], dict[str, str], int]:
    """Every file name under `root` (relative, sorted), why each entry that is not a regular file is skipped, and
    the listed files' total size.

    Links to files are followed; links to folders are not (a link back up would loop). Nothing is opened here.
    """
    found = fs.find(root, withdirs=False, detail=True)
    relpaths = sorted(posixpath.relpath(p, root.rstrip("/")) for p in found)
    special = {}
    for path, info in found.items():
        if info["type"] != "file" and (reason := not_a_file_reason(fs, path, info["type"])):
            special[posixpath.relpath(path, root.rstrip("/"))] = reason
    return relpaths, special, sum(info["size"] or 0 for info in found.values())


def not_a_file_reason(fs: fsspec.AbstractFileSystem, path: str, kind: str) -> str | None:
    """Why a listed entry of `kind` (fsspec's type, not "file") is skipped; None for a link to a regular file."""
    if not isinstance(fs, LocalFileSystem):
        return f"skipped: not a regular file ({kind})"
    try:
        mode = os.stat(path).st_mode  # Follows links.
    except FileNotFoundError:
        return "skipped: broken link (its target does not exist)"
    except OSError as e:
        return f"skipped: link that cannot be followed ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "skipped: link to a folder (not followed)"
    what = (
        "named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "socket"
        if stat.S_ISSOCK(mode)
        else "device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "special file"
    )
    return f"skipped: {what}, not a regular file (not opened)"
