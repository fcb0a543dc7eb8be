"""A plan file is validated on load: it cannot grant insecure parameters, and an edited capacity,
device count, op order or sparse-secret weight is refused with one line naming the field."""
import json

import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import Plan, build_plan
from aegis.plan_check import PlanValidationError
from aegis.workloads import Workload, get_model
from fhe.params import SecurityError


@pytest.fixture(scope="module")
def toy_plan_file(tmp_path_factory):
    wl = Workload(get_model("tiny", layers=1), 32, params_name="toy-n11-deep", insecure=True)
    p = build_plan(wl, "token", 2, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))
    f = tmp_path_factory.mktemp("plan") / "toy.json"
    p.save(f)
    return f


def _edited(tmp_path, src, edit) -> str:
    d = json.loads(src.read_text())
    edit(d)
    f = tmp_path / "edited.json"
    f.write_text(json.dumps(d))
    return f


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_plan_file_cannot_grant_insecure_parameters(toy_plan_file):
    assert json.loads(toy_plan_file.read_text())["workload"]["insecure"] is True   # the file says so ...
    with pytest.raises(SecurityError) as exc:                                       # ... and is not believed
        Plan.load(toy_plan_file)
    assert "cannot grant insecure" in _one_line(exc) and "--insecure" in str(exc.value)
    plan = Plan.load(toy_plan_file, allow_insecure=True)                            # the caller's flag does
    assert plan.workload.insecure and plan.params.insecure


def test_edited_capacity_is_refused(tmp_path, toy_plan_file):
    real = json.loads(toy_plan_file.read_text())["capacity_bytes"]
    f = _edited(tmp_path, toy_plan_file, lambda d: d.update(capacity_bytes=10 * real))
    with pytest.raises(PlanValidationError) as exc:
        Plan.load(f, allow_insecure=True)
    msg = _one_line(exc)
    assert "'capacity_bytes'" in msg and str(10 * real) in msg and f"expected {real}" in msg


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(devices=3), "'devices' is 3 but 'orders' holds 2"),
    (lambda d: d.pop("orders"), "'orders' is missing"),
    (lambda d: d.update(devices="2"), "'devices' must be an integer, found a string"),
    (lambda d: d["orders"][1].append(d["orders"][0][0]), "but the op is in the orders of devices [0, 1]"),
    (lambda d: d["orders"][0].append(10 ** 6), "'orders[0]' names op 1000000"),
    (lambda d: d["memory"]["peak"].pop(), "'memory.peak' has 1 entries, expected 2"),
])
def test_inconsistent_plan_files_are_refused(tmp_path, toy_plan_file, edit, field):
    f = _edited(tmp_path, toy_plan_file, edit)
    with pytest.raises(PlanValidationError) as exc:
        Plan.load(f, allow_insecure=True)
    assert field in _one_line(exc)


def test_a_weak_sparse_secret_in_a_secure_plan_is_refused(tmp_path):
    wl = Workload(get_model("tiny", layers=1), 16, params_name="n16-boot")
    p = build_plan(wl, "single", 1, "cpu")
    assert any(o.kind == "boot_cts" for o in p.ops) and p.bootstrap.hamming_weight == 32
    f = tmp_path / "boot.json"
    p.save(f)
    assert Plan.load(f).bootstrap.hamming_weight == 32
    f2 = _edited(tmp_path, f, lambda d: d["bootstrap"].update(hamming_weight=1))
    with pytest.raises(SecurityError) as exc:
        Plan.load(f2)
    assert "'bootstrap.hamming_weight'" in _one_line(exc) and "minimum 32" in str(exc.value)
