import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.workloads import Workload, get_model
from exec.model import pack_tile, random_weights, reference_forward, unpack_tiles
from exec.runner import ExecutionError, Executor, promised_precision



def test_packing_roundtrip():
    from aegis.packing import Packing

    pk = Packing.for_model(get_model("tiny"), 1024, 64)
    x = np.random.default_rng(0).normal(size=(64, 32))
    tiles = {(i, 0): pack_tile(pk, x, i, 0) for i in range(2)}
    assert np.array_equal(unpack_tiles(pk, tiles, 64, 32), x)
    assert pack_tile(pk, x, 1, 0)[3 * 32 + 5] == x[32 + 5, 3]       # slot c * tb + t


@pytest.mark.parametrize("layers", [1, 2])
def test_plaintext_program_computes_the_transformer(tiny_plan, layers):
    """The lowered program, run on plaintext slots with its polynomial approximations, is the model."""
    ex = Executor(tiny_plan("single", 1, layers))
    approx, exact = ex.run_plaintext(), ex.exact()
    assert np.max(np.abs(approx - exact)) < 1e-4 * np.max(np.abs(exact))


@pytest.mark.parametrize("strategy,devices", [("single", 1), ("token", 2)])
def test_encrypted_run_matches_plaintext_and_plan(tiny_plan, strategy, devices):
    plan = tiny_plan(strategy, devices)
    out = Executor(plan).run()
    s = out.result.summary
    assert out.max_abs_error < promised_precision(plan.params)
    assert out.cosine_vs_exact > 0.99999
    assert s["comm_bytes_match"] and s["comm_bytes"]["total"] == sum(c.total_bytes for c in plan.comm)
    assert (s["comm_bytes"]["total"] > 0) == (devices > 1)
    assert s["client_roundtrip_bytes"] > 0                       # refreshes went to the key owner, explicitly
    assert len(out.result.ops) == sum(len(o) for o in plan.orders)
    assert all(p > 0 for p in s["peak_memory_bytes"])


def test_refuses_what_it_cannot_run(tiny_plan, tiny_wl, tmp_path):
    tiny_workload = tiny_wl
    with pytest.raises(ExecutionError, match="limb-split and row-split"):
        Executor(tiny_plan("limb", 2))
    wl = tiny_workload()
    with pytest.raises(ExecutionError, match="bootstrap"):
        Executor(build_plan(Workload(get_model("tiny"), 64), "single", 1, "cpu"))
    with pytest.raises(ExecutionError, match="multiple of the token block"):
        Executor(build_plan(tiny_workload(seq=48), "single", 1, "cpu", bootstrap=BootstrapConfig(mode="client_aided")))
    hw = tmp_path / "small.json"
    hw.write_text('{"name": "small", "device": {"memory_bytes": 1000}}')
    with pytest.raises(ExecutionError, match="does not fit"):
        Executor(build_plan(wl, "single", 1, str(hw), bootstrap=BootstrapConfig(mode="client_aided")))


def test_reference_is_a_transformer():
    m = get_model("tiny")
    w = random_weights(m, 0)
    x = np.random.default_rng(0).normal(0, 0.5, (8, 32))
    y = reference_forward(m, w, x)
    assert y.shape == x.shape and np.allclose(y.mean(1), w[0].ln2_b.mean(), atol=0.3)
