"""Operator order per device.

A global list schedule (Kahn's algorithm; among ready ops the lowest placement priority
first, program order when the strategy gives none) is cut into one subsequence per
device.  Every device order is a subsequence of one topological order, so executing the
orders with communication in between can never deadlock.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

from .placement.base import Placement
from .program import Program


def _successors(program: Program) -> list[list[int]]:
    succ: list[list[int]] = [[] for _ in program.ops]
    for o in program.ops:
        for s in o.inputs:
            succ[s].append(o.id)
    return succ


def list_order(program: Program, priority: Sequence) -> list[int]:
    """Kahn's algorithm: among ready ops the lowest ``priority`` first (a topological order)."""
    n = len(program.ops)
    indeg = [len(o.inputs) for o in program.ops]
    succ = _successors(program)
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


def global_order(program: Program, placement: Placement) -> list[int]:
    """A topological order of all ops (program order, or priority-driven)."""
    if placement.priority is None:
        return list(range(len(program.ops)))
    return list_order(program, placement.priority)


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


def device_orders(program: Program, placement: Placement) -> list[list[int]]:
    """``orders[d]``: the ops device d runs, in order."""
    orders: list[list[int]] = [[] for _ in range(placement.devices)]
    for i in global_order(program, placement):
        for d in placement.assign[i]:
            orders[d].append(i)
    return orders
