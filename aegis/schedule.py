"""Operator order per device.

A global list schedule (Kahn's algorithm; among ready ops the lowest priority first) is cut
into one subsequence per device.  The order respects the data dependencies and, for a
transfer that waits for several producers (a collective such as token's per-layer K/V
all-gather), puts its consumers after all of them.  Every device order is then a subsequence
of one order that every op and transfer respects, so executing the orders with communication
in between can never deadlock.

Schedules (the ``schedule`` option):

* ``program`` -- program order (layer by layer, phase by phase, block by block);
* ``priority`` -- the strategy's own priority when it gives one (``aegis``: ops whose output
  crosses devices first), else the *bottom level*: the longest chain of predicted work
  (bytes the kernels move, :func:`aegis.prims.work_cost`) from the op to the end of the
  program, so the critical path and the producers that long chains wait for go first;
* unset -- the strategy's own priority when it gives one, else program order.
"""
from __future__ import annotations

import heapq

from .placement.base import Placement
from .prims import work_cost
from .program import Program

#: values of the ``schedule`` option
SCHEDULES = ("program", "priority")


def bottom_levels(program: Program) -> list[float]:
    """Per op, the bytes moved along the heaviest chain from it to the end of the program."""
    params = program.params
    cost: dict[tuple, float] = {}
    succ: list[list[int]] = [[] for _ in program.ops]
    for o in program.ops:
        for s in o.inputs:
            succ[s].append(o.id)
    level = [0.0] * len(program.ops)
    for o in reversed(program.ops):           # program order is topological
        w = cost.get(o.work)
        if w is None:
            w = cost[o.work] = float(work_cost(params, o.work).bytes_moved)
        level[o.id] = w + max((level[j] for j in succ[o.id]), default=0.0)
    return level


def global_order(program: Program, placement: Placement, schedule: str | None = None) -> list[int]:
    """A topological order of all ops (program order, or priority-driven; see the module doc)."""
    n = len(program.ops)
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    prio = placement.priority
    if schedule == "priority" and prio is None:
        prio = [(-b, i) for i, b in enumerate(bottom_levels(program))]
    if schedule == "program" or prio is None:
        return list(range(n))
    succ: list[set[int]] = [set() for _ in range(n)]
    for o in program.ops:
        for s in o.inputs:
            succ[s].add(o.id)
    # a transfer that waits for several producers (a collective) orders its consumers after all of them
    for c in placement.comm:
        if not c.internal and len(c.after) > 1:
            for a in c.after:
                succ[a].update(b for b in c.before if b != a)
    indeg = [0] * n
    for j in range(n):
        for k in succ[j]:
            indeg[k] += 1
    heap = [(prio[i], i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, (prio[j], j))
    if len(order) != n:
        raise ValueError("the program graph has a cycle")
    return order


def device_orders(program: Program, placement: Placement, schedule: str | None = None) -> list[list[int]]:
    """``orders[d]``: the ops device d runs, in order."""
    orders: list[list[int]] = [[] for _ in range(placement.devices)]
    for i in global_order(program, placement, schedule):
        for d in placement.assign[i]:
            orders[d].append(i)
    return orders
