"""Inter-process locks: whatever two processes can build (a teacher, a cache, a study's baselines) is built
by one while the other waits, then reuses it.

:func:`file_lock` is an exclusive ``flock`` on a lock file: held by one process (or thread) at a time on
one machine, released by the kernel if the holder dies (a ``kill -9`` never leaves a stale lock).
Across machines the study's database provides the lock (see ``search/backends/storage.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .errors import AutoKDError

__all__ = ["file_lock", "build_once", "LockTimeout"]

T = TypeVar("T")

_local = threading.local()


class LockTimeout(AutoKDError):
    """Another process held the lock for longer than the timeout."""


@contextlib.contextmanager
def file_lock(path: str | Path, *, timeout: float | None = None, poll: float = 0.1,
              on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the duration of the block.

    Re-entrant within one thread (a nested ``file_lock`` on the same path does not deadlock). ``on_wait`` is
    called once if the lock is busy (e.g. to log "waiting for another worker to train the teacher").
    """
    path = Path(path)
    held: dict[str, int] = getattr(_local, "held", None) or {}
    _local.held = held
    key = str(path.resolve())
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                if timeout is not None and time.monotonic() - start > timeout:
                    raise LockTimeout(f"{path}: still locked by another process after {timeout:.0f}s") from None
                time.sleep(poll)
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def build_once(path: Path, load: Callable[[Path], T | None], build: Callable[[], T],
               save: Callable[[Path, T], None]) -> T:
    """``load(path)``, or ``build()`` and ``save(path, value)`` — under a file lock beside ``path``, so that of
    several processes one builds while the others wait and then load. ``load`` returns None for a missing,
    stale (other key) or corrupt file: it is rebuilt, never trusted. ``save`` writes atomically."""
    with file_lock(path.with_name(path.name + ".lock")):
        out = load(path)
        if out is None:
            out = build()
            save(path, out)
    return out
