"""Where a sweep's configurations run: in this process, on a local process pool, or on a Dask cluster.

One interface serves every scheduler (:class:`Runner`): ``results(fn, items)`` submits ``fn(item)`` for
every item and yields ``(item, outcome)`` pairs as they finish, ``outcome`` being the return value or
the exception that stopped that item (a task that raised, a worker process that died, a Dask task
whose workers kept dying).  The caller -- the sweep's one writer -- turns each outcome into a row.

Schedulers (:func:`parse_scheduler`):

- ``local``: a spawn process pool over ``workers`` cores (one item, or one worker: in this process);
- ``dask-local``: a Dask ``LocalCluster`` of ``workers`` single-threaded worker processes on this machine;
- ``dask://HOST:PORT``: an existing ``dask.distributed`` cluster (``dask scheduler`` and ``dask worker``
  processes, each worker with this package installed).  The scheduler is reached, and every worker
  checked to run the same AEGIS source as this process, before the sweep touches its output.

Only the item (a small dict) travels to a worker: the function is sent by reference (module and
name), so a worker imports it from its own installed package, and whatever it builds stays there.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

LOCAL = "local"
DASK_LOCAL = "dask-local"
DASK_PREFIX = "dask://"
#: seconds to wait for a Dask scheduler to answer before giving up
CONNECT_TIMEOUT_S = 10.0
#: the packages whose source a Dask worker must share with this process (see :func:`source_fingerprint`)
SOURCE_PACKAGES = ("aegis", "sim", "fhe")
DASK_EXTRA = "pip install 'dask[distributed]>=2024.8' (the `dask` extra of aegis-fhe)"

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$")


class SchedulerUnreachable(RuntimeError):
    """The Dask scheduler did not answer, or its workers cannot run this sweep (exit status 1)."""


class DaskUnavailable(ValueError):
    """A Dask scheduler was asked for but ``dask.distributed`` is not installed here (exit status 2)."""


def parse_scheduler(text: str) -> str:
    """``local``, ``dask-local`` or ``dask://HOST:PORT`` (port 1-65535), normalised; ValueError saying what is valid."""
    t = text.strip()
    if t in (LOCAL, DASK_LOCAL):
        return t
    valid = f"valid: {LOCAL}, {DASK_LOCAL}, or {DASK_PREFIX}HOST:PORT (a running `dask scheduler`)"
    if not t.startswith(DASK_PREFIX):
        raise ValueError(f"scheduler {text!r}: {valid}")
    host, sep, port = t[len(DASK_PREFIX):].rpartition(":")
    if not sep or not _HOST.match(host):
        raise ValueError(f"scheduler {text!r}: expected {DASK_PREFIX}HOST:PORT, e.g. {DASK_PREFIX}10.0.0.5:8786")
    if not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"scheduler {text!r}: the port must be a number from 1 to 65535, got {port!r}")
    return f"{DASK_PREFIX}{host}:{int(port)}"


def source_fingerprint() -> str:
    """A hash (hex) of the ``.py`` files of :data:`SOURCE_PACKAGES` as this process imports them: two processes
    with the same fingerprint compute the same rows."""
    h = hashlib.blake2b(digest_size=8)
    for pkg in SOURCE_PACKAGES:
        root = Path(sys.modules[pkg].__file__ if pkg in sys.modules else __import__(pkg).__file__).parent
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root.parent)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


class Runner(Protocol):
    """Runs ``fn`` over items somewhere; see the module docstring."""

    #: what runs the items, for the sweep's first line (e.g. "2 local processes")
    description: str

    def results(self, fn: Callable[[Any], Any], items: list[Any]) -> Generator[tuple[Any, Any], None, None]:
        """``(item, fn(item) or the exception it ended with)`` for every item, in the order they finish; closing
        the generator early stops what is still running."""
        ...


class SerialRunner:
    """Every item in this process, in order (one worker, or one item)."""

    description = "this process"

    def results(self, fn: Callable[[Any], Any], items: list[Any]) -> Generator[tuple[Any, Any], None, None]:
        for it in items:
            try:
                out: Any = fn(it)
            except Exception as exc:   # noqa: BLE001 -- a failure is the item's outcome; Ctrl-C goes through
                out = exc
            yield it, out


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which terminates them (no traceback from every worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PoolRunner:
    """A spawn process pool of ``workers`` processes on this machine; a worker that dies fails the items not yet
    done (``BrokenProcessPool``) instead of hanging the sweep."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.description = f"{workers} local processes" if workers > 1 else "this process"

    def results(self, fn: Callable[[Any], Any], items: list[Any]) -> Generator[tuple[Any, Any], None, None]:
        if self.workers <= 1 or len(items) <= 1:
            yield from SerialRunner().results(fn, items)
            return
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        ex = ProcessPoolExecutor(min(self.workers, len(items)), mp_context=get_context("spawn"),
                                 initializer=_ignore_sigint)
        done = False
        try:
            futs = {ex.submit(fn, it): it for it in items}
            for f in as_completed(futs):
                exc = f.exception()
                yield futs.pop(f), (exc if exc is not None else f.result())
            done = True
        finally:
            if not done:                 # interrupted: stop the workers now rather than after their current item
                procs = list((getattr(ex, "_processes", None) or {}).values())
                ex.shutdown(wait=False, cancel_futures=True)
                for p in procs:
                    p.terminate()
            ex.shutdown(wait=True)


class DaskRunner:
    """Items as Dask tasks of a ``distributed`` client: longest-first priority, one task per item, each result
    released as soon as it is taken.  A task whose worker is lost is rerun elsewhere by Dask; one whose workers
    keep dying (``KilledWorker``) or that raises is a failed outcome."""

    def __init__(self, client: Any, description: str) -> None:
        self.client, self.description = client, description

    def results(self, fn: Callable[[Any], Any], items: list[Any]) -> Generator[tuple[Any, Any], None, None]:
        from distributed import as_completed

        tag, n = uuid.uuid4().hex[:8], len(items)
        futs = {self.client.submit(fn, it, key=f"aegis-sweep-{tag}-{i}", pure=False, priority=n - i): it
                for i, it in enumerate(items)}
        try:
            for f in as_completed(list(futs), loop=self.client.loop):
                it = futs.pop(f)
                try:
                    out: Any = f.result()
                except Exception as exc:   # noqa: BLE001 -- KilledWorker, CancelledError, the task's own error
                    out = exc
                f.release()
                yield it, out
        finally:
            if futs:                       # interrupted: nothing left running on the cluster for this sweep
                try:
                    self.client.cancel(list(futs))
                except Exception:   # noqa: BLE001 -- the scheduler may be gone already
                    pass


def _dask() -> Any:
    try:
        import distributed
    except ImportError:
        raise DaskUnavailable(f"a Dask scheduler needs dask.distributed, which is not installed: {DASK_EXTRA}") from None
    return distributed


def _check_workers(client: Any, address: str) -> int:
    """The number of workers; SchedulerUnreachable when a worker cannot import AEGIS or runs other source."""
    try:
        prints = client.run(source_fingerprint)
    except Exception as exc:   # noqa: BLE001 -- typically ModuleNotFoundError on a worker without the package
        raise SchedulerUnreachable(f"the workers of the Dask scheduler at {address} cannot run AEGIS "
                                   f"({type(exc).__name__}: {exc}); install this package on every worker") from None
    mine = source_fingerprint()
    other = sorted(w for w, fp in prints.items() if fp != mine)
    if other:
        raise SchedulerUnreachable(f"{len(other)} of the {len(prints)} workers of the Dask scheduler at {address} run "
                                   f"other AEGIS source than this process (first: {other[0]}); install the same "
                                   "version everywhere so that every row comes from the same code")
    return len(prints)


@contextmanager
def open_runner(scheduler: str = LOCAL, workers: int | None = None) -> Iterator[Runner]:
    """A :class:`Runner` for ``scheduler`` (see :func:`parse_scheduler`), closed on exit.

    ``workers``: processes for ``local`` and ``dask-local`` (default: every core); ignored by ``dask://``,
    whose cluster has its own.  ``dask://`` connects at once (within :data:`CONNECT_TIMEOUT_S` seconds,
    else :class:`SchedulerUnreachable`) and checks the workers (:func:`_check_workers`); ``dask-local``
    starts its cluster at once.
    """
    scheduler = parse_scheduler(scheduler)
    n = workers or os.cpu_count() or 1
    if scheduler == LOCAL:
        yield PoolRunner(n)
        return
    distributed = _dask()
    with _quiet("distributed"):
        with _dask_runner(distributed, scheduler, n) as runner:
            yield runner


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only critical records of ``logger`` while the sweep runs: a lost worker or scheduler is reported as the failed
    rows it causes (one line each), not as the client's multi-line log records and tracebacks."""
    names = [logger] + [n for n in logging.Logger.manager.loggerDict if n.startswith(logger + ".")]
    logs = [logging.getLogger(n) for n in names]           # distributed sets levels on some children itself
    levels = [lg.level for lg in logs]
    for lg in logs:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(logs, levels):
            lg.setLevel(level)


@contextmanager
def _dask_runner(distributed: Any, scheduler: str, n: int) -> Iterator[Runner]:
    if scheduler == DASK_LOCAL:
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            yield DaskRunner(client, f"a Dask LocalCluster of {n} worker processes")
        return
    address = "tcp://" + scheduler[len(DASK_PREFIX):]
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S:g} s "
                                   f"({type(exc).__name__}); is `dask scheduler` running there, and the port open?"
                                   ) from None
    try:
        k = _check_workers(client, address)
        where = f"the Dask cluster at {address} ({k} workers now" + ("; tasks wait for one to join)" if k == 0 else ")")
        yield DaskRunner(client, where)
    finally:
        client.close()
