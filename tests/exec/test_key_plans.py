"""The executor runs plans whose evaluation keys are seed-compressed or sharded by rotation: keys move between
devices exactly as the plan says, and the output still matches the plaintext program."""
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import Plan, build_plan
from exec.runner import Executor, promised_precision



def _plan(strategy: str, devices: int, keys: str, buffer: float = 2.0) -> Plan:
    from aegis.workloads import Workload, get_model
    from exec.model import TINY_APPROX

    wl = Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True, approx=TINY_APPROX)
    return build_plan(wl, strategy, devices, "cpu", bootstrap=BootstrapConfig(mode="client_aided"),
                      options={"keys": keys, "key_buffer": buffer})


@pytest.mark.parametrize("strategy,devices,keys,buffer", [("token", 2, "sharded", 1.0), ("token", 4, "sharded+seeded", 2.0)])
def test_key_plans_run_with_exact_bytes_and_correct_output(strategy, devices, keys, buffer, tmp_path):
    plan = _plan(strategy, devices, keys, buffer)
    fetches = [c for c in plan.comm if "key" in c.args]
    assert (len(fetches) > 0) == keys.startswith("sharded")
    path = tmp_path / "plan.json"
    plan.save(path)
    plan = Plan.load(path, allow_insecure=True)               # the key plan survives the file
    out = Executor(plan).run()
    s = out.result.summary
    assert out.max_abs_error < promised_precision(plan.params)
    assert s["comm_bytes_match"] and s["comm_bytes"]["total"] == sum(c.total_bytes for c in plan.comm)
    if fetches:
        key_bytes = sum(c.total_bytes for c in fetches)
        assert 0 < key_bytes <= s["comm_bytes"]["total"]


def test_sharded_keys_hold_fewer_key_bytes_per_device():
    rep = _plan("token", 2, "replicated")
    sh = _plan("token", 2, "sharded")
    seeded = _plan("token", 2, "seeded")
    assert sum(sh.keys.stored) == pytest.approx(sum(rep.memory.keys) / 2, rel=0.35)
    assert max(sh.keys.stored) < max(rep.memory.keys)
    assert max(seeded.memory.keys) < 0.6 * max(rep.memory.keys)
    assert all(o.work != p.work for o, p in zip(seeded.ops, rep.ops) if o.key_level >= 0)   # expansion is charged


@pytest.mark.parametrize("mesh,devices", [("1x2", 2), ("2x2", 4)])
def test_limb_group_meshes_run_with_exact_bytes_and_correct_output(mesh, devices):
    """aegis on a token x limb-group mesh: ciphertexts split by limbs inside each group, K/V tiles moved
    between groups shard by shard (``shard_send``)."""
    from aegis.workloads import Workload, get_model
    from exec.model import TINY_APPROX

    wl = Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True, approx=TINY_APPROX)
    plan = build_plan(wl, "aegis", devices, "cpu", bootstrap=BootstrapConfig(mode="client_aided"),
                      options={"mesh": mesh})
    assert all(len(a) == int(mesh.split("x")[1]) for a in plan.assign) and set(plan.mode) == {"limb"}
    assert any(c.kind == "shard_send" for c in plan.comm) == (mesh == "2x2")
    out = Executor(plan).run()
    s = out.result.summary
    assert out.max_abs_error < promised_precision(plan.params)
    assert s["comm_bytes_match"] and s["comm_bytes"]["total"] == sum(c.total_bytes for c in plan.comm)
