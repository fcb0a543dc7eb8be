"""Kernel time: how long an op's primitives take on one device (seconds).

Without a calibrated table a primitive takes its roofline time on :mod:`fhe.costs`
figures (in the profile's kernel style and word size: ``device.kernels`` unfused / fused,
``device.word_bits``; :mod:`aegis.estimate`), plus one launch overhead per kernel call:

    t = max(bytes / (HBM bandwidth x memory_efficiency), mod_ops / (mod_ops_per_s x compute_efficiency))
        / kernel_efficiency[prim] + calls x launch_overhead

With ``kernel_table`` (written by the executor's calibration, same ring degree) a primitive
takes its measured seconds at that many limbs (``samples``, interpolated between measured
limb counts: key switching steps up with every digit, which no straight line follows), or
``fixed_s + per_limb_s x limbs`` outside them.  A profile with ``device.shared_cores`` (the ``cpu``
profile: virtual devices on one machine) slows an op by ``busy / shared_cores`` when more
devices compute at once than there are cores (:meth:`KernelModel.sharing`, applied by the
engine at each op's start); a calibrated ``device.concurrency_slowdown`` {devices: factor}
(measured by ``aegis calibrate``) replaces that estimate.  Under limb parallelism a device runs its own Q
limbs plus all special primes for key-switching primitives; a partial (row-split) op runs
1/|devices| of the work.

A calibrated ``kernel_table.executor_factor`` (the executor's measured time per op over the
table's prediction, from an in-situ calibration run) multiplies every table time; a calibrated
``kernel_table.executor_factor_by_kind`` {op kind: factor} (the same ratio per op kind of that run)
replaces it for the kinds it names (:meth:`KernelModel.situ`), and ``kernel_table.executor_factor_limb``
{group size: factor} (the ratio over an in-situ limb-split run on that many devices) replaces both for
the limb-split times of that group.

A calibrated ``kernel_table.limb`` {group size: {"prims": {prim: {fixed_s, per_limb_s}}}}
(:mod:`exec.calibrate_limb`) gives the measured seconds of a limb-split primitive on a group
of that size instead of the limb share, its ``samples`` or fit read the same way (limbs of the
whole ciphertext).  Such a time already contains the primitive's limb exchanges and the concurrency
of the group's busy devices (:meth:`KernelModel.limb_measured`: the engine then adds neither).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from aegis.estimate import P_PRIMS, DeviceRates, prim_seconds, word_of
from aegis.prims import Work, own_limbs
from fhe.params import CKKSParameters

from .profile import HardwareSpec



def table_seconds(fit: dict[str, float], samples: list | None, limbs: int) -> float:
    """Seconds of a calibrated primitive at ``limbs``: the samples ``[[limbs, s], ...]`` interpolated
    linearly where they cover ``limbs`` (exact at a measured count), else ``fixed_s + per_limb_s x limbs``."""
    if samples:
        xs = [float(x) for x, _ in samples]
        if min(xs) <= limbs <= max(xs):
            pts = sorted((float(x), float(y)) for x, y in samples)
            return float(np.interp(limbs, [x for x, _ in pts], [y for _, y in pts]))
    return float(fit["fixed_s"]) + float(fit["per_limb_s"]) * limbs


#: a kernel keeps at least this fraction of HBM bandwidth however busy the copy engines are
MIN_HBM_SHARE = 0.1


def hbm_slowdown(copy_bytes_per_s: float, hbm_bytes_per_s: float) -> float:
    """How much slower a (memory-bound) kernel runs while copy engines stream ``copy_bytes_per_s`` of HBM
    traffic on its device: ``hbm / (hbm - copy)``, capped where the kernel keeps :data:`MIN_HBM_SHARE`."""
    if copy_bytes_per_s <= 0:
        return 1.0
    return hbm_bytes_per_s / max(hbm_bytes_per_s - copy_bytes_per_s, MIN_HBM_SHARE * hbm_bytes_per_s)


class KernelModel:
    """Seconds per primitive and per op on one hardware profile."""

    def __init__(self, spec: HardwareSpec, params: CKKSParameters, devices: int = 1) -> None:
        self.spec = spec
        self.params = params
        d = spec.device
        # virtual devices sharing a CPU's cores run proportionally slower when they outnumber the cores
        dev = spec.raw.get("device", {})
        self._cores = dev.get("shared_cores")
        self._measured = {int(k): float(v) for k, v in (dev.get("concurrency_slowdown") or {}).items()}
        self.slowdown = 1.0
        self._bw = d.hbm_bytes_per_s * d.memory_efficiency
        self._ops = d.mod_ops_per_s * d.compute_efficiency
        self._launch = d.launch_overhead_s
        self._rates = DeviceRates(d.hbm_bytes_per_s, d.mod_ops_per_s, d.launch_overhead_s, d.memory_efficiency,
                                  d.compute_efficiency, tuple(sorted((str(k), float(v))
                                                                     for k, v in d.kernel_efficiency.items())),
                                  d.kernels == "fused", word_of(spec.raw.get("device", {})))
        t = spec.kernel_table
        self._table = t["prims"] if t and int(t["log_n"]) == params.log_n else {}
        self._samples = (t.get("samples") or {}) if self._table else {}
        self._limb = {int(g): (e["prims"], e.get("samples") or {}) for g, e in (t.get("limb") or {}).items()} \
            if self._table else {}
        # the executor's time per op over the tight-loop table (measured in situ by calibration)
        self._situ = float(t.get("executor_factor", 1.0)) if self._table else 1.0
        self._situ_kind = {str(k): float(v) for k, v in (t.get("executor_factor_by_kind") or {}).items()} \
            if self._table else {}
        self._situ_limb = {int(g): float(v) for g, v in (t.get("executor_factor_limb") or {}).items()} \
            if self._table else {}
        self.prim_time = lru_cache(maxsize=None)(self._prim_time)
        self.work_time = lru_cache(maxsize=None)(self._work_time)

    def _prim_time(self, prim: str, level: int) -> float:
        if prim in self._table:
            return table_seconds(self._table[prim], self._samples.get(prim), level + 1)
        return prim_seconds(self.params, self._rates, prim, level)        # the planner's estimate: one formula

    def limb_measured(self, group: int) -> bool:
        """Whether limb-split ops on ``group`` devices take calibrated group times (exchanges and the
        group's own concurrency included)."""
        return group > 1 and group in self._limb

    def sharing(self, busy: int) -> float:
        """How much slower a device runs while ``busy`` devices compute at once (1 unless they share cores).

        The calibrated ``concurrency_slowdown`` table is interpolated; without it, ``busy / shared_cores``.
        """
        if busy <= 1 or not (self._measured or self._cores):
            return 1.0
        if self._measured:
            ks = sorted(self._measured)
            if busy in self._measured:
                return max(1.0, self._measured[busy])
            lo = max([k for k in ks if k < busy], default=ks[0])
            hi = min([k for k in ks if k > busy], default=ks[-1])
            if hi == lo:
                return max(1.0, self._measured[lo] * busy / lo)
            f = (busy - lo) / (hi - lo)
            return max(1.0, self._measured[lo] + f * (self._measured[hi] - self._measured[lo]))
        return max(1.0, busy / float(self._cores))

    def situ(self, kind: str | None = None) -> float:
        """The in-situ factor on table times for ops of ``kind`` (1 without a calibrated table)."""
        return self._situ_kind.get(kind, self._situ) if self._table else 1.0

    def _work_time(self, work: Work, group: int = 1, index: int = 0, partial: int = 1,
                   kind: str | None = None) -> float:
        """Seconds of a work list of an op of ``kind`` on participant ``index`` of a limb group of
        ``group`` devices (table times scaled by :meth:`situ`)."""
        K = self.params.p_count
        limb, limb_samples = self._limb.get(group, ({}, {})) if group > 1 else ({}, {})
        situ = self.situ(kind)
        situ_limb = self._situ_limb.get(group, situ)
        total = 0.0
        for prim, lvl, n in work:
            if prim in limb:
                total += table_seconds(limb[prim], limb_samples.get(prim), lvl + 1) * n * situ_limb
                continue
            t = self.prim_time(prim, lvl) * n * (situ if prim in self._table else 1.0)
            if group > 1:
                l1 = lvl + 1
                own = own_limbs(l1, group, index)
                t *= (own + K) / (l1 + K) if prim in P_PRIMS else own / l1
            total += t / partial
        return total
