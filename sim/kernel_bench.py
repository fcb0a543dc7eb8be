"""``aegis bench kernels``: the simulator's time per CKKS primitive on one hardware profile.

For HMult (multiply + relinearise + rescale), rotation and rescale at the application's top level
and one bootstrap (the work of :class:`aegis.bootstrap_model.BootstrapModel`), prints the kernel
launches in both styles (fused as a GPU library issues them, unfused as our rings do), the seconds
the profile gives through :class:`sim.compute.KernelModel` (the simulator's own kernel model, no
per-operation figure), and, where the profile's ``provenance.figures`` cites a published time for
that primitive, the figure, its ratio and its source.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aegis.bootstrap_model import BootstrapError, BootstrapModel
from aegis.prims import Work, merged, prim_cost_styled
from fhe.costs import WORD64
from fhe.params import CKKSParameters, preset

from .compute import KernelModel
from .profile import HardwareSpec, load_spec

#: the primitives the table shows, in order (names as in a profile's ``provenance.figures``)
PRIMITIVES = ("hmult", "rotation", "rescale", "bootstrap")


@dataclass(frozen=True)
class Row:
    """One primitive on one profile: launches (fused, unfused), simulated seconds, the published figure."""

    primitive: str
    level: int
    fused_launches: int
    unfused_launches: int
    seconds: float
    published_s: float | None
    source: str | None

    @property
    def ratio(self) -> float | None:
        """Simulated over published (None without a figure)."""
        return self.seconds / self.published_s if self.published_s else None


def primitive_work(params: CKKSParameters, primitive: str) -> tuple[Work, int]:
    """(work list, level) of one primitive: HMult / rotation / rescale at the application's top level,
    a bootstrap from level 0 (every stage of :class:`BootstrapModel`)."""
    top = params.application_top
    if primitive == "hmult":
        return (("relin", top, 1), ("rescale", top, 1), ("tensor", top, 1)), top
    if primitive == "rotation":
        return (("rot", top, 1),), top
    if primitive == "rescale":
        return (("rescale", top, 1),), top
    if primitive == "bootstrap":
        return merged(*(part[1] for part in BootstrapModel(params).parts)), 0
    raise ValueError(f"unknown primitive {primitive!r}; valid: {', '.join(PRIMITIVES)}")


def launches(params: CKKSParameters, work: Work, fused: bool) -> int:
    """Kernel launches of a work list in one style (64-bit words: launches do not depend on the word)."""
    return sum(prim_cost_styled(params, p, lvl, fused, WORD64).calls * n for p, lvl, n in work)


def figures(spec: HardwareSpec) -> dict[str, dict[str, Any]]:
    """The published figures a profile cites, by primitive (``provenance.figures``: ``primitive``,
    ``seconds``, ``log_n`` (the ring degree it was measured at), ``source``, ...)."""
    prov = spec.raw.get("provenance") or {}
    return {str(f["primitive"]): f for f in prov.get("figures") or []}


def rows(spec: HardwareSpec, params: CKKSParameters) -> list[Row]:
    """The table's rows: simulated seconds through the simulator's kernel model."""
    km = KernelModel(spec, params)
    figs = figures(spec)
    out = []
    for prim in PRIMITIVES:
        try:
            work, level = primitive_work(params, prim)
        except BootstrapError:          # a preset without bootstrapping levels: no bootstrap row
            continue
        f = figs.get(prim)
        if f and int(f.get("log_n", params.log_n)) != params.log_n:
            f = None                    # a figure at another ring degree is not comparable
        out.append(Row(prim, level, launches(params, work, True), launches(params, work, False),
                       km.work_time(work), float(f["seconds"]) if f else None, str(f["source"]) if f else None))
    return out


def run(hardware: str = "h100-sxm-sota", params_name: str = "n16-boot", json_path: str | None = None,
        insecure: bool = False) -> int:
    """Print the table (and write it as JSON to ``json_path``); toy presets need ``insecure``."""
    from aegis.safeio import write_text

    spec = load_spec(hardware)
    params = preset(params_name, allow_insecure=insecure)
    table = rows(spec, params)
    d = spec.device
    print(f"{spec.name}: kernels {d.kernels}, {d.word_bits}-bit words"
          + (f" ({d.prime_bits}-bit primes)" if d.word_bits == 32 else "")
          + f"; {params_name} (N = 2^{params.log_n}); HMult / rotation / rescale at level {params.application_top}")
    print(f"{'primitive':10} {'launches fused':>14} {'unfused':>8} {'simulated ms':>13} {'published ms':>13} {'ratio':>6}")
    for r in table:
        pub = f"{r.published_s * 1e3:13.2f}" if r.published_s else f"{'-':>13}"
        ratio = f"{r.ratio:6.2f}" if r.ratio else f"{'-':>6}"
        print(f"{r.primitive:10} {r.fused_launches:14d} {r.unfused_launches:8d} {r.seconds * 1e3:13.3f} {pub} {ratio}")
    for r in table:
        if r.source:
            print(f"  {r.primitive}: {r.source}")
    if len(table) < len(PRIMITIVES):
        print(f"  {params_name} has no bootstrapping levels: no bootstrap row")
    missing = [r.primitive for r in table if r.published_s is None]
    if missing:
        print(f"  no published figure in the profile for: {', '.join(missing)}")
    if json_path:
        write_text(json_path, json.dumps({"hardware": spec.name, "params": params_name,
                                          "rows": [r.__dict__ | {"ratio": r.ratio} for r in table]}, indent=2) + "\n")
    return 0
