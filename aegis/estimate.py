"""The cost estimate the placement search scores candidates with, shared with the simulator.

One formula for a primitive's seconds on one device (the simulator's untabled kernel time,
:class:`sim.compute.KernelModel` calls :func:`prim_seconds`):

    t = max(bytes / (hbm_bytes_per_s x memory_efficiency), mod_ops / (mod_ops_per_s x compute_efficiency))
        / kernel_efficiency[prim] + kernel calls x launch_overhead_s

with bytes, modular operations and kernel calls of the profile's kernel style (``device.kernels``:
``unfused``, our rings' kernels one step per launch, or ``fused``, a fused GPU library's launches and
HBM traffic, :class:`fhe.costs.FusedCosts`) and word size (``device.word_bits`` 64 or 32 with
``device.prime_bits``-bit primes: :class:`fhe.costs.WordSize`; 32 needs fused kernels).

Under limb parallelism on a group of ``g`` devices a device runs its own Q limbs plus every
special prime for key-switching primitives (as the simulator does), and waits for the op's
limb exchanges (:func:`aegis.placement.base.limb_internal_comm` bytes over one link).

:func:`makespan` is a list schedule in program order: an op starts when every device of its
group is free and its inputs have arrived (a transfer takes ``bytes per destination /
link rate + latency`` after its producers finish); key fetches run beside compute, so they
only bound the makespan by the bytes each device receives over its link.  It sees neither
link contention nor HBM sharing, and it processes ops in program order, so a transfer waiting on an op
that program order places later is counted from time 0: ``tests/aegis/test_search.py`` checks it
against the simulator on the candidates the search scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhe.costs import WORD64, WordSize
from fhe.params import CKKSParameters

from .comm import pair_bytes
from .prims import KEY_PRIMS, Work, limb_bytes, own_limbs, prim_cost_styled
from .program import Program

#: primitives whose work includes the special primes P (replicated under limb parallelism)
P_PRIMS = frozenset(KEY_PRIMS) | {"hoist", "keyexp"}
DEVICE_DEFAULTS = {"memory_efficiency": 0.7, "compute_efficiency": 0.5, "launch_overhead_s": 0.0}
#: kernel styles a profile's ``device.kernels`` may name
KERNEL_STYLES = ("unfused", "fused")


def word_of(device: dict[str, Any]) -> WordSize:
    """The word size a profile's ``device`` block names (``word_bits`` 64 by default, ``prime_bits`` for 32)."""
    bits = int(device.get("word_bits", 64))
    if bits == 64:
        return WORD64
    if bits == 32:
        return WordSize(4, int(device.get("prime_bits", 30)))
    raise ValueError(f"device.word_bits must be 64 or 32, got {bits}")


@dataclass(frozen=True)
class DeviceRates:
    """What a primitive's time depends on (a hardware profile's ``device`` block)."""

    hbm_bytes_per_s: float
    mod_ops_per_s: float
    launch_overhead_s: float = 0.0
    memory_efficiency: float = 0.7
    compute_efficiency: float = 0.5
    kernel_efficiency: tuple[tuple[str, float], ...] = ()
    fused: bool = False
    word: WordSize = WORD64

    @classmethod
    def from_raw(cls, device: dict[str, Any]) -> "DeviceRates":
        return cls(float(device.get("hbm_bytes_per_s", 1.0)), float(device.get("mod_ops_per_s", 1e30)),
                   float(device.get("launch_overhead_s", 0.0)), float(device.get("memory_efficiency", 0.7)),
                   float(device.get("compute_efficiency", 0.5)),
                   tuple(sorted((str(k), float(v)) for k, v in (device.get("kernel_efficiency") or {}).items())),
                   device.get("kernels", "unfused") == "fused", word_of(device))


@lru_cache(maxsize=None)
def prim_seconds(params: CKKSParameters, rates: DeviceRates, prim: str, level: int) -> float:
    """Seconds of one primitive at ``level`` on one device (the roofline of :mod:`fhe.costs` plus launches,
    in the rates' kernel style and word size)."""
    c = prim_cost_styled(params, prim, level, rates.fused, rates.word)
    eff = dict(rates.kernel_efficiency).get(prim, 1.0)
    return max(c.bytes_moved / (rates.hbm_bytes_per_s * rates.memory_efficiency),
               c.mod_ops / (rates.mod_ops_per_s * rates.compute_efficiency)) / eff + c.calls * rates.launch_overhead_s


@lru_cache(maxsize=None)
def work_seconds(params: CKKSParameters, rates: DeviceRates, work: Work, group: int = 1) -> float:
    """Seconds of a work list on the busiest device of a limb group of ``group`` devices (device 0: most limbs)."""
    K = params.p_count
    total = 0.0
    for prim, lvl, n in work:
        t = prim_seconds(params, rates, prim, lvl) * n
        if group > 1:
            l1 = lvl + 1
            own = own_limbs(l1, group, 0)
            t *= (own + K) / (l1 + K) if prim in P_PRIMS else own / l1
        total += t
    return total


@dataclass(frozen=True)
class LinkRate:
    """One link: bytes per second and latency per transfer."""

    bytes_per_s: float
    latency_s: float

    @classmethod
    def from_raw(cls, topology: dict[str, Any]) -> "LinkRate":
        bw = float(topology.get("link_bytes_per_s") or 1e11) * float(topology.get("collective_efficiency", 1.0))
        return cls(bw, float(topology.get("link_latency_s", 0.0)))


def rates_of(hardware: Any) -> tuple[DeviceRates, LinkRate]:
    """Device and link rates of a :class:`aegis.hardware.HardwareProfile` (defaults without one)."""
    raw = hardware.raw if hardware is not None else {}
    return DeviceRates.from_raw(raw.get("device", {})), LinkRate.from_raw(raw.get("topology", {}))


@lru_cache(maxsize=None)
def key_expansion_seconds(params: CKKSParameters, rates: DeviceRates, work: Work, group: int = 1) -> float:
    """Extra seconds of ``work`` when its keys are seed-compressed (one ``keyexp`` per key switch)."""
    extra = tuple(("keyexp", lvl, n) for p, lvl, n in work if p in KEY_PRIMS)
    return work_seconds(params, rates, extra, group) if extra else 0.0


def makespan(program: Program, assign: list[tuple[int, ...]], mode: list[str], comm: list,
             rates: DeviceRates, link: LinkRate, devices: int, seeded_keys: bool = False) -> tuple[float, list[float]]:
    """(estimated makespan in seconds, busy seconds per device) of a placement (see the module docstring);
    ``seeded_keys`` adds the expansion of seed-compressed keys to every key switch."""
    p = program.params
    lb = limb_bytes(p)
    ops = program.ops
    incoming: dict[int, list] = {}
    internal: dict[int, float] = {}
    fetch_in = [0] * devices
    fetches: dict[int, list] = {}
    link_free = [0.0] * devices          # key fetches into one device share its inbound link, one at a time
    for c in comm:
        pb = pair_bytes(c, lb)
        if c.internal:
            per_dev = max((sum(b for (s, d), b in pb.items() if d == x) for x in c.participants), default=0)
            internal[c.after[0]] = internal.get(c.after[0], 0.0) + per_dev / link.bytes_per_s \
                + c.count * link.latency_s
            continue
        if "key" in c.args:
            for (_, d), b in pb.items():
                fetch_in[d] += b
            for b in c.before:             # its consumer waits for it (after the op that frees its space)
                fetches.setdefault(b, []).append((c.after, c.participants[1],
                                                  c.total_bytes / link.bytes_per_s + link.latency_s))
            continue
        per_dst = max(pb.values(), default=0)
        for b in c.before:
            incoming.setdefault(b, []).append((c.after, per_dst / link.bytes_per_s + link.latency_s))
    free = [0.0] * devices
    busy = [0.0] * devices
    finish = [0.0] * len(ops)
    for o in ops:
        devs = assign[o.id]
        g = len(devs) if mode[o.id] == "limb" else 1
        dur = work_seconds(p, rates, o.work, g) + internal.get(o.id, 0.0)
        if mode[o.id] == "partial":
            dur = work_seconds(p, rates, o.work, 1) / len(devs)
        if seeded_keys:
            dur += key_expansion_seconds(p, rates, o.work, g)
        ready = max((finish[s] for s in o.inputs), default=0.0)
        for after, t in incoming.get(o.id, ()):
            ready = max(ready, max((finish[a] for a in after), default=0.0) + t)
        for after, dst, t in fetches.get(o.id, ()):
            link_free[dst] = max(link_free[dst], max((finish[a] for a in after), default=0.0)) + t
            ready = max(ready, link_free[dst])
        start = max([ready] + [free[d] for d in devs])
        finish[o.id] = start + dur
        for d in devs:
            free[d] = finish[o.id]
            busy[d] += dur
    span = max(finish, default=0.0)
    return max(span, max(fetch_in, default=0) / link.bytes_per_s), busy
