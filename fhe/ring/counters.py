"""Counting what the ring kernels really touch, to check the cost formulas.

Inside ``with count_kernels() as tally:`` every call of a ``@counted`` kernel
adds to ``tally[name]`` the bytes of its array operands (read), the bytes of
its result (written) and one call.  Outside such a block counting is a single
``if`` per call.
"""
from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class KernelTally:
    calls: int = 0
    bytes_read: int = 0
    bytes_written: int = 0


_active: list[dict[str, KernelTally]] = []


def _nbytes(x: Any) -> int:
    return int(getattr(x, "nbytes", 0)) if hasattr(x, "shape") else 0


def counted(name: str) -> Callable[[F], F]:
    """Decorate a kernel so active tallies record its calls and operand/result bytes."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            if _active:
                read = sum(_nbytes(a) for a in args[1:]) + sum(_nbytes(a) for a in kwargs.values())
                for tally in _active:
                    t = tally[name]
                    t.calls += 1
                    t.bytes_read += read
                    t.bytes_written += _nbytes(out)
            return out

        return inner  # type: ignore[return-value]

    return wrap


@contextlib.contextmanager
def count_kernels() -> Iterator[dict[str, KernelTally]]:
    """Collect per-kernel tallies for the duration of the block."""
    tally: dict[str, KernelTally] = defaultdict(KernelTally)
    _active.append(tally)
    try:
        yield tally
    finally:
        _active.remove(tally)
