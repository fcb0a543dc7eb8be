"""Operator order per device.

A global list schedule (Kahn's algorithm; among ready ops the lowest placement priority
first, program order when the strategy gives none) is cut into one subsequence per
device.  Every device order is a subsequence of one topological order, so executing the
orders with communication in between can never deadlock.
"""
from __future__ import annotations

import heapq

from .placement.base import Placement
from .program import Program


def global_order(program: Program, placement: Placement) -> list[int]:
    """A topological order of all ops (program order, or priority-driven)."""
    n = len(program.ops)
    if placement.priority is None:
        return list(range(n))
    indeg = [len(o.inputs) for o in program.ops]
    succ: list[list[int]] = [[] for _ in range(n)]
    for o in program.ops:
        for s in o.inputs:
            succ[s].append(o.id)
    prio = placement.priority
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


def device_orders(program: Program, placement: Placement) -> list[list[int]]:
    """``orders[d]``: the ops device d runs, in order."""
    orders: list[list[int]] = [[] for _ in range(placement.devices)]
    for i in global_order(program, placement):
        for d in placement.assign[i]:
            orders[d].append(i)
    return orders
