import json

import pytest

from aegis.comm import CommOp
from aegis.hardware import HARDWARE_DIR
from sim.network import Network
from sim.profile import ProfileError, load_spec, parse_spec

LB = 512 * 1024
H100 = HARDWARE_DIR / "h100-sxm.json"


def _spec(kind="switch", **topo):
    raw = json.loads(open(H100).read())
    raw["topology"].update({"kind": kind, **topo})
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
    with pytest.raises(ProfileError, match="valid: a100-sxm"):
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
