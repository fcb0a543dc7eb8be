"""The calibrated limb-split table (kernel_table.limb): round trip, and exactly how the simulator uses it."""
import json

import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.hardware import HARDWARE_DIR
from aegis.plan import build_plan
from aegis.workloads import Workload, get_model
from sim.compute import KernelModel
from sim.engine import simulate
from sim.profile import load_spec, parse_spec

PRIMS = ("add", "pmul", "tensor", "relin", "rot", "hoist", "hrot", "giant", "gout", "rescale", "encode")


def _raw(limb: bool, slowdown: dict | None = None) -> dict:
    raw = json.loads((HARDWARE_DIR / "cpu.json").read_text())
    raw["name"] = "cal"
    raw["kernel_table"] = {"log_n": 11, "prims": {p: {"fixed_s": 1e-4, "per_limb_s": 1e-5} for p in PRIMS},
                           "provenance": {"machine": "test"}}
    if limb:
        raw["kernel_table"]["limb"] = {"2": {"prims": {p: {"fixed_s": 3e-4, "per_limb_s": 2e-5} for p in PRIMS}}}
    if slowdown:
        raw["device"]["concurrency_slowdown"] = slowdown
    return raw


def _limb_plan(devices: int = 2):
    wl = Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True)
    return build_plan(wl, "limb", devices, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))


def test_profile_round_trips_the_limb_table(tmp_path):
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(_raw(True)))
    spec = load_spec(str(f))
    assert spec.kernel_table["limb"]["2"]["prims"]["rot"] == {"fixed_s": 3e-4, "per_limb_s": 2e-5}


def test_a_bad_limb_table_names_the_field():
    from sim.profile import ProfileError

    raw = _raw(True)
    raw["kernel_table"]["limb"]["1"] = {"prims": {}}
    with pytest.raises(ProfileError, match="kernel_table.limb.1"):
        parse_spec(raw, "cal")


def test_limb_split_work_takes_the_measured_group_time():
    plan = _limb_plan()
    km = KernelModel(parse_spec(_raw(True), "cal"), plan.params)
    work = (("rot", 9, 3), ("add", 2, 5))
    want = 3 * (3e-4 + 10 * 2e-5) + 5 * (3e-4 + 3 * 2e-5)
    assert km.limb_measured(2) and not km.limb_measured(4) and not km.limb_measured(1)
    assert km.work_time(work, 2, 0) == pytest.approx(want, rel=1e-12)
    assert km.work_time(work, 2, 1) == pytest.approx(want, rel=1e-12)     # a group time: every position
    # without the table, the limb share of the single-device time
    share = KernelModel(parse_spec(_raw(False), "cal"), plan.params)
    assert share.work_time(work, 2, 0) < share.work_time(work)
    assert km.work_time(work) == share.work_time(work)                   # whole ops do not change


def test_engine_adds_neither_exchanges_nor_own_concurrency_to_a_measured_limb_op():
    plan = _limb_plan()
    slow = {"1": 1.0, "2": 1.5, "4": 3.0}
    spec = parse_spec(_raw(True, slow), "cal")
    km = KernelModel(spec, plan.params)
    r = simulate(plan, spec)
    assert r.summary["latency_s"] == pytest.approx(sum(km.work_time(o.work, 2, 0) for o in plan.ops), rel=1e-9)
    # the same plan without the table: share x measured slowdown of 2 busy devices, plus the exchanges
    spec0 = parse_spec(_raw(False, slow), "cal")
    km0 = KernelModel(spec0, plan.params)
    r0 = simulate(plan, spec0)
    compute0 = sum(km0.work_time(o.work, 2, 0) for o in plan.ops) * 1.5
    assert r0.summary["latency_s"] > compute0 * (1 + 1e-9)              # the internal exchanges cost time there


def test_table_seconds_reads_samples_exactly_and_the_fit_outside_them():
    from sim.compute import table_seconds

    fit = {"fixed_s": 1.0, "per_limb_s": 0.5}
    samples = [[2, 3.0], [3, 4.0], [5, 10.0]]          # a step, as key switching takes at a new digit
    assert table_seconds(fit, samples, 3) == 4.0
    assert table_seconds(fit, samples, 4) == pytest.approx(7.0)       # between measured counts: linear
    assert table_seconds(fit, samples, 9) == pytest.approx(1.0 + 0.5 * 9)
    assert table_seconds(fit, None, 3) == pytest.approx(2.5)


def test_kernel_model_uses_the_measured_samples():
    plan = _limb_plan()
    raw = _raw(True)
    raw["kernel_table"]["samples"] = {"rot": [[9, 0.25], [10, 0.5], [11, 0.75]]}
    raw["kernel_table"]["limb"]["2"]["samples"] = {"rot": [[10, 0.125]]}
    km = KernelModel(parse_spec(raw, "cal"), plan.params)
    assert km.prim_time("rot", 9) == 0.5
    assert km.work_time((("rot", 9, 2),), 2, 0) == 0.25
    assert km.work_time((("rot", 3, 1),), 2, 0) == pytest.approx(3e-4 + 4 * 2e-5)


def test_executor_factor_scales_every_table_time():
    plan = _limb_plan()
    base = KernelModel(parse_spec(_raw(True), "cal"), plan.params)
    raw = _raw(True)
    raw["kernel_table"]["executor_factor"] = 1.25
    scaled = KernelModel(parse_spec(raw, "cal"), plan.params)
    work = (("rot", 9, 3), ("add", 2, 5))
    assert scaled.work_time(work) == pytest.approx(1.25 * base.work_time(work), rel=1e-12)
    assert scaled.work_time(work, 2, 0) == pytest.approx(1.25 * base.work_time(work, 2, 0), rel=1e-12)


def test_in_situ_calibration_measures_the_executor(monkeypatch):
    """The in-situ factors are the executor's measured op times over the table's predictions: with the
    executor's op timings replaced by exactly twice the table's time (per device, as the simulator
    predicts limb-split ops), every factor is exactly 2 -- and the two-device run, predicted with those
    factors, exactly 1.  No timing thresholds: the real runs execute, only their clock is fixed."""
    from exec import runner
    from analysis.calibrate import CLIENT_KINDS, time_in_situ

    raw = _raw(True)                      # a limb table for groups of 2 only: no limb run on 4
    spec = parse_spec(raw, "cal")
    real_run = runner.Executor.run
    ran = []

    def twice_the_table(self, *a, **kw):
        out = real_run(self, *a, **kw)
        plan = self.plan
        km = KernelModel(spec, plan.params, plan.devices if plan.strategy == "limb" else 1)
        timed = []
        for op_id, kind, phase, layer, dev, start, _end, bm in out.result.ops:
            devs, work = plan.assign[op_id], plan.ops[op_id].work
            t = km.work_time(work, len(devs), devs.index(dev), kind=kind) \
                if plan.mode[op_id] == "limb" and len(devs) > 1 else km.work_time(work, kind=kind)
            timed.append((op_id, kind, phase, layer, dev, start, start + 2 * t, bm))
        out.result.ops[:] = timed
        ran.append((plan.strategy, plan.devices, sum(1 for o in plan.ops if o.kind not in CLIENT_KINDS)))
        return out

    monkeypatch.setattr(runner.Executor, "run", twice_the_table)
    situ = time_in_situ(raw, "toy-n11-deep", True, seq=16, rounds=1, limb_groups=[2, 4])
    # warm-up + one round of single, one round of limb on 2 (no table for 4), one round of aegis on 2
    assert [r[:2] for r in ran] == [("single", 1), ("single", 1), ("limb", 2), ("aegis", 2)]
    assert situ["ops"] == ran[0][2] and "16 tokens" in situ["workload"] and "limb on 2" in situ["workload"]
    assert situ["factor"] == pytest.approx(2.0, rel=1e-9)
    assert {"attn_qk", "lin_out", "gelu"} <= set(situ["by_kind"]) and not set(situ["by_kind"]) & set(CLIENT_KINDS)
    assert all(f == pytest.approx(2.0, rel=1e-9) for f in situ["by_kind"].values())
    assert situ["limb"] == {"2": pytest.approx(2.0, rel=1e-9)}
    assert situ["concurrency"] == {"2": pytest.approx(1.0, rel=1e-9)}


def test_in_situ_factors_per_kind_and_per_limb_group():
    plan = _limb_plan()
    raw = _raw(True)
    base = KernelModel(parse_spec(raw, "cal"), plan.params)
    raw["kernel_table"] |= {"executor_factor": 1.25, "executor_factor_by_kind": {"attn_qk": 0.8},
                            "executor_factor_limb": {"2": 1.5}}
    km = KernelModel(parse_spec(raw, "cal"), plan.params)
    work = (("rot", 9, 3), ("add", 2, 5))
    assert km.situ() == 1.25 and km.situ("attn_qk") == 0.8 and km.situ("gelu") == 1.25
    assert km.work_time(work, kind="attn_qk") == pytest.approx(0.8 * base.work_time(work), rel=1e-12)
    assert km.work_time(work, kind="gelu") == pytest.approx(1.25 * base.work_time(work), rel=1e-12)
    # limb-split times of a group with its own in-situ factor take that factor, whatever the kind
    assert km.work_time(work, 2, 0, kind="attn_qk") == pytest.approx(1.5 * base.work_time(work, 2, 0), rel=1e-12)
    # the engine passes each op's kind: a one-device plan's simulated busy time follows the kind factors
    single = build_plan(Workload(get_model("tiny", layers=1), 64, params_name="toy-n11-deep", insecure=True),
                        "single", 1, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))
    r0 = simulate(single, parse_spec(_raw(True), "cal"))
    r1 = simulate(single, parse_spec(raw, "cal"))
    qk = [i for i, o in enumerate(single.ops) if o.kind == "attn_qk"]
    assert qk
    d0 = {row[0]: row[6] - row[5] for row in r0.ops}
    d1 = {row[0]: row[6] - row[5] for row in r1.ops}
    for i in qk:
        assert d1[i] == pytest.approx(0.8 * d0[i], rel=1e-9)


@pytest.mark.parametrize("field,value", [("executor_factor", 0), ("executor_factor_by_kind", {"gelu": -1.0}),
                                         ("executor_factor_limb", {"2": "fast"})])
def test_a_bad_in_situ_factor_is_refused(field, value):
    from sim.profile import ProfileError

    raw = _raw(True)
    raw["kernel_table"][field] = value
    with pytest.raises(ProfileError, match=f"kernel_table.{field}"):
        parse_spec(raw, "cal")
