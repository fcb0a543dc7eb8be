import json

import pytest

from aegis.comm import CommOp
from aegis.hardware import HARDWARE_DIR
from sim.network import Network
from sim.profile import ProfileError, load_spec, parse_spec

LB = 512 * 1024
H100 = HARDWARE_DIR / "h100-sxm.json"


def _spec(kind="switch", **topo):
    """The h100-sxm profile as a plain alpha-beta model (no NCCL protocols, ring unless told)."""
    raw = json.loads(open(H100).read())
    raw["topology"].pop("protocols")
    raw["topology"].update({"kind": kind, "collective_algorithm": "ring", **topo})
    return parse_spec(raw, "test")


def test_ring_all_gather_on_a_switch_matches_the_closed_form():
    spec = _spec()
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    c = CommOp(0, "all_gather", "attention", 0, (0, 1, 2, 3), payload=((8, 1, 1),))
    t, links = net.comm_time(c, LB)
    chunk = 2 * LB                                      # 8 limbs over 4 devices
    assert t == pytest.approx(3 * (2 * a + chunk / bw))   # G-1 steps, two hops through the switch
    assert len(links) == 8
    c5 = CommOp(0, "all_gather", "attention", 0, (0, 1, 2, 3), payload=((8, 1, 5),))
    assert net.comm_time(c5, LB)[0] == pytest.approx(5 * t)


def test_ring_topology_collectives_and_reduce_scatter():
    spec = _spec("ring")
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    for kind in ("all_gather", "reduce_scatter"):
        c = CommOp(0, kind, "ffn", 0, (0, 1, 2, 3), payload=((8, 2, 1),))
        assert net.comm_time(c, LB)[0] == pytest.approx(3 * (a + 2 * 2 * LB / bw)), kind


def test_direct_algorithm_shares_the_senders_link():
    spec = _spec(collective_algorithm="direct")
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    c = CommOp(0, "all_gather", "attention", 0, (0, 1, 2, 3), payload=((8, 1, 1),))
    # one step; each device link carries its chunk to 3 peers
    assert net.comm_time(c, LB)[0] == pytest.approx(2 * a + 3 * 2 * LB / bw)


def test_send_to_several_shares_the_root_link():
    spec = _spec()
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    one = CommOp(0, "send", "attention", 0, (0, 1), root=0, nbytes=10 ** 8)
    three = CommOp(0, "send", "attention", 0, (0, 1, 2, 3), root=0, nbytes=10 ** 8)
    assert net.comm_time(one, LB)[0] == pytest.approx(2 * a + 1e8 / bw)
    assert net.comm_time(three, LB)[0] == pytest.approx(2 * a + 3e8 / bw)


def test_uneven_link_slows_only_what_uses_it():
    slow = _spec(link_overrides=[{"src": 2, "dst": "switch", "bytes_per_s": 45e9}])
    net = Network(slow, 4)
    fast = Network(_spec(), 4)
    from0 = CommOp(0, "send", "attention", 0, (0, 1), root=0, nbytes=10 ** 8)
    from2 = CommOp(0, "send", "attention", 0, (2, 1), root=2, nbytes=10 ** 8)
    assert net.comm_time(from0, LB)[0] == pytest.approx(fast.comm_time(from0, LB)[0])
    assert net.comm_time(from2, LB)[0] > 5 * fast.comm_time(from2, LB)[0]


def test_pcie_tree_routes_through_the_root():
    spec = load_spec("pcie-gen5")
    net = Network(spec, 8)
    assert len(net.path(0, 1)) == 2 and len(net.path(0, 5)) == 4


def test_bad_profiles_name_the_field(tmp_path):
    raw = json.loads(open(H100).read())
    del raw["device"]["hbm_bytes_per_s"]
    with pytest.raises(ProfileError, match="device.hbm_bytes_per_s"):
        parse_spec(raw, "x")
    raw = json.loads(open(H100).read())
    raw["topology"]["kind"] = "torus"
    with pytest.raises(ProfileError, match="topology.kind.*valid: switch"):
        parse_spec(raw, "x")
    raw = json.loads(open(H100).read())
    raw["device"]["memory_efficiency"] = 1.5
    with pytest.raises(ProfileError, match="memory_efficiency"):
        parse_spec(raw, "x")
    raw = json.loads(open(H100).read())
    raw["topology"]["link_overrides"] = [{"src": 0, "dst": 1, "bytes_per_s": 1}]
    with pytest.raises(ProfileError, match="link_overrides\\[0\\]: no link"):
        parse_spec(raw, "x").graph(4)
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    with pytest.raises(ProfileError, match="not valid JSON"):
        load_spec(str(f))
    with pytest.raises(ProfileError, match="valid: 2x4-h100-ib, a100-40gb, a100-sxm"):
        load_spec("tpu")


def test_all_reduce_and_all_to_all():
    from aegis.comm import pair_bytes, total_bytes

    spec = _spec()
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    ar = CommOp(0, "all_reduce", "ffn", 0, (0, 1, 2, 3), payload=((8, 2, 1),))
    assert net.comm_time(ar, LB)[0] == pytest.approx(6 * (2 * a + 4 * LB / bw))      # 2 (G-1) steps
    assert sum(pair_bytes(ar, LB).values()) == total_bytes(ar, LB) == 2 * 3 * 8 * 2 * LB
    aa = CommOp(0, "all_to_all", "attention", 0, (0, 1, 2), nbytes=1000)
    assert total_bytes(aa, LB) == sum(pair_bytes(aa, LB).values()) == 6000
    assert net.comm_time(aa, LB)[0] == pytest.approx(2 * a + 2000 / bw)


def test_calibrated_kernel_table_replaces_the_roofline():
    from aegis.workloads import Workload, get_model
    from sim.compute import KernelModel

    raw = json.loads(open(H100).read())
    raw["kernel_table"] = {"log_n": 16, "prims": {"rot": {"fixed_s": 1e-3, "per_limb_s": 1e-4}},
                           "provenance": {"machine": "test"}}
    params = Workload(get_model("tiny"), 16).params()
    km = KernelModel(parse_spec(raw, "cal"), params)
    assert km.prim_time("rot", 9) == pytest.approx(1e-3 + 10 * 1e-4)
    assert km.prim_time("pmul", 9) == KernelModel(_spec(), params).prim_time("pmul", 9)


def _protocols(**over):
    return {"LL": {"base_latency_s": 6.6e-6, "step_latency_s": 0.6e-6, "bandwidth_fraction": 0.5},
            "Simple": {"base_latency_s": 8.4e-6, "step_latency_s": 3.4e-6, "bandwidth_fraction": 1.0}, **over}


def test_a_collective_call_pays_launch_and_per_step_latency_by_protocol():
    """t = base + steps x (step latency + path latency + chunk / (bw x eff x fraction)), fastest protocol."""
    spec = _spec(protocols=_protocols())
    net = Network(spec, 4)
    bw = spec.topology["link_bytes_per_s"] * spec.collective_efficiency
    a = spec.topology["link_latency_s"]
    for limbs, unit in ((8, 16), (8, LB)):               # a tiny and a large message
        c = CommOp(0, "all_gather", "attention", 0, (0, 1, 2, 3), payload=((limbs, 1, 1),))
        chunk = limbs // 4 * unit
        ll = 6.6e-6 + 3 * (0.6e-6 + 2 * a + chunk / (0.5 * bw))
        simple = 8.4e-6 + 3 * (3.4e-6 + 2 * a + chunk / bw)
        assert net.comm_time(c, LB if unit == LB else 16)[0] == pytest.approx(min(ll, simple))
    alg, proto, _ = net.choice("all_gather", (0, 1, 2, 3), 8, 16.0)
    assert proto == "LL"                                  # small messages: the low-latency protocol
    assert net.choice("all_gather", (0, 1, 2, 3), 8, float(4 * LB))[1] == "Simple"   # 4 MiB chunks


def test_auto_picks_the_fastest_algorithm_by_size():
    spec = _spec(collective_algorithm="auto", protocols=_protocols())
    net = Network(spec, 8)
    parts = tuple(range(8))
    # all-reduce: a tree (2 log2 G = 6 steps) beats the ring (14 steps) when latency dominates ...
    assert net.choice("all_reduce", parts, 8, 8.0)[0] == "tree"
    # ... and the ring's 2 (G-1)/G bytes beat the tree's whole message per step when bandwidth does
    assert net.choice("all_reduce", parts, 64, float(LB))[0] == "ring"
    ring = Network(_spec(protocols=_protocols()), 8)
    for kind, limbs, unit in (("all_reduce", 8, 8.0), ("all_gather", 64, float(LB)), ("reduce_scatter", 8, 8.0)):
        c = CommOp(0, kind, "ffn", 0, parts, payload=((limbs, 1, 1),))
        assert net.comm_time(c, int(unit))[0] <= ring.comm_time(c, int(unit))[0] + 1e-15


def test_two_nodes_route_over_the_nics_and_gather_hierarchically():
    spec = load_spec("2x4-h100-ib")
    net = Network(spec, 8)
    assert [e[1] for e in net.path(0, 1)] == ["node0", 1] and [e[1] for e in net.path(0, 5)] == ["net", 5]
    parts = tuple(range(8))
    big = float(4 * LB)
    alg, _, t = net.choice("all_gather", parts, 64, big)
    assert alg == "hierarchical"                           # one step over the slow NICs instead of a ring crossing them
    flat = Network(spec, 8)
    flat.algorithm = "ring"
    c = CommOp(0, "all_gather", "attention", 0, parts, payload=((64, 4, 1),))
    assert net.comm_time(c, LB)[0] == pytest.approx(t) and t < flat.comm_time(c, LB)[0]
    # the inter-node step moves each device's chunk to its one rail peer: 8 limbs x 4 polys over 50 GB/s x eff
    inter = net.steps("all_gather", parts, -1, 64, big, 0.0, "hierarchical")[0]
    assert sorted((s, d) for s, d, _ in inter) == sorted([(r, r + 4) for r in range(4)] + [(r + 4, r) for r in range(4)])
    # a group inside one node never touches the network
    assert all(e[0] != "net" and e[1] != "net" for e in net.comm_time(
        CommOp(0, "all_gather", "attention", 0, (0, 1, 2, 3), payload=((8, 1, 1),)), LB)[1])


def test_profile_protocol_and_node_fields_are_checked():
    raw = json.loads(open(H100).read())
    raw["topology"]["protocols"]["LL"]["bandwidth_fraction"] = 1.5
    with pytest.raises(ProfileError, match="protocols.LL.bandwidth_fraction"):
        parse_spec(raw, "x")
    raw = json.loads(open(H100).read())
    raw["topology"]["kind"] = "nodes"
    with pytest.raises(ProfileError, match="topology.devices_per_node"):
        parse_spec(raw, "x")
    raw = json.loads(open(H100).read())
    raw["device"]["launch_overhead_s"] = -1e-6
    with pytest.raises(ProfileError, match="launch_overhead_s must be >= 0"):
        parse_spec(raw, "x")
