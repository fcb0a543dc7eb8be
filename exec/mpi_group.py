"""The participants of limb-split ops as MPI processes: :class:`exec.limb.LimbGroup`'s calls between ranks.

One communicator per group of devices (made once per run, in the same order on every rank).  Every
call is point to point on that communicator (:mod:`exec.wire`: arrays by buffer protocol), each
participant sending exactly what the collective gives the others -- its own rows to everyone
(``allgather``), the rows of each one's own limbs (``alltoall``, the reduce-scatter of output
aggregation), the root's value (``bcast``) -- and counting it at the sender.  The participants call
the same collectives in the same order (they run the same ops), so a running sequence number is
the tag that keeps consecutive collectives apart.
"""
from __future__ import annotations

from typing import Any

from . import wire
from .comm import Communicator
from .limb import payload_bytes

TAG_SPACE = 1 << 28


class MPILimbGroup:
    """Device ``devices[pos]`` of a limb group, talking to the others over ``comm`` (rank = position)."""

    def __init__(self, devices: tuple[int, ...], comm: Any, counter: Communicator) -> None:
        self.devices = devices
        self.mpi = comm
        self.comm = counter
        self.pos = comm.Get_rank()
        self._seq = 0

    def _tag(self) -> int:
        self._seq = (self._seq + 1) % TAG_SPACE
        return self._seq

    def _swap(self, pos: int, pieces: list[Any], count: str | None) -> list[Any]:
        """Send ``pieces[q]`` to every other participant q, receive theirs; count what is sent in phase ``count``."""
        tag = self._tag()
        out = []
        for q, v in enumerate(pieces):
            if q != pos:
                out.append(wire.send(self.mpi, v, q, tag))
                if count is not None:
                    self.comm._count(self.devices[pos], self.devices[q], count, payload_bytes(v))
        got = [pieces[pos] if q == pos else wire.recv(self.mpi, q, tag) for q in range(len(self.devices))]
        wire.wait([r for o in out for r in o.requests])
        return got

    def exchange(self, pos: int, value: Any) -> list[Any]:
        """Every participant's ``value`` (not counted: client traffic)."""
        return self._swap(pos, [value] * len(self.devices), None)

    def allgather(self, pos: int, value: Any, phase: str) -> list[Any]:
        return self._swap(pos, [value] * len(self.devices), phase)

    def alltoall(self, pos: int, pieces: list[Any], phase: str) -> list[Any]:
        return self._swap(pos, pieces, phase)

    def bcast(self, pos: int, root: int, value: Any, phase: str) -> Any:
        tag = self._tag()
        if pos != root:
            return wire.recv(self.mpi, root, tag)
        out = []
        for q in range(len(self.devices)):
            if q != pos:
                out.append(wire.send(self.mpi, value, q, tag))
                self.comm._count(self.devices[pos], self.devices[q], phase, payload_bytes(value))
        wire.wait([r for o in out for r in o.requests])
        return value

    def abort(self) -> None:
        """Nothing to release: a failed rank takes the whole MPI job down (``exec.launch``)."""
