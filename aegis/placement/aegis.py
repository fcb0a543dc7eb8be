"""``aegis``: placement derived from the ciphertext dependency graph, chosen by a search.

0. **The search.**  Candidates are a *mesh* -- T token groups of L devices (T x L = devices),
   or ``units``: heads, FFN groups and token blocks dealt over every device as balanced units --
   a group's ops split by limbs over its L devices (*modulus coherence*: a key switch's limbs
   and the key limbs they meet stay inside one group, and only its limb exchanges cross
   devices) -- and a *key storage* (:mod:`aegis.keystore`: replicated, seed-compressed,
   sharded by rotation with a fetch buffer).  Meshes are visited by their lower bound and
   pruned once a fitting candidate is faster; each candidate is timed by
   :func:`aegis.estimate.makespan` (the simulator's kernel formula) and accounted by the exact
   memory model.  The winner is the fastest candidate that fits, and among those within
   ``SEARCH_SLACK`` of it, the one with the least peak memory; ``aegis plan --explain``
   prints every candidate and its verdict.  Steps 1-5 build one mesh's placement.
1. **Coherence classes.**  Inside a token group the limbs of a ciphertext are never split
   further (L = 1: whole ciphertexts are the unit, and no key switch or rescale ever
   communicates).  *Token coherence*: ops whose output belongs to the same
   token block form one class (attention for query block i joins block i).  When there are
   fewer token blocks than token groups, classes are refined by channel tile, so the
   partitioner can also split heads and FFN groups (the search then weighs that cut against
   the other candidates).
2. **Class graph.**  Node weight = estimated time of the class's ops (roofline of
   :mod:`fhe.costs` bytes and modular operations on the hardware profile); edge weight =
   ciphertext bytes between classes (a tile sent to a class once, however many ops read it).
3. **Balanced min-cut.**  Classes are cut into one part per token group: a contiguous split by
   cumulative weight, then Fiduccia–Mattheyses style refinement (moves and swaps that cut
   fewer bytes while keeping every device within ``imbalance`` of the mean load).  If the
   exact memory model (:mod:`aegis.memory`) finds a device over capacity, classes move
   from it to the devices with the most room and the plan is re-checked.
4. **Communication only on crossing edges**: each tile is sent, as soon as it is produced,
   to the devices that read it (K and V of a block stream to the other devices while they
   compute on the blocks they hold).
5. **Schedule priority**: ops whose output must cross devices run first among ready ops;
   ops waiting on remote data run after local work, nearest ring neighbour first.
"""
from __future__ import annotations

from collections import defaultdict

from ..comm import total_bytes
from ..estimate import DeviceRates, LinkRate, makespan, rates_of, work_seconds
from ..keystore import KeyPolicy
from ..program import BOOT_KINDS
from ..prims import limb_bytes
from ..program import Program
from .base import Placement, PlacementContext, edge_comm, limb_internal_comm, op_seconds
from .token import group_kv_collectives

DEFAULT_IMBALANCE = 0.03


def coherence_classes(program: Program, refine: bool) -> tuple[list[int], list[tuple[int, int]]]:
    """Class of every op and the class keys ``(token block, tile or -1)`` (tile only when ``refine``)."""
    keys: dict[tuple[int, int], int] = {}
    cls = []
    for op in program.ops:
        key = (max(op.block, 0), op.tile if refine and op.tile >= 0 else -1)
        if key not in keys:
            keys[key] = len(keys)
        cls.append(keys[key])
    return cls, list(keys)


def class_graph(program: Program, cls: list[int]) -> tuple[dict[int, dict[int, int]], dict[int, dict[int, int]]]:
    """Bytes between classes, each (producer tile, consumer class) counted once: (undirected, into[dst][src])."""
    seen: set[tuple[int, str, int]] = set()
    w: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    into: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for v in program.ops:
        cv = cls[v.id]
        for src, name, _, b in v.reads:
            cu = cls[src]
            if cu != cv and (src, name, cv) not in seen:
                seen.add((src, name, cv))
                w[cu][cv] += b
                w[cv][cu] += b
                into[cv][cu] += b
    return w, into


def partition(weights: list[float], edges: dict[int, dict[int, int]], parts: int,
              imbalance: float = DEFAULT_IMBALANCE, passes: int = 8) -> list[int]:
    """Balanced min-cut: part of every class (contiguous weighted split + FM-style refinement)."""
    n = len(weights)
    total = sum(weights) or 1.0
    part = [0] * n
    acc = 0.0
    for c in range(n):
        part[c] = min(parts - 1, int((acc + weights[c] / 2) * parts / total))
        acc += weights[c]
    if parts == 1:
        return part
    cap = total / parts * (1 + imbalance)
    load = [0.0] * parts
    for c in range(n):
        load[part[c]] += weights[c]

    def conn(c: int) -> list[int]:
        out = [0] * parts
        for o, b in edges.get(c, {}).items():
            out[part[o]] += b
        return out

    for _ in range(passes):
        improved = False
        for c in range(n):                      # single moves
            cc = conn(c)
            a = part[c]
            best, gain = a, 0
            for d in range(parts):
                g = cc[d] - cc[a]
                if d != a and g > gain and load[d] + weights[c] <= cap:
                    best, gain = d, g
            if best != a:
                part[c] = best
                load[a] -= weights[c]
                load[best] += weights[c]
                improved = True
        for c in range(n):                      # swaps keep the balance of equal-weight classes
            cc = conn(c)
            a = part[c]
            for o in range(c + 1, n):
                b = part[o]
                if a == b:
                    continue
                co = conn(o)
                w_co = edges.get(c, {}).get(o, 0)
                g = (cc[b] - cc[a]) + (co[a] - co[b]) - 2 * w_co
                if g > 0 and load[a] - weights[c] + weights[o] <= cap and load[b] - weights[o] + weights[c] <= cap:
                    part[c], part[o] = b, a
                    load[a] += weights[o] - weights[c]
                    load[b] += weights[c] - weights[o]
                    improved = True
                    break
        if not improved:
            break
    return part


def _link_bytes_per_s(ctx: PlacementContext) -> float:
    topo = ctx.hardware.raw.get("topology", {}) if ctx.hardware else {}
    return float(topo.get("nccl_ring_busbw_bytes_per_s") or topo.get("link_bytes_per_s") or 1e11)


def schedule_estimate(program: Program, t: list[float], device_of: list[int], devices: int,
                      link_bytes_per_s: float, link_latency_s: float = 0.0) -> float:
    """Makespan (seconds) of a placement by list scheduling in program order: each device runs its
    ops one at a time; an op starts when its device is free and its inputs have arrived, a tile
    from another device ``bytes / link_bytes_per_s + link_latency_s`` after its producer finished
    (links without contention).  ``t`` is each op's time, ``device_of`` each op's device.

    Unlike max load + max bytes in, it sees the dependency chains: classes split by tile within a
    token block wait on each other inside every layer."""
    free = [0.0] * devices
    finish = [0.0] * len(program.ops)
    for o in program.ops:
        d = device_of[o.id]
        ready = 0.0
        for src, _name, _lvl, b in o.reads:
            arrive = finish[src] + (b / link_bytes_per_s + link_latency_s if device_of[src] != d else 0.0)
            ready = max(ready, arrive)
        finish[o.id] = max(free[d], ready) + t[o.id]
        free[d] = finish[o.id]
    return max(finish, default=0.0)


def _candidate(ctx: PlacementContext, t: list[float], refine: bool, imbalance: float,
               groups: int | None = None) -> dict:
    """Classes, their balanced min-cut and its estimated makespan (max load + max bytes in / link bandwidth)."""
    prog = ctx.program
    cls, keys = coherence_classes(prog, refine)
    w = [0.0] * len(keys)
    for o in prog.ops:
        w[cls[o.id]] += t[o.id]
    edges, into = class_graph(prog, cls)
    parts = min(groups or ctx.devices, len(keys))
    bw = _link_bytes_per_s(ctx)

    def estimate(part: list[int]) -> tuple[float, list[float]]:
        load = [0.0] * (groups or ctx.devices)
        recv = [0] * (groups or ctx.devices)
        for c, p in enumerate(part):
            load[p] += w[c]
            recv[p] += sum(b for o, b in into.get(c, {}).items() if part[o] != p)
        return max(load) + max(recv) / bw, load

    part = partition(w, edges, parts, imbalance)
    est, load = estimate(part)
    balanced = rebalance(part, w, parts)
    est_b, load_b = estimate(balanced)
    if est_b < est:                  # a better makespan estimate even if more bytes cross
        part, est, load = balanced, est_b, load_b
    return {"cls": cls, "keys": keys, "w": w, "edges": edges, "part": part, "load": load, "est": est,
            "refine": refine}


def rebalance(part: list[int], weights: list[float], parts: int, rounds: int = 200) -> list[int]:
    """Moves and swaps that lower the most loaded part's load (unequal classes, e.g. causal attention)."""
    part = list(part)
    load = [0.0] * parts
    for c, p in enumerate(part):
        load[p] += weights[c]
    for _ in range(rounds):
        hi = max(range(parts), key=load.__getitem__)
        best = (load[hi], None)
        for c in (c for c in range(len(part)) if part[c] == hi):
            for p in range(parts):
                if p == hi:
                    continue
                m = max(load[hi] - weights[c], load[p] + weights[c])       # move c to p
                if m < best[0] - 1e-12:
                    best = (m, (c, p, None))
                for o in (o for o in range(len(part)) if part[o] == p):    # swap c and o
                    d = weights[c] - weights[o]
                    if d <= 0:
                        continue
                    m = max(load[hi] - d, load[p] + d)
                    if m < best[0] - 1e-12:
                        best = (m, (c, p, o))
        if best[1] is None:
            break
        c, p, o = best[1]
        part[c] = p
        load[hi] -= weights[c]
        load[p] += weights[c]
        if o is not None:
            part[o] = hi
            load[p] -= weights[o]
            load[hi] += weights[o]
    return part


def meshes(devices: int, max_limb_group: int = 8) -> list[tuple[int, int]]:
    """Every (token groups T, limb-group size L) with T x L = devices and L <= ``max_limb_group``."""
    return [(devices // lg, lg) for lg in range(1, min(devices, max_limb_group) + 1) if devices % lg == 0]


def parse_mesh(text: str, devices: int) -> tuple[int, int]:
    """``TxL`` -> (T, L), checked against the device count."""
    try:
        t, lg = (int(x) for x in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"mesh must be TxL (token groups x limb-group size), e.g. 2x2; got {text!r}") from None
    if t < 1 or lg < 1 or t * lg != devices:
        raise ValueError(f"mesh {text} needs T x L = {devices} devices (T, L >= 1)")
    return t, lg


def key_policies(mesh: tuple[int, int], forced: KeyPolicy | None) -> list[KeyPolicy]:
    """Key storage the search tries on a mesh: sharding by rotation only where whole ops run on several
    token groups (a limb group already holds its own limbs of every key)."""
    if forced is not None:
        return [forced]
    out = [KeyPolicy("replicated"), KeyPolicy("replicated", seeded=True)]
    if mesh[0] > 1 and mesh[1] == 1:
        out += [KeyPolicy("sharded", seeded=sd, budget_factor=f, scope=sc)
                for sd in (False, True) for sc in ("app", "all") for f in KEY_BUFFERS]
    return out


def place(ctx: PlacementContext) -> Placement:
    """The search (module docstring, step 0): meshes x key storage, scored by :mod:`aegis.estimate` and the
    exact memory model; the fastest plan that fits, and of those within ``SEARCH_SLACK`` of it the one with
    the least peak memory."""
    from ..plan import key_policy

    prog, G = ctx.program, ctx.devices
    kv = ctx.options.get("kv", "stream")
    if kv not in ("stream", "gather"):
        raise ValueError(f"unknown kv mode {kv!r}; valid: stream, gather")
    t = op_seconds(ctx)
    imbalance = float(ctx.options.get("imbalance", DEFAULT_IMBALANCE))
    forced_keys = key_policy(ctx.options)
    forced_mesh = ctx.options.get("mesh")
    mesh_list = [parse_mesh(forced_mesh, G)] if forced_mesh else meshes(G)
    if ctx.options.get("executor") and not forced_mesh and any(o.kind in BOOT_KINDS for o in prog.ops):
        mesh_list = [m for m in mesh_list if m[1] == 1]     # the executor bootstraps whole ciphertexts only
    if not forced_mesh and G > 1:
        mesh_list.append((G, 1, "units"))   # heads / FFN groups / token blocks dealt as units (module docstring)
    rates, link = rates_of(ctx.hardware)
    rows: list[dict] = []
    # lower bounds first: a mesh whose busiest-device bound is already slower than a fitting plan is pruned
    bounds = {m: _lower_bound(prog, rates, m, G) for m in mesh_list}
    best: dict | None = None
    for m in sorted(mesh_list, key=lambda m: (bounds[m], -m[0], len(m))):
        if best is not None and best["fits"] and bounds[m] > best["time_s"] * (1 + SEARCH_SLACK):
            rows.append(_row(m, None, bounds[m], None, None, None, f"pruned: lower bound {bounds[m]:.4g} s > "
                             f"{best['time_s']:.4g} s of mesh {best['mesh']}"))
            continue
        base = _units_placement(ctx) if len(m) > 2 else _mesh_placement(ctx, t, m, imbalance, kv)
        pl = base["placement"]
        comm = [c for c in pl.comm if "key" not in c.args]
        pols = key_policies(m, forced_keys)
        times = {sd: makespan(prog, pl.assign, pl.mode, comm, rates, link, G, seeded_keys=sd)[0]
                 for sd in sorted({p.seeded for p in pols})}
        roomy: dict[tuple, float] = {}          # (scope, seeded) -> a buffer that evicted nothing
        for pol in pols:
            bar = best["time_s"] * (1 + SEARCH_SLACK) if best is not None and best["fits"] else None
            same = roomy.get((pol.scope, pol.seeded)) if pol.where == "sharded" else None
            if same is not None:
                rows.append(_row(m, pol.label, None, None, None, None,
                                 f"same as buffer x{same:g} (it evicted nothing)"))
                continue
            cand = _with_keys(ctx, base, pol, rates, link, m, times, bar, limit=forced_keys is None)
            kp = cand["placement"].keys if cand.get("placement") is not None else None
            if kp is not None and kp.policy.where == "sharded" and kp.evictions == 0:
                roomy[(pol.scope, pol.seeded)] = pol.budget_factor
            rows.append(cand)
            if cand.get("placement") is not None and (best is None or _better(cand, best)):
                best = cand
    assert best is not None
    # the winner: fastest fitting time, then the least memory within the slack
    fit = [r for r in rows if r.get("fits")]
    if fit:
        fastest = min(r["time_s"] for r in fit)
        close = [r for r in fit if r["time_s"] <= fastest * (1 + SEARCH_SLACK)]
        win = min(close, key=lambda r: (r["peak_bytes"], r["time_s"], r["comm_bytes"]))
    else:
        win = min((r for r in rows if r.get("placement")), key=lambda r: r["peak_bytes"])
    for r in rows:
        if r is win:
            r["verdict"] = "chosen" + ("" if r["fits"] else " (nothing fits: least memory)")
        elif r.get("verdict", "").startswith("same as"):
            pass
        elif r.get("thrash"):
            r["verdict"] = (f"rejected: more than {r['thrash']} key fetches for {len(prog.ops)} ops (the buffer "
                            f"thrashes: over {MAX_FETCHES_PER_OP:g} per op)")
            r["comm_bytes"] = None
        elif r.get("skipped"):
            r["verdict"] = (f"{100 * (r['time_s'] / win['time_s'] - 1):+.1f} % time (memory not accounted: "
                            "slower than a plan that fits)")
        elif r.get("placement") is not None:
            if not r["fits"]:
                r["verdict"] = f"over capacity ({max(r['peak']) / 2**30:.1f} GiB > {ctx.capacity_bytes / 2**30:.1f})"
            elif fit and r["time_s"] > fastest * (1 + SEARCH_SLACK):
                r["verdict"] = f"{100 * (r['time_s'] / win['time_s'] - 1):+.1f} % time"
            else:
                r["verdict"] = f"as fast, more memory ({r['peak_bytes'] / 2**30:.2f} GiB)"
    placement = win["placement"]
    unfit = [] if fit else [f"no candidate fits: the least peak, {win['peak_bytes'] / 2**30:.1f} GiB, exceeds the "
                            f"{ctx.capacity_bytes / 2**30:.1f} GiB capacity -- add devices"]
    placement.notes = [n for n in win["notes"] if "exceeds" not in n] + unfit + [
        f"search: {len([r for r in rows if r.get('placement')])} candidates scored over meshes "
        f"{', '.join(m[2] if len(m) > 2 else f'{m[0]}x{m[1]}' for m in mesh_list)}; chose mesh {win['mesh']} with keys {win['keys']} "
        f"(estimate {win['time_s']:.4g} s, peak {win['peak_bytes'] / 2**30:.2f} GiB; `--explain` lists them)"]
    placement.search = [{k: v for k, v in r.items() if k not in ("placement", "notes", "peak", "skipped", "thrash")}
                        for r in rows]
    return placement


#: a key plan with more fetches than this per op thrashes its buffer: its traffic (and a plan of that many
#: transfers) is not worth the memory, and the search rejects it
MAX_FETCHES_PER_OP = 0.5

#: fetched-key buffers the search tries, in multiples of the most key bytes one op needs at once
KEY_BUFFERS = (1.0, 2.0)

#: candidates whose estimated time is within this fraction of the fastest that fits compete on memory
SEARCH_SLACK = 0.005


def _better(a: dict, b: dict) -> bool:
    if a["fits"] != b["fits"]:
        return a["fits"]
    return a["time_s"] < b["time_s"] if a["fits"] else a["peak_bytes"] < b["peak_bytes"]


def _row(mesh, keys, time_s, peak, comm, fits, verdict) -> dict:
    return {"mesh": mesh[2] if len(mesh) > 2 else f"{mesh[0]}x{mesh[1]}", "keys": keys, "time_s": time_s, "peak_bytes": peak, "comm_bytes": comm,
            "fits": fits, "verdict": verdict}


def _lower_bound(prog: Program, rates: DeviceRates, mesh: tuple[int, int], G: int) -> float:
    """Seconds no placement on ``mesh`` can beat: the busiest-device share of the limb-split work."""
    lg = mesh[1]
    total = sum(work_seconds(prog.params, rates, o.work, lg) for o in prog.ops) * lg
    return total / G


def _mesh_placement(ctx: PlacementContext, t: list[float], mesh: tuple[int, int], imbalance: float,
                    kv: str) -> dict:
    """Token classes cut over the mesh's token groups (token x tile classes when there are fewer token blocks
    than groups), each group's ops limb-split over its devices, repaired to fit memory."""
    prog, G = ctx.program, ctx.devices
    tg, lg = mesh
    groups = [tuple(range(g * lg, (g + 1) * lg)) for g in range(tg)]
    refine = prog.packing.token_blocks < tg
    cand = _candidate(ctx, t, refine, imbalance, tg)
    cls, edges, w = cand["cls"], cand["edges"], cand["w"]

    def realise(part: list[int]) -> Placement:
        assign = [groups[part[cls[o.id]]] for o in prog.ops]
        mode = ["limb" if lg > 1 else "whole"] * len(prog.ops)
        comm = edge_comm(prog, assign, mode)
        if kv == "gather" and lg == 1:
            group_kv_collectives(ctx, comm)
        if lg > 1:
            for o in prog.ops:
                comm += limb_internal_comm(prog, o.id, assign[o.id], len(comm))
        return Placement("aegis", G, assign, mode, comm, _priority(prog, assign, comm, G), [])

    part = list(cand["part"])
    placement, fit_notes = _fit_to_capacity(ctx, realise(part), part, cls, w, edges, realise, lg)
    load = [0.0] * tg
    for c, p in enumerate(part):
        load[p] += w[c]
    used = [x for x in load if x > 0] or [0.0]
    mean = sum(used) / len(used)
    cut = sum(b for c, nb in edges.items() for o, b in nb.items() if part[c] != part[o]) // 2
    notes = [f"mesh {tg}x{lg}: {len(cand['keys'])} coherence classes "
             f"({'token block x tile' if refine else 'token blocks'}) on {tg} token group(s)"
             + (f" of {lg} devices each, ciphertexts and keys split by limbs inside a group" if lg > 1 else "")
             + f"; load max/mean {max(load) / mean if mean else 1:.3f}; class cut {cut / 2**30:.2f} GiB; "
             f"K/V {'streamed as produced' if kv == 'stream' or lg > 1 else 'all-gathered per layer'}"] + fit_notes
    return {"placement": placement, "notes": notes}


def _units_placement(ctx: PlacementContext) -> dict:
    """The unit partition: (head tile, query block, key chunk) attention units, (FFN group, token block) units and
    token-block owners dealt over every device by predicted work (:mod:`aegis.placement.tensor`'s balanced
    dealing) -- the head / channel-group split that token classes cannot make when blocks are few or causal
    attention makes blocks unequal."""
    from ..memory import memory_report
    from ..schedule import device_orders
    from .tensor import place as deal

    pl = deal(ctx)
    pl.strategy = "aegis"
    pl.orders = device_orders(ctx.program, pl)
    pl.memory = memory_report(ctx.program, pl, pl.orders)
    return {"placement": pl, "notes": ["units: attention (head tile, query block, key chunk), FFN (group, token "
                                       "block) and token-block units dealt over the devices by predicted work; "
                                       + "; ".join(pl.notes)]}


def _with_keys(ctx: PlacementContext, base: dict, policy: KeyPolicy, rates: DeviceRates, link: LinkRate,
               mesh: tuple[int, int], times: dict[bool, float], bar: float | None, limit: bool = True) -> dict:
    """A candidate: the mesh placement with ``policy`` keys, its estimated time (``times``: the mesh's
    makespan without and with key expansion), exact memory and bytes.  A candidate whose compute alone is
    slower than ``bar`` (a fitting candidate's time, plus the slack) is timed but not accounted."""
    from copy import copy

    from ..keystore import Thrashing, plan_keys
    from ..memory import memory_report

    prog = ctx.program
    label = policy.label
    span = times[policy.seeded]
    if bar is not None and span > bar and limit:
        row = _row(mesh, label, span, None, None, None, "")
        row["skipped"] = True
        return row
    pl = copy(base["placement"])
    comm = [c for c in pl.comm if "key" not in c.args]
    if not policy.plain:
        most = int(MAX_FETCHES_PER_OP * len(prog.ops)) if limit else None      # a forced policy: no limit
        try:
            pl.keys = plan_keys(prog, pl.assign, pl.mode, pl.orders, policy, len(comm), max_fetches=most)
        except Thrashing:
            row = _row(mesh, label, span, None, None, None, "")
            row["thrash"] = most
            return row
        pl.comm = comm + pl.keys.fetches
    else:
        pl.keys, pl.comm = None, comm
    pl.memory = memory_report(prog, pl, pl.orders)
    lb = limb_bytes(prog.params)
    key_b = sum(c.total_bytes for c in pl.comm if "key" in c.args)
    if key_b:            # fetches run beside compute; a consumer waits for a fetch its buffer could not start early
        span = makespan(prog, pl.assign, pl.mode, pl.comm, rates, link, ctx.devices, seeded_keys=policy.seeded)[0]
    comm_b = sum(total_bytes(c, lb) for c in pl.comm)
    peak = pl.memory.peak
    row = _row(mesh, label, span, max(peak), comm_b, max(peak) <= ctx.capacity_bytes, "")
    row.update({"key_bytes": key_b, "placement": pl, "notes": base["notes"], "peak": peak,
                "keys_bytes_per_device": max(pl.memory.keys)})
    return row


def _fit_to_capacity(ctx: PlacementContext, placement: Placement, part: list[int], cls: list[int],
                     w: list[float], edges: dict[int, dict[int, int]], realise, group: int = 1, rounds: int = 6
                     ) -> tuple[Placement, list[str]]:
    """Move classes off token groups whose exact peak memory exceeds capacity, while others have room."""
    from ..memory import memory_report
    from ..schedule import device_orders

    cap = ctx.capacity_bytes

    def account(pl: Placement) -> list[int]:
        pl.orders = device_orders(ctx.program, pl)
        pl.memory = memory_report(ctx.program, pl, pl.orders)
        per = pl.memory.peak
        return [max(per[g * group:(g + 1) * group]) for g in range(len(per) // group)]

    peak = account(placement)
    moved = 0
    for _ in range(rounds):
        hi = max(range(len(peak)), key=peak.__getitem__)
        lo = min(range(len(peak)), key=peak.__getitem__)
        if peak[hi] <= cap or peak[lo] >= cap or hi == lo:
            break
        members = [c for c in range(len(part)) if part[c] == hi]
        if len(members) <= 1:
            break
        # the class whose move to `lo` cuts the fewest extra bytes
        def extra(c: int) -> int:
            return sum(b for o, b in edges.get(c, {}).items() if part[o] == hi) - \
                sum(b for o, b in edges.get(c, {}).items() if part[o] == lo)
        c = min(members, key=extra)
        trial = list(part)
        trial[c] = lo
        cand = realise(trial)
        new_peak = account(cand)
        if max(new_peak) >= max(peak):
            break
        part[:], placement, peak = trial, cand, new_peak
        moved += 1
    notes = []
    if moved:
        notes.append(f"moved {moved} classes to stay under {cap / 2**30:.1f} GiB per device")
    if max(peak) > cap:
        notes.append(f"peak {max(peak) / 2**30:.1f} GiB exceeds the {cap / 2**30:.1f} GiB capacity on every "
                     "assignment tried with these keys")
    return placement, notes


def _priority(prog: Program, assign: list[tuple[int, ...]], comm: list, G: int) -> list[tuple]:
    """Sort keys for the list scheduler: senders first, remote waiters last (nearest source first)."""
    sends = set()
    waits: dict[int, int] = {}
    for c in comm:
        for a in c.after:
            sends.add(a)
        for b in c.before:
            d = assign[b][0]
            dist = (c.root - d) % G if c.root >= 0 else G
            waits[b] = min(waits.get(b, G), dist)
    return [(o.layer, 1 if o.id in waits else 0, waits.get(o.id, 0), 0 if o.id in sends else 1, o.id)
            for o in prog.ops]
