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
* unset -- the strategy's own order: its priority, or the order it chose (``single``: the
  candidate of lowest peak memory, :data:`CANDIDATE_ORDERS`), else program order.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from .placement.base import Placement
from .prims import work_cost
from .program import Program

#: values of the ``schedule`` option
SCHEDULES = ("program", "priority")


def _successors(program: Program) -> list[list[int]]:
    succ: list[list[int]] = [[] for _ in program.ops]
    for o in program.ops:
        for s in o.inputs:
            succ[s].append(o.id)
    return succ


def bottom_levels(program: Program) -> list[float]:
    """Per op, the bytes moved along the heaviest chain from it to the end of the program."""
    params = program.params
    cost: dict[tuple, float] = {}
    succ = _successors(program)
    level = [0.0] * len(program.ops)
    for o in reversed(program.ops):           # program order is topological
        w = cost.get(o.work)
        if w is None:
            w = cost[o.work] = float(work_cost(params, o.work).bytes_moved)
        level[o.id] = w + max((level[j] for j in succ[o.id]), default=0.0)
    return level


def list_order(program: Program, priority: Sequence, placement: Placement | None = None) -> list[int]:
    """Kahn's algorithm: among ready ops the lowest ``priority`` first (a topological order; with a
    placement, also after every producer of each collective its consumers wait for)."""
    n = len(program.ops)
    succ = _successors(program)
    if placement is not None:
        extra = [set() for _ in range(n)]
        for c in placement.comm:
            if not c.internal and len(c.after) > 1:
                for a in c.after:
                    extra[a].update(b for b in c.before if b != a and b not in succ[a])
        for a, bs in enumerate(extra):
            succ[a].extend(sorted(bs))
    indeg = [0] * n
    for nxt in succ:
        for j in nxt:
            indeg[j] += 1
    heap = [(priority[i], i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, (priority[j], j))
    if len(order) != n:
        raise ValueError("the program graph has a cycle")
    return order


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
    return list_order(program, prio, placement)


def block_first_order(program: Program) -> list[int]:
    """Depth first by token block within each layer: among ready ops the lowest (layer, token block,
    program position), so a block's chain (FFN up, GELU, FFN down, LayerNorm; a query block's
    softmax) finishes before the next block's starts and its intermediates die early."""
    n, nb = len(program.ops), program.packing.token_blocks
    return list_order(program, [((o.layer + 1) * nb + max(o.block, 0)) * n + o.id for o in program.ops])


def memory_greedy_order(program: Program) -> list[int]:
    """A list schedule that runs, among ready ops, the one that frees the most memory: bytes of the
    inputs it is the last reader of (program outputs never free) minus the bytes it allocates (its
    output).  Ties: lowest (layer, token block, program position)."""
    ops = program.ops
    n = len(ops)
    succ = _successors(program)
    inputs = [o.inputs for o in ops]
    out = [o.out_bytes for o in ops]
    rank = [((o.layer + 1) * program.packing.token_blocks + max(o.block, 0)) * n + o.id for o in ops]
    keep = set(program.outputs)                        # never freed
    out_free = [0 if i in keep else b for i, b in enumerate(out)]
    indeg = [len(x) for x in inputs]
    left = [len(r) for r in succ]                      # readers not yet run
    done = [False] * n
    version = [0] * n

    def entry(i: int) -> tuple[int, int, int, int]:
        freed = sum(out_free[s] for s in inputs[i] if left[s] == 1)
        return (out[i] - freed, rank[i], i, version[i])

    heap = [entry(i) for i in range(n) if indeg[i] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, _, i, ver = heapq.heappop(heap)
        if done[i] or ver != version[i]:
            continue
        done[i] = True
        order.append(i)
        for s in inputs[i]:
            left[s] -= 1
            if left[s] == 1:                           # its last reader now frees it: re-rank that reader
                r = next(r for r in succ[s] if not done[r])
                if indeg[r] == 0:
                    version[r] += 1
                    heapq.heappush(heap, entry(r))
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, entry(j))
    if len(order) != n:
        raise ValueError("the program graph has a cycle")
    return order


#: candidate single-device orders by name (``single`` keeps the one with the lowest peak memory)
CANDIDATE_ORDERS: dict[str, Callable[[Program], list[int]]] = {
    "program": lambda program: list(range(len(program.ops))),
    "block-first": block_first_order,
    "frees-first": memory_greedy_order,
}


def device_orders(program: Program, placement: Placement, schedule: str | None = None) -> list[list[int]]:
    """``orders[d]``: the ops device d runs, in order."""
    orders: list[list[int]] = [[] for _ in range(placement.devices)]
    for i in global_order(program, placement, schedule):
        for d in placement.assign[i]:
            orders[d].append(i)
    return orders
