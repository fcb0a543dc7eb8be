"""A measured run replayed on CPU time: the latency the run would have had with a core per device, alone.

Wall time measures the machine as it is: devices that outnumber its cores, and any other process on
it, slow every op.  Each op's CPU time (``time.thread_time`` in its device process) counts only the
work of that op.  :func:`cpu_latency` lays the measured ops out again in each device's order, every op
taking its CPU time, starting when its device is free, its transfers have arrived (the producer's
replayed end plus the sender's measured time to post them) and, for a limb-split op, when every
participant is there (they exchange inside the op, so the op ends with its slowest participant).
The result is what the simulator predicts for a plan when devices do not share cores
(``sim.compute.KernelModel.sharing`` off), and it is robust to other load on the machine: the gate of
``aegis check`` uses it for runs that carry it.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any


def cpu_latency(plan: Any, rows: list[tuple], cpu: list[float], comm_rows: list[tuple]) -> float:
    """Seconds: the replayed run's end (see the module docstring).  ``rows`` are Result op rows
    ``(op, kind, phase, layer, device, start, end, bytes)``, ``cpu`` their CPU seconds, ``comm_rows`` the
    senders' transfer rows ``(comm, kind, phase, layer, start, end, bytes, participants)``."""
    dur = {(r[0], r[4]): c for r, c in zip(rows, cpu)}
    post: dict[int, float] = defaultdict(float)                # comm id -> longest sender's posting time
    for cid, _, _, _, s, e, _, _ in comm_rows:
        post[cid] = max(post[cid], e - s)
    incoming: dict[tuple[int, int], list[int]] = defaultdict(list)   # (op, device) -> comm ids it waits for
    for c in plan.comm:
        if c.internal:
            continue
        for b in c.before:
            for d in plan.assign[b]:
                if d in c.participants:
                    incoming[(b, d)].append(c.id)
    end: dict[tuple[int, int], float] = {}                    # (op, device) -> replayed end
    free = [0.0] * plan.devices
    pos = [0] * plan.devices
    orders = plan.orders
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for d in range(plan.devices):
            if pos[d] >= len(orders[d]):
                continue
            i = orders[d][pos[d]]
            devs = plan.assign[i]
            group = devs if plan.mode[i] == "limb" and len(devs) > 1 else (d,)
            if any(pos[e] >= len(orders[e]) or orders[e][pos[e]] != i for e in group):
                continue                                      # a participant has not reached the op yet
            ready = []
            for e in group:
                t = free[e]
                for cid in incoming.get((i, e), ()):
                    c = plan.comm[cid]
                    if "key" in c.args:                       # a key fetch: after the op that frees its buffer
                        dst = c.participants[1]
                        ends = [end[(a, dst)] for a in c.after if (a, dst) in end]
                        if len(ends) < len(c.after):
                            t = None
                            break
                        t = max(t, max(ends, default=0.0) + post.get(cid, 0.0))
                        continue
                    producer = c.args.get("producer", c.after[0])
                    done = [end[(producer, x)] for x in plan.assign[producer] if (producer, x) in end]
                    if len(done) < len(plan.assign[producer]):
                        t = None
                        break
                    t = max(t, max(done) + post.get(cid, 0.0))
                if t is None:
                    break
                ready.append(t)
            if len(ready) < len(group):
                continue
            start = max(ready)
            stop = start + max(dur.get((i, e), 0.0) for e in group)
            for e in group:
                end[(i, e)] = free[e] = stop
                pos[e] += 1
                remaining -= 1
            progressed = True
        if not progressed:
            raise ValueError("the measured run cannot be replayed: no device can take its next op")
    return max(free) if free else 0.0
