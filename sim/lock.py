"""An exclusive writer lock on a file: one writer at a time, and a refusal that names the holder.

The lock is an OS lock (``fcntl.flock``) on ``<path>.lock``, so it ends with its process,
``kill -9`` included: there is never a stale lock to clear by hand.  The lock file holds the
holder's pid, host and start time (UTC) for the message a second writer gets; the holder
removes it on release.  A waiter checks after locking that the file it locked is still the one
at the path (the holder may have removed it meanwhile) and tries again when it is not.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it (pid, host, start time)."""


def lock_path(path: Path) -> Path:
    """The lock file of ``path``: ``<path>.lock`` beside it."""
    return path.with_name(path.name + ".lock")


#: what a refusal names when the holder has locked but not yet written its pid
NO_PID = "another process (it has not written its pid yet)"
#: how long (x 10 ms) a refused writer waits for the holder's pid before naming it :data:`NO_PID`
HOLDER_PATIENCE_STEPS = 100


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError, OSError):
        return NO_PID


def _try_lock(fd: int) -> str | None:
    """Lock ``fd`` without blocking: None when locked, else who holds it.  The holder locks first and writes
    its pid just after, so a refusal waits up to :data:`HOLDER_PATIENCE_STEPS` x 10 ms for the pid (or for
    the lock to come free) rather than naming nobody."""
    for _ in range(HOLDER_PATIENCE_STEPS + 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            who = _holder(fd)
            if who != NO_PID:
                return who
            time.sleep(0.01)
    return who


def _say_waiting(path: Path, who: str) -> None:
    print(f"waiting for {path}: it is being written by {who}", file=sys.stderr, flush=True)


def _acquire(path: Path, wait: bool, on_wait: Callable[[Path, str], None], label: str) -> int:
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            who = _try_lock(fd)
            if who is not None:
                if not wait:
                    raise LockHeld(f"{label} is being written by {who} (lock file {lock}); "
                                   "let it finish, wait for it (aegis sweep --wait), or choose another output") from None
                on_wait(Path(label), who)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
                info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, info, 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)            # the holder removed the file we locked: lock the new one


@contextmanager
def exclusive(path: str | Path, wait: bool = False, on_wait: Callable[[Path, str], None] = _say_waiting,
              label: str | Path | None = None) -> Iterator[Path]:
    """Hold the writer lock of ``path`` for the ``with`` block; yield the lock file's path.

    A second holder raises :class:`LockHeld` at once, or with ``wait`` calls ``on_wait(label, holder)``
    (by default a line on stderr) and blocks until the lock is free; ``label`` (default ``path``)
    is the name the messages give.
    """
    path = Path(path)
    fd = _acquire(path, wait, on_wait, str(label or path))
    try:
        yield lock_path(path)
    finally:
        try:
            os.unlink(lock_path(path))      # while still holding it: a waiter then retries on a new file
        except FileNotFoundError:
            pass
        os.close(fd)
