"""Validation of a plan read from a file, before anything runs on it.

A plan file is input, not authority: it cannot grant insecure parameters (the caller's
``allow_insecure``, i.e. ``--insecure`` on the command line, does), its device count must agree
with its per-device op orders, its capacity with the hardware profile it names, and its
bootstrapping's sparse-secret weight with the floor of :func:`fhe.params.check_sparse_secret`.
Every refusal is one line naming the field, what was expected and what was found.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhe.params import SecurityError, check_sparse_secret

if TYPE_CHECKING:
    from .plan import Plan


class PlanValidationError(ValueError):
    """A plan file that is malformed or disagrees with itself or with its hardware profile."""


#: top-level fields of a plan file and their JSON types
PLAN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "workload": dict, "bootstrap": dict, "strategy": str, "devices": int, "hardware": str,
    "capacity_bytes": int, "packing": dict, "outputs": list, "ops": list, "comm": list, "orders": list,
    "memory": dict, "notes": list,
}
MEMORY_FIELDS = ("keys", "weights", "live_peak", "peak", "key_count")
OP_FIELDS = ("id", "kind", "devices", "mode", "reads", "work")

_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _kind(x: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a boolean",
            float: "a number"}.get(type(x), type(x).__name__)


def check_plan_dict(d: dict[str, Any], source: str = "plan") -> None:
    """The shape of a plan file's JSON: every field present with its type (raises PlanValidationError)."""
    for name, typ in PLAN_FIELDS.items():
        if name not in d:
            raise PlanValidationError(f"{source}: field '{name}' is missing; not a complete aegis plan")
        v = d[name]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise PlanValidationError(f"{source}: field '{name}' must be {_JSON_NAMES[typ]}, found {_kind(v)}")
    for name in MEMORY_FIELDS:
        if not isinstance(d["memory"].get(name), list):
            raise PlanValidationError(f"{source}: field 'memory.{name}' must be a list (one entry per device), "
                                      f"found {_kind(d['memory'].get(name))}")
    for i, od in enumerate(d["ops"]):
        if not isinstance(od, dict):
            raise PlanValidationError(f"{source}: field 'ops[{i}]' must be an object, found {_kind(od)}")
        missing = [f for f in OP_FIELDS if f not in od]
        if missing:
            raise PlanValidationError(f"{source}: field 'ops[{i}].{missing[0]}' is missing")
        if od["id"] != i:
            raise PlanValidationError(f"{source}: field 'ops[{i}].id' must be {i} (ops are listed by id), "
                                      f"found {od['id']!r}")
    if not all(isinstance(o, list) and all(isinstance(i, int) for i in o) for o in d["orders"]):
        raise PlanValidationError(f"{source}: field 'orders' must be a list of op-id lists (one per device)")


def check_plan(plan: "Plan", source: str = "plan") -> None:
    """A loaded plan agrees with itself, with its hardware profile and with the security floors.

    Checks: ``devices`` against the per-device ``orders`` and memory lists; every op on exactly the
    devices whose order runs it; ``capacity_bytes`` against the profile named in ``hardware``; the
    parameter set (an insecure one only if the workload was allowed it by the caller); the
    bootstrapping sparse-secret weight when the plan bootstraps on the server.

    Raises:
        PlanValidationError: a field disagrees (the message names it, expected and found value).
        fhe.params.SecurityError: insecure parameters not allowed by the caller, or too small a weight.
    """
    from .hardware import load_hardware

    G = plan.devices
    for opt, valid in (("overlap", ("on", "off")), ("schedule", ("program", "priority"))):
        v = plan.options.get(opt)
        if v is not None and v not in valid:
            raise PlanValidationError(f"{source}: field 'options.{opt}' must be one of {', '.join(valid)}, found {v!r}")
    if G < 1:
        raise PlanValidationError(f"{source}: field 'devices' must be at least 1, found {G}")
    if len(plan.orders) != G:
        raise PlanValidationError(f"{source}: field 'devices' is {G} but 'orders' holds {len(plan.orders)} "
                                  "per-device op orders; expected one per device")
    for name in MEMORY_FIELDS:
        n = len(getattr(plan.memory, name))
        if n != G:
            raise PlanValidationError(f"{source}: field 'memory.{name}' has {n} entries, expected {G} (one per device)")
    n_ops = len(plan.ops)
    for d, order in enumerate(plan.orders):
        bad = [i for i in order if not 0 <= i < n_ops]
        if bad:
            raise PlanValidationError(f"{source}: field 'orders[{d}]' names op {bad[0]}; expected ids 0..{n_ops - 1}")
        if len(set(order)) != len(order):
            raise PlanValidationError(f"{source}: field 'orders[{d}]' lists an op twice; expected each op once")
    runs = [set(o) for o in plan.orders]
    for i, devs in enumerate(plan.assign):
        where = {d for d in range(G) if i in runs[d]}
        if set(devs) != where or any(not 0 <= d < G for d in devs):
            raise PlanValidationError(f"{source}: field 'ops[{i}].devices' is {list(devs)} but the op is in the "
                                      f"orders of devices {sorted(where)}; expected the same devices")
    try:
        hw = load_hardware(plan.hardware)
    except ValueError as exc:
        raise PlanValidationError(f"{source}: field 'hardware' names a profile that cannot be loaded ({exc})") from None
    if hw.memory_bytes != plan.capacity_bytes:
        raise PlanValidationError(f"{source}: field 'capacity_bytes' is {plan.capacity_bytes} but hardware profile "
                                  f"'{plan.hardware}' has {hw.memory_bytes} bytes per device; expected "
                                  f"{hw.memory_bytes} (rebuild the plan with `aegis plan --out`)")
    wl = plan.workload
    try:
        params = wl.params()
    except SecurityError as exc:
        raise SecurityError(f"{source}: uses the insecure preset '{wl.params_name}' (below 128-bit security); "
                            "a plan file cannot grant insecure parameters -- pass --insecure to use it") from exc
    if plan.bootstrap.mode == "ckks" and any(o.kind.startswith("boot_") for o in plan.ops):
        try:
            check_sparse_secret(params, plan.bootstrap.hamming_weight)
        except ValueError as exc:
            raise type(exc)(f"{source}: field 'bootstrap.hamming_weight': {exc}") from None
