"""Small file-system helpers shared by the layers that write files durably."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory `path` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(path: str | os.PathLike[str], data: bytes) -> None:
    """Append `data` to the file at `path` (made if missing, as `open(path, "ab")` would),
    without the buffered file object: the periodic log and metrics flushes call this
    for every busy backpack, about once a second."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
