"""The ``threads`` setting of the compiled CPU kernels: how many threads one kernel call may use.

A kernel call is split into contiguous ranges of limbs (rows) -- or of coefficients (columns)
for base conversion -- and the ranges run on a small pool of Python threads.  The kernels are
numba functions compiled with ``nogil=True``, so those threads run truly in parallel.  Numba's
own ``prange`` is not used: the executor calls kernels from several device threads at once, and
numba's default ``workqueue`` threading layer aborts on concurrent parallel launches.

The setting is process-wide.  It defaults to ``$AEGIS_THREADS`` or 1 (benchmarks rely on 1 so
that ratios against single-threaded peers stay comparable).  Results do not depend on it.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["get_threads", "set_threads", "using_threads", "run_split"]

#: do not split a call below this many uint64 elements per range (thread hand-off costs ~10-30 us)
MIN_ELEMS_PER_RANGE = 1 << 15

_threads = 1
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()


def _from_env() -> int:
    """``$AEGIS_THREADS`` when it is an integer >= 1, else 1 (with a warning when it is set but bad)."""
    raw = os.environ.get("AEGIS_THREADS", "").strip()
    if not raw:
        return 1
    if raw.isdigit() and int(raw) >= 1:
        return int(raw)
    import warnings

    warnings.warn(f"AEGIS_THREADS={raw!r} is not an integer >= 1; using 1 thread", stacklevel=2)
    return 1


def get_threads() -> int:
    """Threads one compiled kernel call may use (>= 1)."""
    return _threads


def set_threads(n: int) -> None:
    """Let each compiled kernel call use up to ``n`` threads (``n >= 1``)."""
    global _threads
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be an integer >= 1, got {n!r}")
    _threads = n


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run a block with the ``threads`` setting at ``n``, restoring the previous value after."""
    old = get_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(old)


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aegis-kernel")
            _pool_size = workers
        return _pool


def run_split(kernel: Callable[..., Any], args: tuple[Any, ...], total: int, elems_per_item: int) -> None:
    """Call ``kernel(*args, lo, hi)`` over ``[0, total)``, split into up to ``threads`` ranges.

    ``elems_per_item`` (uint64 elements touched per row or column) decides whether a split pays:
    each range gets at least :data:`MIN_ELEMS_PER_RANGE` elements.  The calling thread runs the
    first range itself; the call returns when every range is done (exceptions propagate).
    """
    parts = min(_threads, total, max(1, (total * elems_per_item) // MIN_ELEMS_PER_RANGE))
    if parts <= 1:
        kernel(*args, 0, total)
        return
    bounds = [total * i // parts for i in range(parts + 1)]
    pool = _get_pool(parts - 1)
    futures = [pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        kernel(*args, bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


_threads = _from_env()
