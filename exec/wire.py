"""Python objects holding arrays, between MPI processes: a small pickled header, the arrays by buffer protocol.

:func:`send` pickles ``obj`` with protocol 5 and out-of-band buffers: the header (structure, levels,
scales, shapes: a few hundred bytes) goes as one pickled message, every contiguous array as its own
``Isend`` of its raw memory (no copy into a pickle).  :func:`recv` receives the header, posts an
``Irecv`` into a fresh buffer per array and rebuilds the object around those buffers (numpy arrays
over the received memory, no copy).  Messages of one (source, tag) arrive in the order sent (MPI's
non-overtaking rule), so a header and its arrays share a tag.

Waiting never spins at full speed: processes here may outnumber the cores (virtual devices on a
CPU), and a waiter that polls flat out takes the core from the rank it waits for.  :func:`wait`
tests, yields, then sleeps with a growing pause (at most :data:`MAX_PAUSE_S`).
"""
from __future__ import annotations

import os
import pickle
import time
from typing import Any

from mpi4py import MPI

#: the longest pause between two tests of a pending request (seconds)
MAX_PAUSE_S = 1e-3
_YIELDS = 50


class Outgoing:
    """Requests of one :func:`send`; keeps the object (and so its arrays) alive until they complete."""

    def __init__(self, requests: list[Any], keep: Any) -> None:
        self.requests = requests
        self._keep = keep

    def done(self) -> bool:
        return bool(MPI.Request.Testall(self.requests))


def send(comm: Any, obj: Any, dest: int, tag: int) -> Outgoing:
    """Start sending ``obj`` to ``dest`` (non-blocking); complete it with :func:`wait` or ``Outgoing.done``."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    reqs = [comm.isend((head, [r.nbytes for r in raws]), dest=dest, tag=tag)]
    reqs += [comm.Isend([r, MPI.BYTE], dest=dest, tag=tag) for r in raws]
    return Outgoing(reqs, (obj, raws))


def arrived(comm: Any, source: int, tag: int) -> bool:
    """Whether a message from ``source`` with ``tag`` is waiting (non-blocking)."""
    return bool(comm.iprobe(source=source, tag=tag))


def recv(comm: Any, source: int, tag: int, status: Any = None) -> Any:
    """The next object :func:`send` sent from ``source`` with ``tag`` (``MPI.ANY_SOURCE`` allowed: ``status``
    then says who sent it)."""
    st = MPI.Status()
    wait_for(lambda: comm.iprobe(source=source, tag=tag, status=st))
    src, tg = st.Get_source(), st.Get_tag()
    head, sizes = comm.recv(source=src, tag=tg)
    bufs = [bytearray(n) for n in sizes]
    wait([comm.Irecv([b, MPI.BYTE], source=src, tag=tg) for b in bufs])
    if status is not None:
        status.source, status.tag = src, tg
    return pickle.loads(head, buffers=bufs)


def wait(requests: list[Any]) -> None:
    """Complete ``requests`` without holding a core while others run."""
    wait_for(lambda: MPI.Request.Testall(requests))


def wait_for(ready: Any, timeout: float | None = None) -> bool:
    """Poll ``ready()`` (test, then yield, then sleep up to :data:`MAX_PAUSE_S`); False after ``timeout`` s."""
    k = 0
    start = time.monotonic()
    while not ready():
        if k < _YIELDS:
            os.sched_yield()
        else:
            time.sleep(min(MAX_PAUSE_S, 1e-5 * 2 ** min(k - _YIELDS, 10)))
            if timeout is not None and time.monotonic() - start > timeout:
                return False
        k += 1
    return True


class Status:
    """Who sent a message received with ``MPI.ANY_SOURCE`` / ``ANY_TAG``."""

    source: int = -1
    tag: int = -1
