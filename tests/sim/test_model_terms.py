"""The simulator's communication-aware terms, each on a hand-checkable case: jitter from its seed,
HBM shared with copy engines, pipelined limb exchanges, overlap on/off, schedules, the critical path."""
import json

import pytest

from aegis.hardware import HARDWARE_DIR
from aegis.plan import build_plan
from aegis.comm import pair_bytes
from aegis.prims import limb_bytes
from aegis.program import lower
from aegis.schedule import bottom_levels, global_order
from aegis.workloads import Workload, get_model
from sim.compute import KernelModel, hbm_slowdown
from sim.engine import simulate
from sim.network import Network
from sim.profile import load_spec, parse_spec


def _spec(**dev_topo):
    raw = json.loads((HARDWARE_DIR / "h100-sxm.json").read_text())
    for k, v in dev_topo.items():
        (raw["topology"] if k.startswith(("link", "collective")) else raw["device"])[k] = v
    return parse_spec(raw, "test")


@pytest.fixture(scope="module")
def small():
    wl = Workload(get_model("bert-base", layers=1), 256)
    prog = lower(wl)
    return wl, prog


def _plan(small, strategy, devices, **opts):
    wl, prog = small
    return build_plan(wl, strategy, devices, "h100-sxm", program=prog, options=opts)


def test_jitter_is_reproducible_from_its_seed_and_zero_is_exact(small):
    p = _plan(small, "token", 2)
    exact = simulate(p).summary["latency_s"]
    a = simulate(p, jitter=0.1, seed=7)
    b = simulate(p, jitter=0.1, seed=7)
    c = simulate(p, jitter=0.1, seed=8)
    assert a.summary["latency_s"] == b.summary["latency_s"] != c.summary["latency_s"]
    assert sorted(a.ops) == sorted(b.ops)
    assert simulate(p, jitter=0.0, seed=7).summary["latency_s"] == exact
    # a straggler sets the pace: with noise the slowest device finishes after the exact model's end
    assert a.summary["latency_s"] != pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="jitter"):
        simulate(p, jitter=-1)


def test_hbm_slowdown_formula():
    assert hbm_slowdown(0, 3e12) == 1.0
    assert hbm_slowdown(1e12, 3e12) == pytest.approx(1.5)           # a third of HBM taken: 3/2 slower
    assert hbm_slowdown(1e15, 3e12) == pytest.approx(10.0)          # capped: the kernel keeps 10 %


def test_copy_engines_slow_the_kernels_they_share_hbm_with(small):
    """A kernel progresses at 1 / hbm_slowdown(copy rate on its device) while transfers stream: integrating
    that progress over every op's run gives back exactly its stand-alone time."""
    wl, prog = small
    p = _plan(small, "aegis", 2)                                    # K/V streamed while blocks compute
    slow_links = dict(link_bytes_per_s=2e9)                          # transfers of milliseconds
    cost = 2e4                                                       # exaggerated so the effect is large
    spec = _spec(copy_hbm_bytes_per_byte=cost, **slow_links)
    r = simulate(p, spec)
    r0 = simulate(p, _spec(copy_hbm_bytes_per_byte=0.0, **slow_links))
    assert r.summary["latency_s"] > r0.summary["latency_s"]
    km = KernelModel(spec, wl.params())
    lb = limb_bytes(wl.params())
    hbm = spec.device.hbm_bytes_per_s
    spans = []                                                       # (start, end, device, HBM bytes/s)
    for cid, _, _, _, s, e, _, _ in r.comm:
        if e - s <= 0:
            continue
        for (a, b), n in pair_bytes(p.comm[cid], lb).items():
            spans += [(s, e, a, n * cost / (e - s)), (s, e, b, n * cost / (e - s))]
    slowed = 0
    for i, kind, _, _, d, s, e, _ in r.ops:
        cuts = sorted({s, e} | {t for a, b, dev, _ in spans if dev == d for t in (a, b) if s < t < e})
        progress = 0.0
        for a, b in zip(cuts, cuts[1:]):
            rate = sum(x for u, v, dev, x in spans if dev == d and u <= a and b <= v)
            progress += (b - a) / hbm_slowdown(rate, hbm)
        assert progress == pytest.approx(km.work_time(p.ops[i].work, kind=kind), rel=1e-9, abs=1e-12)
        slowed += (e - s) > progress * (1 + 1e-6)
    assert slowed >= 4


def test_limb_exchanges_run_ahead_and_pipeline_with_their_digits(small):
    """overlap on: an op's exchange starts when its inputs exist (beside earlier ops' compute) and the op
    ends at max(start + C, exchange end + C / S); off: compute, then every exchange on the stream."""
    wl, prog = small
    spec = load_spec("h100-sxm")
    on = _plan(small, "limb", 4)
    r_on, r_off = simulate(on, spec), simulate(on, spec, overlap="off")
    net, km, lb = Network(spec, 4), KernelModel(spec, wl.params()), limb_bytes(wl.params())
    internal = {}
    for c in on.comm:
        internal.setdefault(c.after[0], []).append(c)
    rows_on = {r[0]: r for r in r_on.ops}
    rows_off = {r[0]: r for r in r_off.ops}
    comm_on = {r[0]: r for r in r_on.comm}
    checked = ahead = 0
    for i, cs in internal.items():
        lead = [c for c in cs if c.kind != "reduce_scatter"]
        if not lead:
            continue
        cdur = km.work_time(on.ops[i].work, 4, 0, kind=on.ops[i].kind)
        m = sum(net.comm_time(c, lb)[0] for c in lead)
        tail = sum(net.comm_time(c, lb)[0] for c in cs if c.kind == "reduce_scatter")
        stages = sum(n * (len(wl.params().digits(limbs - 1)) if c.kind == "all_gather" else 1)
                     for c in lead for limbs, _, n in c.payload)
        x_start = min(comm_on[c.id][4] for c in lead)
        x_end = max(comm_on[c.id][5] for c in lead)
        assert x_end - x_start == pytest.approx(m, rel=1e-9, abs=1e-12)
        s, e = rows_on[i][5], rows_on[i][6]
        assert e - s == pytest.approx(max(cdur, x_end + cdur / stages - s), rel=1e-9, abs=1e-12)
        s0, e0 = rows_off[i][5], rows_off[i][6]
        assert e0 - s0 == pytest.approx(cdur + m + tail, rel=1e-9)
        ahead += x_start < s - 1e-12                   # the exchange ran beside earlier ops
        checked += 1
    assert checked > 20 and ahead > 5
    assert r_on.summary["latency_s"] < r_off.summary["latency_s"]
    # output aggregation runs after its op, off the stream: its comm row starts at the op's end
    j = next((i for i, cs in internal.items() if any(c.kind == "reduce_scatter" for c in cs)), None)
    if j is not None:
        end = max(r[6] for r in r_on.ops if r[0] == j)
        rs = next(c for c in internal[j] if c.kind == "reduce_scatter")
        assert comm_on[rs.id][4] >= end - 1e-12


@pytest.mark.parametrize("strategy", ["limb", "tensor", "token"])
def test_overlap_off_is_never_faster_and_shows_more_communication(small, strategy):
    spec = _spec(link_bytes_per_s=5e9)
    p = _plan(small, strategy, 4)
    on, off = simulate(p, spec), simulate(p, spec, overlap="off")
    assert on.summary["latency_s"] <= off.summary["latency_s"] * (1 + 1e-9)
    assert off.summary["critical_path"]["comm_s"] > 0
    for r in (on, off):       # the critical path accounts for the whole latency
        cp = r.summary["critical_path"]
        assert cp["compute_s"] + cp["comm_s"] + cp["sync_s"] == pytest.approx(r.summary["latency_s"], rel=1e-6)
        assert 0 <= r.summary["comm_critical_fraction"] <= 1
    with pytest.raises(ValueError, match="overlap"):
        simulate(p, spec, overlap="maybe")


def test_a_single_device_critical_path_is_all_compute(small):
    r = simulate(_plan(small, "single", 1))
    cp = r.summary["critical_path"]
    assert cp["comm_s"] == 0 and cp["sync_s"] == pytest.approx(0, abs=1e-9)
    assert cp["compute_s"] == pytest.approx(r.summary["latency_s"], rel=1e-9)


def test_priority_schedule_is_a_topological_order_by_bottom_level(small):
    wl, prog = small
    lv = bottom_levels(prog)
    for o in prog.ops:
        for s in o.inputs:
            assert lv[s] >= lv[o.id]                 # a producer's chain includes its consumer's
    p_prog = _plan(small, "token", 2, schedule="program")
    p_prio = _plan(small, "token", 2, schedule="priority")
    assert p_prog.orders != p_prio.orders
    assert p_prio.options["schedule"] == "priority"
    for orders in (p_prog.orders, p_prio.orders):
        for order in orders:
            pos = {i: k for k, i in enumerate(order)}
            assert all(pos[s] < pos[i] for i in order for s in prog.ops[i].inputs if s in pos)
    for p in (p_prog, p_prio):
        simulate(p)
    with pytest.raises(ValueError, match="schedule"):
        global_order(prog, build_plan.__globals__["get_strategy"]("token")(
            build_plan.__globals__["PlacementContext"](prog, None, 2, 1 << 40)), "random")


def test_limb_is_never_slower_than_one_device_on_any_profile(small):
    """Strong limb parallelism: pipelined exchanges keep it at or above one device everywhere."""
    from aegis.hardware import hardware_names

    single = _plan(small, "single", 1)
    limb = {g: _plan(small, "limb", g) for g in (2, 4, 8)}
    for name in hardware_names():
        if name == "cpu":
            continue
        spec = load_spec(name)
        base = simulate(single, spec, lift_memory_limit=True).summary["latency_s"]
        for g, p in limb.items():
            assert simulate(p, spec, lift_memory_limit=True).summary["latency_s"] < base, (name, g)
