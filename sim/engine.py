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
* **Memory** follows the Plan's liveness exactly (:mod:`aegis.memory`); a device over its
  capacity stops the simulation with the device, the op and the excess, unless the limit
  is lifted (the Result then says ``fits: false``).
"""
from __future__ import annotations

import time
from collections import defaultdict

import simpy

from aegis.comm import pair_bytes_by_phase
from aegis.memory import memory_report
from aegis.plan import Plan
from aegis.prims import limb_bytes
from aegis.result import Result
from aegis.program import PHASES

from .compute import KernelModel
from .network import Network
from .profile import HardwareSpec, load_spec


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
             record_memory: bool = False) -> Result:
    """Predict the execution of ``plan`` on ``spec`` (default: the plan's hardware profile)."""
    t_wall = time.perf_counter()
    spec = spec or load_spec(plan.hardware)
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

    # lanes: devices with identical orders share one stream process
    lanes: list[list[int]] = []
    seen: dict[tuple, int] = {}
    for d in range(G):
        if not plan.orders[d]:
            continue
        key = (len(plan.orders[d]), tuple(plan.orders[d][:: max(1, len(plan.orders[d]) // 97)]))
        if key in seen and plan.orders[lanes[seen[key]][0]] == plan.orders[d]:
            lanes[seen[key]].append(d)
        else:
            seen[key] = len(lanes)
            lanes.append([d])
    lane_of = {d: k for k, lane in enumerate(lanes) for d in lane}

    rv_arrive: dict[int, list] = {}
    op_rows: list[tuple] = []
    comm_rows: list[tuple] = []
    busy = [0.0] * G
    mem_rows: list[tuple[int, float, float]] = []
    comm_links: dict[int, list[str]] = {}
    events = [0]

    def internal_time(i: int) -> tuple[float, frozenset]:
        t, links = 0.0, frozenset()
        for c in internal.get(i, ()):
            ct, ln = net.comm_time(c, lb)
            t += ct
            links |= ln
        return t, links

    contended = any(not c.internal for c in plan.comm)

    def hold(links: frozenset, senders, duration: float):
        if not contended:          # nothing else ever uses the links: no need to queue
            yield env.timeout(duration)
            return
        reqs = [copy_res[s].request() for s in sorted(set(senders))]
        reqs += [link_res[e].request() for e in sorted(links, key=link_order.__getitem__)]
        if reqs:
            yield env.all_of(reqs)
        yield env.timeout(duration)
        for r in reqs:
            r.resource.release(r)

    def stream(lane: list[int]):
        order = plan.orders[lane[0]]
        lead = lane[0]
        for k, i in enumerate(order):
            o = ops[i]
            waits = [comm_done[c] for c in incoming.get(i, ()) if not comm_done[c].triggered]
            if waits:
                yield env.all_of(waits)
            devs = assign[i]
            spans = len({lane_of[d] for d in devs}) > 1
            if spans and mode[i] in ("limb", "partial"):
                rv = rv_arrive.setdefault(i, [0, env.event(), env.event()])
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
            start = env.now
            busy_now[0] += len(lane)
            # a calibrated limb-split time was measured with its own group busy: only further devices slow it
            dur *= km.sharing(busy_now[0]) / (km.sharing(len(devs)) if measured else 1.0)
            if dur > 0:
                yield env.timeout(dur)
            busy_now[0] -= len(lane)
            if i in internal and not measured:   # a calibrated limb-split time includes its exchanges
                t_int, links = internal_time(i)
                if not spans or lead == devs[0]:
                    yield from hold(links, devs, t_int)
                    if spans:
                        rv_arrive[i][2].succeed()
                elif spans:
                    yield rv_arrive[i][2]
            end = env.now
            events[0] += 1
            for d in lane:
                op_rows.append((i, o.kind, o.phase, o.layer, d, start, end, 0))
                busy[d] += dur
                if record_memory:
                    mem_rows.append((d, start, float(mem.timeline[d][k])))
            pending[i] -= len(lane)
            if pending[i] == 0:
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
        t, links = net.comm_time(c, lb)
        senders = [c.root] if c.root >= 0 and c.kind in ("send", "scatter") else list(c.participants)
        start = env.now
        yield from hold(links, senders, t)
        comm_links[c.id] = sorted(f"{a}>{b}" for a, b in links)
        comm_rows.append((c.id, c.kind, c.phase, c.layer, start, env.now, c.total_bytes,
                          "-".join(map(str, c.participants))))
        comm_done[c.id].succeed()

    for lane in lanes:
        env.process(stream(lane))
    for c in plan.comm:
        if not c.internal:
            env.process(transfer(c))
    env.run()
    if not all(e.triggered for e in done):
        stuck = next(i for i, e in enumerate(done) if not e.triggered)
        raise RuntimeError(f"simulation stalled: op {stuck} ({ops[stuck].kind}) never ran (plan dependency error)")
    # internal comm rows: time inside their op
    op_end = {}
    for r in op_rows:
        op_end[r[0]] = max(op_end.get(r[0], 0.0), r[6])
    for c in plan.comm:
        if c.internal:
            t, _ = net.comm_time(c, lb)
            e = op_end[c.after[0]]
            comm_rows.append((c.id, c.kind, c.phase, c.layer, e - t, e, c.total_bytes,
                              "-".join(map(str, c.participants))))
    # bytes work per op row (from the kernel model's cost source)
    latency = max((r[6] for r in op_rows), default=0.0)
    pairs = pair_bytes_by_phase(plan.comm, lb)
    by_phase = {ph: 0 for ph in PHASES}
    for (s, d, ph), b in pairs.items():
        by_phase[ph] = by_phase.get(ph, 0) + b
    wall = time.perf_counter() - t_wall
    summary = {
        "latency_s": latency,
        "comm_bytes": {"total": sum(by_phase.values()), "by_phase": by_phase},
        "peak_memory_bytes": mem.peak,
        "capacity_bytes": capacity,
        "utilisation": [busy[d] / latency if latency else 0.0 for d in range(G)],
        "fits": fits,
        "memory_limit_lifted": bool(lift_memory_limit and not fits),
        "simulated_ops": events[0],
        "sim_wall_s": wall,
        "events_per_s": (events[0] + len(plan.comm)) / wall if wall else 0.0,
    }
    ident = {"model": plan.workload.model.name, "seq_len": plan.workload.seq_len, "strategy": plan.strategy,
             "devices": G, "hardware": spec.name, "params": plan.workload.params_name}
    return Result("sim", ident, op_rows, comm_rows, dict(pairs), summary, mem_rows, comm_links)
