"""``single``: every op on device 0 -- the one-device reference (no communication; may not fit)."""
from __future__ import annotations

from .base import Placement, PlacementContext


def place(ctx: PlacementContext) -> Placement:
    n = len(ctx.program.ops)
    notes = [] if ctx.devices == 1 else [f"single uses device 0 only; {ctx.devices - 1} devices idle"]
    return Placement("single", ctx.devices, [(0,)] * n, ["whole"] * n, [], None, notes)
