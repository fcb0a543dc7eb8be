"""``single``: every op on device 0 -- the one-device reference (no communication; may not fit).

The schedule is memory-aware: of the candidate orders in :data:`aegis.schedule.CANDIDATE_ORDERS`
(program order; depth first by token block; a list schedule that runs the ready op freeing the
most memory first) it keeps the one whose exact peak (:func:`aegis.memory.memory_report`) is
lowest, and says which in the notes.  Option ``order`` (a candidate name) forces one order;
``auto`` (the default) compares them all.
"""
from __future__ import annotations

from .base import Placement, PlacementContext, PlacementError

GIB = 2 ** 30


def place(ctx: PlacementContext) -> Placement:
    from ..memory import memory_report
    from ..schedule import CANDIDATE_ORDERS

    n = len(ctx.program.ops)
    choice = ctx.options.get("order", "auto")
    if choice != "auto" and choice not in CANDIDATE_ORDERS:
        raise PlacementError(f"unknown single order {choice!r}; valid: auto, {', '.join(CANDIDATE_ORDERS)}")
    names = list(CANDIDATE_ORDERS) if choice == "auto" else [choice]
    pl = Placement("single", ctx.devices, [(0,)] * n, ["whole"] * n, [], None, [])
    tried = []
    for name in names:
        orders = [CANDIDATE_ORDERS[name](ctx.program)] + [[] for _ in range(ctx.devices - 1)]
        mem = memory_report(ctx.program, pl, orders)
        tried.append((mem.peak[0], name, orders, mem))
    peak, name, pl.orders, pl.memory = min(tried, key=lambda t: t[0])     # ties: the earlier candidate
    peaks = ", ".join(f"{nm} {p / GIB:.2f}" for p, nm, _, _ in tried)
    pl.notes.append(f"order {name}: lowest peak of the candidate orders (GiB: {peaks})" if len(tried) > 1
                    else f"order {name} (forced): peak {peak / GIB:.2f} GiB")
    if ctx.devices > 1:
        pl.notes.append(f"single uses device 0 only; {ctx.devices - 1} devices idle")
    return pl
