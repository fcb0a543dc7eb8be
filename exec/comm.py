"""Communicators: moving ciphertext data between devices, with every byte counted.

One interface, :class:`Communicator`:

* ``send(cts, src, dst, phase)`` -- point to point (a broadcast is a send to each destination);
* ``all_gather(shards, phase)`` -- every device receives every other device's limbs;
* ``reduce_scatter(partials, primes, phase)`` -- every device receives the modular sum of its
  own limbs over all devices' partial polynomials;
* ``all_reduce(partials, primes, phase)`` -- reduce-scatter then all-gather.

Limbs are owned round robin (limb i on device i mod G), as in :mod:`aegis.comm`, and bytes
are counted per (source, destination, phase) exactly as :func:`aegis.comm.pair_bytes`
predicts them.  ``NumpyCommunicator`` copies arrays between virtual devices;
``CupyCommunicator`` copies them between GPUs (peer copies) or between logical devices on
one GPU.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import numpy as np


class Communicator:
    """Base: byte accounting; subclasses implement :meth:`_copy`."""

    _xp: Any = np

    def __init__(self, devices: int) -> None:
        self.devices = devices
        self._bytes: dict[tuple[int, int, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def _count(self, src: int, dst: int, phase: str, nbytes: int) -> None:
        if src != dst and nbytes:
            with self._lock:
                self._bytes[(src, dst, phase)] += int(nbytes)

    def counted(self) -> dict[tuple[int, int, str], int]:
        """Bytes moved per (source, destination, phase)."""
        with self._lock:
            return dict(self._bytes)

    def _copy(self, array: Any, dst: int) -> Any:
        raise NotImplementedError

    # ---- ciphertexts -------------------------------------------------------------------------
    def send(self, cts: list[Any], src: int, dst: int, phase: str) -> list[Any]:
        """Copies of ciphertexts ``cts`` on device ``dst``."""
        out = []
        for ct in cts:
            parts = [self._copy(p, dst) for p in ct.parts]
            self._count(src, dst, phase, sum(p.nbytes for p in ct.parts))
            out.append(type(ct)(parts, ct.level, ct.scale))
        return out

    def send_arrays(self, arrays: list[Any], src: int, dst: int, phase: str) -> list[Any]:
        """Copies of raw arrays (an evaluation key's rows) on device ``dst``."""
        self._count(src, dst, phase, sum(int(a.nbytes) for a in arrays))
        return [self._copy(a, dst) for a in arrays]

    def send_limbs(self, sh: Any, src: int, dst: int, phase: str) -> Any:
        """A copy of a limb shard (exec.limb.LimbCiphertext) on ``dst``."""
        parts = [self._copy(p, dst) for p in sh.parts]
        self._count(src, dst, phase, sum(p.nbytes for p in sh.parts))
        return type(sh)(parts, sh.level, sh.scale, sh.own)

    def reduce_scatter_cts(self, partials: list[Any], devices: list[int], primes: Any, phase: str) -> list[Any]:
        """Whole partial-sum ciphertexts on ``devices`` -> each device's limb shard of their sum (mod q)."""
        from .limb import LimbCiphertext, own_limb_indices

        G = len(devices)
        lvl = partials[0].level
        out = []
        for pos, d in enumerate(devices):
            own = own_limb_indices(lvl, G, pos)
            parts = []
            for i in range(len(partials[0].parts)):
                acc = partials[pos].parts[i][list(own)].copy()
                for e_pos, e in enumerate(devices):
                    if e_pos == pos:
                        continue
                    rows = self._copy(partials[e_pos].parts[i][list(own)], d)
                    self._count(e, d, phase, rows.nbytes)
                    q = self._xp.asarray(np.array([primes[k] for k in own], dtype=np.uint64).reshape(-1, 1))
                    acc = (acc + rows) % q
                parts.append(acc)
            out.append(LimbCiphertext(parts, lvl, partials[0].scale, own))
        return out

    # ---- limb-level collectives on (limbs, N) arrays -------------------------------------------
    @staticmethod
    def owner(limb: int, devices: int) -> int:
        return limb % devices

    def all_gather(self, shards: list[dict[int, Any]], phase: str) -> list[dict[int, Any]]:
        """``shards[d]``: {limb: row} that device d owns -> every device gets every limb."""
        out = []
        for d in range(self.devices):
            got = dict(shards[d])
            for e in range(self.devices):
                if e == d:
                    continue
                for limb, row in shards[e].items():
                    got[limb] = self._copy(row, d)
                    self._count(e, d, phase, row.nbytes)
            out.append(got)
        return out

    def reduce_scatter(self, partials: list[Any], primes: list[int], phase: str) -> list[dict[int, Any]]:
        """``partials[d]``: (limbs, N) uint64 partial sums on device d -> each gets its own limbs, summed mod q."""
        limbs = partials[0].shape[0]
        out = []
        for d in range(self.devices):
            mine = {}
            for limb in range(d, limbs, self.devices):
                acc = partials[d][limb].copy()
                for e in range(self.devices):
                    if e == d:
                        continue
                    row = self._copy(partials[e][limb], d)
                    self._count(e, d, phase, row.nbytes)
                    acc = (acc + row) % np.uint64(primes[limb])
                mine[limb] = acc
            out.append(mine)
        return out

    def all_reduce(self, partials: list[Any], primes: list[int], phase: str) -> list[Any]:
        shards = self.reduce_scatter(partials, primes, phase)
        full = self.all_gather(shards, phase)
        return [np.stack([f[k] for k in range(len(f))]) for f in full]


class NumpyCommunicator(Communicator):
    """Virtual devices on this CPU: a transfer is a copy."""

    def _copy(self, array: Any, dst: int) -> Any:
        return np.array(array, copy=True)


class CupyCommunicator(Communicator):
    """CuPy arrays: peer copies between GPUs, or copies between logical devices on one GPU."""

    def __init__(self, devices: int, gpus: list[int] | None = None) -> None:
        super().__init__(devices)
        import cupy  # fails clearly when CuPy is absent

        self._xp = cupy
        self.gpus = gpus or [0] * devices

    def _copy(self, array: Any, dst: int) -> Any:
        import cupy

        with cupy.cuda.Device(self.gpus[dst]):
            return cupy.array(array, copy=True)


def make_communicator(backend: str, devices: int) -> Communicator:
    if backend == "numpy":
        return NumpyCommunicator(devices)
    if backend == "cupy":
        return CupyCommunicator(devices)
    raise ValueError(f"unknown backend {backend!r}; valid: numpy, cupy")
