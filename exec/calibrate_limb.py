"""Calibration of limb-split primitives: the real :class:`exec.limb.LimbEvaluator` on G worker threads.

A primitive split over the limbs of G virtual devices costs more than its limb share of the
single-device time, for reasons the share formula does not see:

* every call keeps its fixed cost (interpreter, dispatch, small-array set-up) on every device;
* the special primes P are computed on every device, and ModUp reads whole digits;
* giant steps with output aggregation (:meth:`LimbEvaluator.rotate_sum`) multiply the key over
  *all* Q limbs and P on every device, and their ModDown runs once per output (``gout``);
* every exchange is a thread rendezvous, and concurrent workers share cores and the
  interpreter lock.

Instead of modelling each, this module times each primitive as the executor runs it: G threads,
one ``LimbEvaluator`` each, call it back to back (their exchanges synchronise them) and the
seconds per call is the group's wall time divided by the calls (:func:`group_times`).  The
samples per limb count and a ``fixed_s + per_limb_s x limbs`` fit (limbs of the whole
ciphertext) are kept per group size; :mod:`sim.compute` uses them for limb-split ops of that
group size.  The measurement includes the exchanges inside the
primitive and the concurrency of the G busy workers.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fhe import CKKSContext, Client, Evaluator

from .comm import make_communicator
from .limb import LimbEvaluator, LimbGroup, shard

#: primitives timed under limb parallelism (``modraise`` is not executed: no server bootstrapping)
LIMB_PRIMS = ("add", "pmul", "tensor", "relin", "rot", "hoist", "hrot", "giant", "gout", "rescale", "encode")


def group_times(jobs: list[list[Callable[[], Any]]], repeats: int = 3, min_repeat_s: float = 0.01) -> list[float]:
    """Seconds per call of each job, run concurrently by one thread per position (best of ``repeats`` rounds).

    ``jobs[j][pos]`` is what the thread at ``pos`` calls for job ``j``.  Each round times every
    job once: all threads start it together (a barrier) and its time runs from the first
    thread's start to the last thread's end of ``calls[j]`` calls, chosen after a timed warm-up
    so that it lasts about ``min_repeat_s`` (the barriers then cost little against it).  Each
    thread stamps its own times: a timer thread descheduled under load would misread them.
    Rounds spread each job's samples over the whole calibration.  The best round is kept, as for
    single-device primitives: under load from other processes a group's rendezvous waits for
    descheduled threads far more in short calls than in a long run (measured: medians predicted
    a limb run on 2 devices 2.9 x the single-device run under a load of 5 on 2 cores; it took 1.05 x).
    """
    G = len(jobs[0]) if jobs else 0
    if not G:
        return []
    barrier = threading.Barrier(G)
    calls = [1] * len(jobs)
    warm = [[0.0] * G for _ in jobs]
    begin = [[[0.0] * G for _ in jobs] for _ in range(repeats)]
    end = [[[0.0] * G for _ in jobs] for _ in range(repeats)]
    errors: list[BaseException] = []

    def worker(pos: int) -> None:
        try:
            for j, fns in enumerate(jobs):               # warm-up (caches, numba), then one timed call
                fns[pos]()
                barrier.wait()
                t0 = time.perf_counter()
                fns[pos]()
                warm[j][pos] = time.perf_counter() - t0
            barrier.wait()
            if pos == 0:
                for j in range(len(jobs)):
                    calls[j] = max(1, min(50, int(min_repeat_s / max(max(warm[j]), 1e-6))))
            barrier.wait()
            for r in range(repeats):
                for j, fns in enumerate(jobs):
                    barrier.wait()
                    begin[r][j][pos] = time.perf_counter()
                    for _ in range(calls[j]):
                        fns[pos]()
                    end[r][j][pos] = time.perf_counter()
        except threading.BrokenBarrierError:
            pass
        except BaseException as exc:                     # do not leave the others waiting
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(G)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return [min(max(end[r][j]) - min(begin[r][j]) for r in range(repeats)) / calls[j] for j in range(len(jobs))]


def time_limb_prims(ctx: CKKSContext, groups: list[int], levels: list[int], repeats: int = 3,
                    backend: str = "numpy") -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Seconds per limb-split primitive: ``{str(G): {prim: [(limbs, seconds), ...]}}``.

    ``hrot`` is (four hoisted rotations - their ModUp) / 4; ``giant`` is the slope of
    ``rotate_sum`` over 1 and 3 rotated terms and ``gout`` its intercept (the per-output ModDown
    and reduce-scatter).
    """
    p = ctx.params
    client = Client(ctx, rotations=[1, 2, 3, 4])
    keys = client.evaluation_keys
    whole = Evaluator(ctx, keys)
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for G in groups:
        group = LimbGroup(tuple(range(G)), make_communicator(backend, G))
        evs = [LimbEvaluator(ctx, keys, group, pos) for pos in range(G)]
        rec: dict[str, list[tuple[int, float]]] = {}
        names: list[tuple[str, int]] = []
        work: list[list[Callable[[], Any]]] = []
        for lvl in levels:
            a = client.encrypt(rng.uniform(-1, 1, p.slots), level=lvl)
            b = client.encrypt(rng.uniform(-1, 1, p.slots), level=lvl)
            prod = whole.mul(a, b)
            pt = whole.encoder.encode(rng.uniform(-1, 1, p.slots), level=lvl)
            vals = rng.uniform(-1, 1, p.slots)
            sh = [(shard(a, G, q), shard(b, G, q), shard(prod, G, q)) for q in range(G)]

            def jobs(q: int, pt: Any, vals: Any, lvl: int, sh: list) -> dict[str, Callable[[], Any]]:
                e, (x, y, xy) = evs[q], sh[q]                 # bound here: the calls run after the loop
                j: dict[str, Callable[[], Any]] = {
                    "add": lambda: e.add(x, y),
                    "pmul": lambda: e.mul_plain(x, pt),
                    "tensor": lambda: e.mul(x, y),
                    "relin": lambda: e.relinearize(xy),
                    "rot": lambda: e.rotate(x, 1),
                    "hoist": lambda: e.mod_up(x),
                    "hoist4": lambda: e.rotate_hoisted(x, [1, 2, 3, 4]),
                    "sum1": lambda: e.rotate_sum([(x, 1)]),
                    "sum3": lambda: e.rotate_sum([(x, 1), (x, 2), (x, 3)]),
                    "encode": lambda: e.encoder.encode(vals, level=lvl),
                }
                if lvl >= 1:
                    j["rescale"] = lambda: e.rescale(x)
                return j

            per = [jobs(q, pt, vals, lvl, sh) for q in range(G)]
            for name in per[0]:
                names.append((name, lvl))
                work.append([per[q][name] for q in range(G)])
        t = dict(zip(names, group_times(work, repeats)))
        for lvl in levels:
            t[("hrot", lvl)] = max(t.pop(("hoist4", lvl)) - t[("hoist", lvl)], 0.0) / 4
            s1, s3 = t.pop(("sum1", lvl)), t.pop(("sum3", lvl))
            t[("giant", lvl)] = max(s3 - s1, 0.0) / 2
            t[("gout", lvl)] = max(s1 - t[("giant", lvl)], 0.0)
        for (name, lvl), sec in sorted(t.items()):
            rec.setdefault(name, []).append((lvl + 1, sec))
        out[str(G)] = rec
    return out
