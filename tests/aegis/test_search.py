"""The aegis search: it returns the optimum of the candidates under its own rule, pruning loses nothing,
it never returns a plan over capacity when one fits, and its estimate follows the simulator."""
import json

import pytest

from aegis.placement.aegis import SEARCH_SLACK, meshes, parse_mesh
from aegis.plan import SEARCH_SLACK as PLAN_SLACK
from aegis.plan import build_plan
from aegis.workloads import Workload, get_model


def _winner(rows):
    fit = [r for r in rows if r.get("fits")]
    fastest = min(r["time_s"] for r in fit)
    return min((r for r in fit if r["time_s"] <= fastest * (1 + SEARCH_SLACK)),
               key=lambda r: (r["peak_bytes"], r["time_s"], r["comm_bytes"]))


def test_meshes_and_mesh_option():
    assert meshes(4) == [(4, 1), (2, 2), (1, 4)]
    assert meshes(6) == [(6, 1), (3, 2), (2, 3), (1, 6)]
    assert parse_mesh("2x2", 4) == (2, 2)
    with pytest.raises(ValueError, match="T x L = 4"):
        parse_mesh("2x3", 4)
    with pytest.raises(ValueError, match="TxL"):
        parse_mesh("two", 4)
    assert SEARCH_SLACK == PLAN_SLACK


def test_search_picks_the_optimum_of_every_candidate(bert_small):
    """Every mesh forced one at a time (nothing pruned) gives the candidates the search chooses among: its
    winner is the best of all of them under the rule, so pruning by lower bounds dropped nothing better."""
    wl, prog = bert_small
    searched = build_plan(wl, "aegis", 4, "h100-sxm", program=prog)
    rows = []
    for t, lg in meshes(4):
        p = build_plan(wl, "aegis", 4, "h100-sxm", program=prog, options={"mesh": f"{t}x{lg}"})
        rows += [r for r in p.search if r.get("peak_bytes") is not None]
    best = _winner(rows)
    chosen = next(r for r in searched.search if r["verdict"].startswith("chosen"))
    assert (chosen["mesh"], chosen["keys"]) == (best["mesh"], best["keys"])
    assert max(searched.memory.peak) == chosen["peak_bytes"]
    assert any(r["verdict"].startswith("pruned") for r in searched.search)     # the limb meshes' bounds lose


def test_search_shards_keys_when_replicated_keys_do_not_fit(bert_small, tmp_path):
    """A hand-made device with too little memory for replicated keys but enough for sharded ones."""
    wl, prog = bert_small
    roomy = build_plan(wl, "aegis", 4, "h100-sxm", program=prog, options={"mesh": "4x1", "keys": "replicated"})
    lean = build_plan(wl, "aegis", 4, "h100-sxm", program=prog, options={"mesh": "4x1", "keys": "sharded+seeded",
                                                                         "key_buffer": 1.0})
    assert max(lean.memory.peak) < max(roomy.memory.peak)
    cap = (max(lean.memory.peak) + max(roomy.memory.peak)) // 2
    hw = json.loads(open("data/hardware/h100-sxm.json").read())
    hw["name"], hw["device"]["memory_bytes"] = "tight", cap
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(hw))
    p = build_plan(wl, "aegis", 4, str(path), program=prog)
    assert p.fits and max(p.memory.peak) <= p.capacity_bytes
    assert p.keys is not None and (p.keys.policy.where == "sharded" or p.keys.policy.seeded)
    for strategy in ("token", "single"):       # the baselines with replicated keys do not fit there
        assert not build_plan(wl, strategy, 4 if strategy == "token" else 1, str(path), program=prog).fits


def test_estimate_follows_the_simulator(bert_small):
    """The search's estimate against the simulator on the plans it builds (token-parallel and limb-group
    meshes, replicated and sharded keys)."""
    from sim.engine import simulate
    from sim.profile import load_spec

    wl, prog = bert_small
    spec = load_spec("h100-sxm")
    for mesh, keys in (("4x1", "replicated"), ("4x1", "sharded"), ("2x2", "replicated")):
        p = build_plan(wl, "aegis", 4, "h100-sxm", program=prog, options={"mesh": mesh, "keys": keys})
        est = next(r for r in p.search if r.get("peak_bytes") is not None)["time_s"]
        sim = simulate(p, spec).summary["latency_s"]
        assert abs(est / sim - 1) < 0.05, (mesh, keys, est, sim)
