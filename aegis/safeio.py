"""Checked inputs and atomic outputs for the command line and the writers behind it.

* :class:`UsageError` (a ``ValueError``): the command line asks for something wrong (exit 2);
  :class:`Failure` (a ``RuntimeError``): the work ran and did not succeed (exit 1).
* :func:`check_output` / :func:`check_input`: refuse a bad path *before* any work, in one line that names the
  path and what would be right.
* :func:`atomic_path` / :func:`atomic_write`: write to a temporary name beside the target and rename it into
  place, so an interrupted or failed writer never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal


class UsageError(ValueError):
    """A bad value, combination, path or input file on the command line."""


class Failure(RuntimeError):
    """Work that ran and failed its own check (a run off its precision bound, a plan that does not fit)."""


Kind = Literal["file", "dir"]


def check_output(path: str | Path, kind: Kind = "file", suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as an output of ``kind``: refuse an existing path of the other kind, a parent that is missing or
    not a directory, an unwritable directory, or (for a file) a suffix outside ``suffixes`` when given."""
    p = Path(path)
    what = "output directory" if kind == "dir" else "output file"
    if p.exists() or p.is_symlink():
        if kind == "file" and p.is_dir():
            raise UsageError(f"{what} {p} is a directory; give a file name")
        if kind == "dir" and not p.is_dir():
            raise UsageError(f"{what} {p} exists and is not a directory; give a new or existing directory")
    if suffixes and kind == "file" and p.suffix.lower() not in suffixes:
        raise UsageError(f"{what} {p}: expected a name ending in {' or '.join(suffixes)}")
    parent = p.parent
    for a in [parent, *parent.parents]:            # the nearest existing ancestor must be a writable directory
        if a.exists():
            if not a.is_dir():
                raise UsageError(f"{what} {p}: {a} is not a directory")
            break
    if not parent.exists():
        raise UsageError(f"{what} {p}: directory {parent} does not exist; create it first")
    target = p if (kind == "dir" and p.is_dir()) else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {p}: {target} is not writable")
    return p


def check_input(path: str | Path, kind: Kind = "file", what: str = "input file") -> Path:
    """``path`` as an existing, readable input of ``kind``."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{what} {p} does not exist")
    if kind == "file" and not p.is_file():
        raise UsageError(f"{what} {p} is not a file")
    if kind == "dir" and not p.is_dir():
        raise UsageError(f"{what} {p} is not a directory")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what} {p} is not readable")
    return p


def read_json(path: str | Path, what: str = "input file") -> Any:
    """The JSON document in ``path``, or a :class:`UsageError` naming the file and the problem."""
    p = check_input(path, "file", what)
    try:
        return json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{what} {p} is not valid JSON ({exc})") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds, removed
    when it raises (or is interrupted)."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp" + p.suffix, dir=p.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that appears at ``path`` only complete (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode, **kw) as f:
        yield f


def write_text(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_write(path) as f:
        f.write(text)
