"""The discrete-event simulation of a Plan (simpy: one process per device stream and per transfer).

* **Compute streams.**  Devices whose op orders are identical (limb parallelism: all of
  them) share one stream process; otherwise each device has its own.  A stream runs its
  order: it waits for the transfers that bring the op's inputs, for the other devices of a
  limb-split or row-split op (a rendezvous: their collectives synchronise them), then for
  the op's kernel time (:mod:`sim.compute`) and, for a limb-split op, its internal limb
  exchanges on the links.
* **Transfers.**  Every communication op is a process: it starts when its producers are
  done, acquires the copy engines of its senders and every link on its routes (in one
  global order, so no deadlock), holds them for its duration (:mod:`sim.network`) and
  releases them.  Transfers that share links queue: contention and topology matter.
* **Overlap** (``overlap="on"``, the default): transfers run on the copy engines beside
  compute.  A limb-split op's input broadcasts (and dropped-limb shares) run as their own
  process from the moment its inputs exist, on the links and queued behind other exchanges,
  while the stream computes the ops before it (Cerium's collectives are CUDA-graph nodes with
  explicit dependencies: independent branches overlap them); the op itself is pipelined digit
  by digit (Cerium/Cinnamon: the exchange of digit j+1 runs while digit j is extended), so it
  ends at ``max(start + C, exchange end + C / S)`` for compute ``C`` over ``S`` digit stages.
  Dependent key switches inside one op are not told apart (each could only start its exchange
  when the previous one ends): optimistic for limb parallelism, the strongest version of it.
  Its output aggregation (giant-step reduce-scatter) runs after the op, off the compute
  stream, while independent ops proceed.
  ``overlap="off"``: communication on demand -- a transfer starts only when its first
  consumer's stream reaches the consumer (and its producers are done), so the stream waits
  for all of it; a limb-split op runs its exchanges after its compute, on its stream.
* **HBM sharing**: a transfer's copy engines read (sender) and write (receiver)
  ``device.copy_hbm_bytes_per_byte`` HBM bytes per byte moved; while copies stream at ``r``
  bytes/s on its device a kernel progresses ``hbm / (hbm - r)`` times slower (capped at 10x,
  :func:`sim.compute.hbm_slowdown`), re-evaluated whenever a transfer on the device starts or
  ends (kernels are memory bound: DESIGN.md section 4).  Exchanges inside a limb-split op
  are part of its pipelined time and take no extra share.
* **Jitter** (``jitter`` = coefficient of variation, 0 = the exact model): every op's kernel
  time on every device is multiplied by a lognormal draw of mean 1 from a generator seeded
  with ``seed``; devices then run their own streams, so rendezvous wait for stragglers.
* **Critical path**: walking back from the last op through what each op waited for (its
  stream predecessor, an incoming transfer, a partner device, an output aggregation)
  splits the latency into compute, communication and synchronisation (``summary.critical_path``).
* **Memory** follows the Plan's liveness exactly (:mod:`aegis.memory`); a device over its
  capacity stops the simulation with the device, the op and the excess, unless the limit
  is lifted (the Result then says ``fits: false``).
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import simpy

from aegis.comm import pair_bytes, pair_bytes_by_phase
from aegis.memory import memory_report
from aegis.plan import Plan
from aegis.prims import limb_bytes
from aegis.result import Result
from aegis.program import PHASES

from .compute import KernelModel, hbm_slowdown
from .network import Network
from .profile import HardwareSpec, load_spec


#: values of the ``overlap`` option
OVERLAP = ("on", "off")


class SimulationMemoryError(RuntimeError):
    """A device runs out of memory in the simulated execution."""


def check_capacity(plan: Plan, timeline, capacity: int) -> None:
    for d, arr in enumerate(timeline):
        over = [k for k in range(len(arr)) if arr[k] > capacity] if len(arr) and arr.max() > capacity else []
        if over:
            k = over[0]
            op = plan.ops[plan.orders[d][k]]
            gib = 2 ** 30
            raise SimulationMemoryError(
                f"device {d} runs out of memory at op {op.id} ({op.kind}, layer {op.layer}, block {op.block}): "
                f"needs {arr[k] / gib:.2f} GiB, {(arr[k] - capacity) / gib:.2f} GiB over its {capacity / gib:.2f} GiB "
                f"(peak {arr.max() / gib:.2f} GiB); use more devices, or --lift-memory-limit to simulate anyway")


def simulate(plan: Plan, spec: HardwareSpec | None = None, lift_memory_limit: bool = False,
             record_memory: bool = False, overlap: str | None = None, jitter: float = 0.0,
             seed: int = 0) -> Result:
    """Predict the execution of ``plan`` on ``spec`` (default: the plan's hardware profile).

    Args:
        overlap: ``on`` | ``off`` (default: the plan's ``options["overlap"]``, else ``on``).
        jitter: coefficient of variation of kernel times (0: exact).
        seed: seed of the jitter draws.
    """
    t_wall = time.perf_counter()
    spec = spec or load_spec(plan.hardware)
    overlap = overlap or plan.options.get("overlap", "on")
    if overlap not in OVERLAP:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAP)}, got {overlap!r}")
    if not (jitter >= 0 and math.isfinite(jitter)):
        raise ValueError(f"jitter is a coefficient of variation >= 0 (0: exact), got {jitter!r}")
    pipelined = overlap == "on"
    params = plan.params
    lb = limb_bytes(params)
    G = plan.devices
    ops, assign, mode = plan.ops, plan.assign, plan.mode
    mem = plan.memory if plan.memory.timeline is not None else memory_report(plan, plan, plan.orders)
    capacity = spec.device.memory_bytes
    fits = all(p <= capacity for p in mem.peak)
    if not fits and not lift_memory_limit:
        check_capacity(plan, mem.timeline, capacity)

    km = KernelModel(spec, params)
    busy_now = [0]                       # devices computing at this instant (shared cores slow them)
    net = Network(spec, G)
    env = simpy.Environment()
    link_res = {e: simpy.Resource(env, 1) for e in net.g.edges}
    link_order = {e: k for k, e in enumerate(sorted(net.g.edges, key=str))}
    copy_res = [simpy.Resource(env, 1) for _ in range(G)]
    hbm = spec.device.hbm_bytes_per_s
    copy_cost = spec.device.copy_hbm_bytes_per_byte
    copy_rate = [0.0] * G                # HBM bytes/s the copy engines take on each device now
    rate_changed = [env.event() for _ in range(G)]

    def set_rates(rates: dict[int, float] | None, sign: float) -> None:
        for d, r in (rates or {}).items():
            copy_rate[d] = max(0.0, copy_rate[d] + sign * r)
            ev, rate_changed[d] = rate_changed[d], env.event()
            ev.succeed()

    def run_kernel(lane: list[int], dur: float):
        """A kernel of ``dur`` seconds alone, sharing HBM with the copies on its devices as they come and go:
        it progresses at 1 / hbm_slowdown(copy rate) of its own speed (processor sharing, exact)."""
        if not copy_cost:
            if dur > 0:
                yield env.timeout(dur)
            return
        left = dur
        while left > 1e-15:
            f = hbm_slowdown(max(copy_rate[d] for d in lane), hbm)
            t0 = env.now
            to = env.timeout(left * f)
            yield env.any_of([to] + [rate_changed[d] for d in lane])
            if to.processed:            # ran to its end (a tiny remainder can round to no time at all)
                return
            left -= (env.now - t0) / f

    done = [env.event() for _ in ops]
    pending = [len(a) for a in assign]
    incoming: dict[int, list[int]] = defaultdict(list)
    internal: dict[int, list] = defaultdict(list)
    comm_done = [env.event() for _ in plan.comm]
    for c in plan.comm:
        if c.internal:
            internal[c.after[0]].append(c)
        else:
            for b in c.before:
                incoming[b].append(c.id)

    # lanes: devices with identical orders share one stream process (not under jitter: each draws its own)
    lanes: list[list[int]] = []
    seen: dict[tuple, int] = {}
    for d in range(G):
        if not plan.orders[d]:
            continue
        key = (len(plan.orders[d]), tuple(plan.orders[d][:: max(1, len(plan.orders[d]) // 97)]))
        if not jitter and key in seen and plan.orders[lanes[seen[key]][0]] == plan.orders[d]:
            lanes[seen[key]].append(d)
        else:
            seen[key] = len(lanes)
            lanes.append([d])
    lane_of = {d: k for k, lane in enumerate(lanes) for d in lane}
    wanted = [env.event() for _ in plan.comm] if not pipelined else []   # a consumer asked for it
    wanted_by: dict[int, tuple[int, int] | None] = {}      # comm -> (op before the consumer, device)
    draws = None
    if jitter:
        sigma2 = math.log1p(jitter * jitter)
        draws = np.random.default_rng(seed).lognormal(-sigma2 / 2, math.sqrt(sigma2), size=(len(ops), G))

    rv_arrive: dict[int, list] = {}
    op_rows: list[tuple] = []
    comm_rows: list[tuple] = []
    busy = [0.0] * G
    mem_rows: list[tuple[int, float, float]] = []
    comm_links: dict[int, list[str]] = {}
    events = [0]
    exposed: dict[int, float] = {}       # seconds of a limb-split op's own exchanges on its stream
    tail_span: dict[int, tuple[float, float]] = {}
    comm_span: dict[int, tuple[float, float]] = {}

    def split_internal(i: int) -> tuple[float, float, int, frozenset, frozenset]:
        """Of a limb-split op: (seconds of its input broadcasts and dropped-limb shares, seconds of its output
        aggregation, digit stages, links of the first, links of the second)."""
        m = tail = 0.0
        stages = 0
        links, tlinks = frozenset(), frozenset()
        for c in internal.get(i, ()):
            ct, ln = net.comm_time(c, lb)
            if c.kind == "reduce_scatter":
                tail += ct
                tlinks |= ln
                continue
            m += ct
            links |= ln
            for limbs, _, n in c.payload:
                stages += n * (len(params.digits(limbs - 1)) if c.kind == "all_gather" else 1)
        return m, tail, stages, links, tlinks

    internal_split = {i: split_internal(i) for i in internal}

    # overlap on: a limb-split op's exchanges run as their own process from the moment its inputs exist,
    # on the links (queued behind other exchanges), while the stream computes other ops and then this one
    prefetch = {i for i, v in internal_split.items()
                if pipelined and v[0] > 0 and not km.limb_measured(len(assign[i]))}
    x_done = {i: env.event() for i in prefetch}
    x_span: dict[int, tuple[float, float]] = {}
    contended = any(not c.internal for c in plan.comm) or bool(prefetch)

    def rates_of(c, t: float) -> dict[int, float]:
        if not copy_cost or t <= 0:
            return {}
        out: dict[int, float] = defaultdict(float)
        for (s_, d_), b in pair_bytes(c, lb).items():
            out[s_] += b * copy_cost / t
            out[d_] += b * copy_cost / t
        return out

    def hold(links: frozenset, senders, duration: float, rates: dict[int, float] | None = None):
        """Acquire (in one global order: copy engines, then links) and hold for ``duration``."""
        res: list[simpy.Resource] = []
        if contended:
            res += [copy_res[s] for s in sorted(set(senders))]
            res += [link_res[e] for e in sorted(links, key=link_order.__getitem__)]
        reqs = []
        for x in res:                 # one at a time: a queued request already claims its place
            r = x.request()
            reqs.append(r)
            yield r
        set_rates(rates, 1.0)
        yield env.timeout(duration)
        set_rates(rates, -1.0)
        for r in reqs:
            r.resource.release(r)

    tails = {i for i, v in internal_split.items() if v[1] > 0 and not km.limb_measured(len(assign[i]))} \
        if pipelined else set()

    def exchange(i: int):
        """The input broadcasts (and dropped-limb shares) of limb-split op ``i``, started as soon as its inputs exist."""
        waits = [done[s_] for s_ in ops[i].inputs if not done[s_].triggered]
        waits += [comm_done[c] for c in incoming.get(i, ()) if not comm_done[c].triggered]
        if waits:
            yield env.all_of(waits)
        m, _, _, links, _ = internal_split[i]
        yield from hold(links, assign[i], m)
        x_span[i] = (env.now - m, env.now)
        x_done[i].succeed()

    def finish(i: int):
        """An op done on every device: its output aggregation (if pipelined) runs, then it is done."""
        _, tail, _, _, tlinks = internal_split[i]
        t0 = env.now
        yield from hold(tlinks, assign[i], tail)
        tail_span[i] = (t0, env.now)
        done[i].succeed()

    def stream(lane: list[int]):
        order = plan.orders[lane[0]]
        lead = lane[0]
        for k, i in enumerate(order):
            o = ops[i]
            if wanted:
                for c in incoming.get(i, ()):
                    if not wanted[c].triggered:
                        wanted_by[c] = (order[k - 1], lead) if k else None
                        wanted[c].succeed()
            waits = [comm_done[c] for c in incoming.get(i, ()) if not comm_done[c].triggered]
            waits += [done[s] for s in o.inputs if s in tails and not done[s].triggered]
            if waits:
                yield env.all_of(waits)
            devs = assign[i]
            spans = len({lane_of[d] for d in devs}) > 1
            if spans and mode[i] in ("limb", "partial"):
                rv = rv_arrive.setdefault(i, [0, env.event()])
                rv[0] += 1
                if rv[0] == len({lane_of[d] for d in devs}):
                    rv[1].succeed()
                else:
                    yield rv[1]
            measured = False
            if mode[i] == "limb" and len(devs) > 1:
                dur = km.work_time(o.work, len(devs), devs.index(lead), kind=o.kind)
                measured = km.limb_measured(len(devs))
            elif mode[i] == "partial":
                dur = km.work_time(o.work, 1, 0, len(devs), kind=o.kind)
            else:
                dur = km.work_time(o.work, kind=o.kind)
            if draws is not None:
                dur *= float(draws[i, lead])
            start = env.now
            busy_now[0] += len(lane)
            # a calibrated limb-split time was measured with its own group busy: only further devices slow it
            dur *= km.sharing(busy_now[0]) / (km.sharing(len(devs)) if measured else 1.0)
            if i in internal and not measured:   # a calibrated limb-split time includes its exchanges
                m, tail, stages, links, tlinks = internal_split[i]
                if pipelined:
                    # digit by digit: each digit's compute needs that digit exchanged, so the op ends no
                    # sooner than its compute, nor than one digit's compute after its exchange ends
                    if dur > 0:
                        yield env.timeout(dur)
                    if i in x_done:
                        if not x_done[i].triggered:
                            yield x_done[i]
                        wait = x_span[i][1] + dur / max(stages, 1) - env.now
                        if wait > 0:
                            yield env.timeout(wait)
                    exposed[i] = (env.now - start) - dur
                    busy_now[0] -= len(lane)
                else:
                    if dur > 0:
                        yield env.timeout(dur)
                    busy_now[0] -= len(lane)
                    t_int = m + tail
                    exposed[i] = t_int
                    # the lead holds the links; the others are busy exchanging as long (never waiting on
                    # an event while holding their stream: transfers acquire streams in order)
                    if not spans or lead == devs[0]:
                        yield from hold(links | tlinks, devs, t_int)
                    else:
                        yield env.timeout(t_int)
            else:
                yield from run_kernel(lane, dur)
                dur = env.now - start
                busy_now[0] -= len(lane)
            end = env.now
            events[0] += 1
            for d in lane:
                op_rows.append((i, o.kind, o.phase, o.layer, d, start, end, 0))
                busy[d] += dur
                if record_memory:
                    mem_rows.append((d, start, float(mem.timeline[d][k])))
            pending[i] -= len(lane)
            if pending[i] == 0:
                if i in tails:
                    env.process(finish(i))
                else:
                    done[i].succeed()

    shared_waits: dict[tuple[int, ...], simpy.events.Event] = {}

    def transfer(c):
        if len(c.after) > 8:        # a collective group: all its transfers wait on one shared condition
            ev = shared_waits.get(c.after)
            if ev is None:
                ev = shared_waits[c.after] = env.all_of([done[a] for a in c.after])
            if not ev.triggered:
                yield ev
        else:
            waits = [done[a] for a in c.after if not done[a].triggered]
            if waits:
                yield env.all_of(waits)
        if wanted and not wanted[c.id].triggered:
            yield wanted[c.id]
        t, links = net.comm_time(c, lb)
        senders = [c.root] if c.root >= 0 and c.kind in ("send", "scatter") else \
            list(c.participants[: len(c.participants) // 2]) if c.kind == "shard_send" else list(c.participants)
        ready = env.now
        yield from hold(links, senders, t, rates_of(c, t))
        comm_span[c.id] = (ready, env.now)
        comm_links[c.id] = sorted(f"{a}>{b}" for a, b in links)
        comm_rows.append((c.id, c.kind, c.phase, c.layer, env.now - t, env.now, c.total_bytes,
                          "-".join(map(str, c.participants))))
        comm_done[c.id].succeed()

    for i in sorted(prefetch):
        env.process(exchange(i))
    for lane in lanes:
        env.process(stream(lane))
    for c in plan.comm:
        if not c.internal:
            env.process(transfer(c))
    env.run()
    if not all(e.triggered for e in done):
        stuck = next(i for i, e in enumerate(done) if not e.triggered)
        raise RuntimeError(f"simulation stalled: op {stuck} ({ops[stuck].kind}) never ran (plan dependency error)")
    # internal comm rows: time inside (or, for a pipelined output aggregation, just after) their op
    op_end: dict[int, float] = {}
    for r in op_rows:
        op_end[r[0]] = max(op_end.get(r[0], 0.0), r[6])
    x_at = {i: a for i, (a, _) in x_span.items()}
    for c in plan.comm:
        if c.internal:
            t, _ = net.comm_time(c, lb)
            i = c.after[0]
            if c.kind != "reduce_scatter" and i in x_at:     # back to back inside the op's exchange process
                x_at[i] += t
                e = x_at[i]
            else:
                e = tail_span[i][1] if c.kind == "reduce_scatter" and i in tail_span else op_end[i]
            comm_rows.append((c.id, c.kind, c.phase, c.layer, e - t, e, c.total_bytes,
                              "-".join(map(str, c.participants))))
    latency = max([r[6] for r in op_rows] + [e for _, e in tail_span.values()], default=0.0)
    critical = critical_path(plan, op_rows, comm_span, incoming, exposed, tail_span, latency, wanted_by)
    pairs = pair_bytes_by_phase(plan.comm, lb)
    by_phase = {ph: 0 for ph in PHASES}
    for (s, d, ph), b in pairs.items():
        by_phase[ph] = by_phase.get(ph, 0) + b
    busy_phase: dict[str, float] = {}
    busy_kind: dict[str, float] = {}
    for r in op_rows:                                 # device-seconds: a multi-device op counts on each device
        busy_phase[r[2]] = busy_phase.get(r[2], 0.0) + r[6] - r[5]
        busy_kind[r[1]] = busy_kind.get(r[1], 0.0) + r[6] - r[5]
    wall = time.perf_counter() - t_wall
    summary = {
        "latency_s": latency,
        "comm_bytes": {"total": sum(by_phase.values()), "by_phase": by_phase},
        "peak_memory_bytes": mem.peak,
        "capacity_bytes": capacity,
        "utilisation": [busy[d] / latency if latency else 0.0 for d in range(G)],
        "compute_by_phase_s": busy_phase, "compute_by_kind_s": busy_kind,
        "fits": fits,
        "memory_limit_lifted": bool(lift_memory_limit and not fits),
        "critical_path": critical,
        "comm_critical_fraction": critical["comm_s"] / latency if latency else 0.0,
        "overlap": overlap, "jitter": jitter, "seed": seed,
        "simulated_ops": events[0],
        "sim_wall_s": wall,
        "events_per_s": (events[0] + len(plan.comm)) / wall if wall else 0.0,
    }
    ident = {"model": plan.workload.model.name, "seq_len": plan.workload.seq_len, "strategy": plan.strategy,
             "devices": G, "hardware": spec.name, "params": plan.workload.params_name}
    return Result("sim", ident, op_rows, comm_rows, dict(pairs), summary, mem_rows, comm_links)


def critical_path(plan: Plan, op_rows: list[tuple], comm_span: dict[int, tuple[float, float]],
                  incoming: dict[int, list[int]], exposed: dict[int, float],
                  tail_span: dict[int, tuple[float, float]], latency: float,
                  wanted_by: dict[int, tuple[int, int] | None] | None = None) -> dict[str, float]:
    """Seconds of the critical path in compute, communication and synchronisation.

    From the op (or output aggregation) that ends last, repeatedly step to whatever ended
    last before the current op started: the previous op of its device, an incoming transfer
    (its wait for links and its transfer count as communication, then its producer or, when it
    started on demand, the op before its consumer), or an
    input's output aggregation.  A gap nothing explains (waiting for a partner device of a
    split op) is synchronisation.  compute + comm + sync = latency.
    """
    span: dict[tuple[int, int], tuple[float, float]] = {}
    for i, _, _, _, d, s, e, _ in op_rows:
        span[(i, d)] = (s, e)
    pos: dict[int, dict[int, int]] = {}
    out = {"compute_s": 0.0, "comm_s": 0.0, "sync_s": 0.0}
    if not op_rows:
        return out
    last = max(op_rows, key=lambda r: r[6])
    i, d = last[0], last[4]
    t = latency
    if tail_span and max(e for _, e in tail_span.values()) >= last[6]:
        j = max(tail_span, key=lambda k: tail_span[k][1])
        out["comm_s"] += tail_span[j][1] - tail_span[j][0]
        out["sync_s"] += max(0.0, tail_span[j][0] - max(span[(j, dd)][1] for dd in plan.assign[j] if (j, dd) in span))
        i, d = j, next(dd for dd in plan.assign[j] if (j, dd) in span)
        t = span[(i, d)][1]
    for _ in range(4 * len(op_rows) + 10):
        s, e = span[(i, d)]
        out["sync_s"] += max(0.0, t - e)
        ex = min(exposed.get(i, 0.0), e - s)
        out["comm_s"] += ex
        out["compute_s"] += (e - s) - ex
        t = s
        if d not in pos:
            pos[d] = {op: k for k, op in enumerate(plan.orders[d])}
        k = pos[d][i]
        cands: list[tuple[float, str, int, int]] = []
        if k > 0:
            p = plan.orders[d][k - 1]
            cands.append((span[(p, d)][1], "op", p, d))
        for c in incoming.get(i, ()):
            if c in comm_span:
                cands.append((comm_span[c][1], "comm", c, -1))
        for src in plan.ops[i].inputs:
            if src in tail_span:
                cands.append((tail_span[src][1], "tail", src, -1))
        if not cands:
            out["sync_s"] += s
            break
        when, what, j, dd = max(cands)
        if what == "op":
            out["sync_s"] += max(0.0, s - when)
            i, d, t = j, dd, when
            continue
        out["sync_s"] += max(0.0, s - when)
        if what == "tail":
            a, b = tail_span[j]
            out["comm_s"] += b - a
            dev = next(x for x in plan.assign[j] if (j, x) in span)
            i, d, t = j, dev, a
            continue
        a, b = comm_span[j]                     # ready (producers done) .. arrived
        out["comm_s"] += b - a
        c = plan.comm[j]
        prods = [(max(span[(p, x)][1] for x in plan.assign[p] if (p, x) in span), p, -1) for p in c.after]
        w = (wanted_by or {}).get(j)
        if w is not None:
            prods.append((span[w][1], w[0], w[1]))
        if not prods:
            out["sync_s"] += a
            break
        when_p, p, dev = max(prods)
        out["sync_s"] += max(0.0, a - when_p)
        if dev < 0:
            dev = max((x for x in plan.assign[p] if (p, x) in span), key=lambda x: span[(p, x)][1])
        i, d, t = p, dev, when_p
    return out
