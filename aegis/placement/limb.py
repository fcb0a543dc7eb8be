"""``limb``: limb-level parallelism of Cinnamon (ASPLOS 2025), Cerium (SOSP 2026) and Liberate.FHE.

Every ciphertext's Q limbs are spread round robin (limb i on device i mod G) and every op
runs on all devices on its own limbs; the special primes P are replicated (P-side work is
redundant on every device).  Communication, exactly as BASELINES.md describes Cerium's
default ("input broadcast"):

* every key switch that runs a ModUp (relinearisation, rotation, conjugation, and each
  *group* of hoisted rotations once) all-gathers the input polynomial's limbs first:
  ``(G-1) * l`` limbs in total, ``(G-1)/G * l * N * w`` bytes per device;
* baby-step giant-step giant rotations use output aggregation: one reduce-scatter of the
  two output polynomials per output ciphertext;
* every rescale shares the dropped limb (both polynomials) from its owner;
* bootstrapping's ModRaise all-gathers both polynomials.

Plaintext products, additions and automorphisms are limb-local.  Weights and evaluation
keys are split by limbs (their P parts replicated).
"""
from __future__ import annotations

from .base import Placement, PlacementContext, limb_internal_comm


def place(ctx: PlacementContext) -> Placement:
    devs = tuple(range(ctx.devices))
    n = len(ctx.program.ops)
    if ctx.devices == 1:
        return Placement("limb", 1, [devs] * n, ["whole"] * n, [], None, ["one device: nothing to split"])
    comm = []
    for op in ctx.program.ops:
        comm += limb_internal_comm(ctx.program, op.id, devs, len(comm))
    return Placement("limb", ctx.devices, [devs] * n, ["limb"] * n, comm, None,
                     [f"every ciphertext split by limbs over {ctx.devices} devices; special primes replicated"])
