"""The server side of a run (device workers, evaluators, limb evaluators, the channel to the key owner,
the communicator) holds no reference path to the secret key, the Client or its KeyGenerator."""
import gc
import sys
import types

import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.workloads import Workload, get_model
from exec.model import TINY_APPROX
from exec.runner import ClientService, Executor, ServerSide, _RefreshingClient
from fhe import CKKSContext, Client
from fhe.rlwe.keys import KeyGenerator, SecretKey

FORBIDDEN = (SecretKey, Client, KeyGenerator, _RefreshingClient, ClientService)


def reachable_forbidden(roots: list, limit: int = 500_000) -> tuple[list[str], int]:
    """Walk everything reachable from ``roots`` (bounded by ``limit`` objects); return the paths to
    FORBIDDEN instances and the number of objects visited.

    Functions are followed through their closure cells, defaults, ``__dict__`` and bound ``__self__``
    (not ``__globals__``: module namespaces are shared code, and they are skipped like classes and
    modules; module-level state holding a key would have to be found by reading the modules).
    Everything else is followed with :func:`gc.get_referents` (what the object holds) plus ``vars()``.
    """
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if m is not None and hasattr(m, "__dict__")}
    seen: set[int] = set()
    found: list[str] = []
    stack = [(r, type(r).__name__) for r in roots]
    while stack and len(seen) < limit:
        obj, path = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, FORBIDDEN):
            found.append(f"{path} -> {type(obj).__name__}")
            continue
        if isinstance(obj, (type, types.ModuleType, str, bytes, int, float, complex, bool, types.CodeType,
                            types.BuiltinFunctionType)) or obj is None or id(obj) in module_dicts:
            continue
        if isinstance(obj, np.ndarray) and obj.base is None:
            continue
        if isinstance(obj, types.FunctionType):
            nxt = [c.cell_contents for c in (obj.__closure__ or ()) if _filled(c)]
            nxt += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values()) + [obj.__dict__]
            names = list(obj.__code__.co_freevars) + ["<default>"] * (len(nxt) - len(obj.__code__.co_freevars))
            stack += [(o, f"{path}.{n}") for o, n in zip(nxt, names)]
            continue
        if isinstance(obj, types.MethodType):
            stack += [(obj.__self__, f"{path}.__self__"), (obj.__func__, f"{path}.__func__")]
            continue
        refs = gc.get_referents(obj)
        if hasattr(obj, "__dict__"):
            refs += list(vars(obj).values())
        stack += [(o, f"{path}/{type(o).__name__}") for o in refs]
    assert not stack, f"the walk stopped at {limit} objects; raise the limit"
    return found, len(seen)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
        return True
    except ValueError:
        return False


def _tiny(params: str, mode: str, seq: int) -> Workload:
    """One tiny layer on a toy preset (``mode`` is the plan's bootstrapping, set by the caller)."""
    return Workload(get_model("tiny", layers=1), seq, params_name=params, insecure=True, approx=TINY_APPROX)


def test_the_walk_finds_the_secret_from_the_client():
    """Positive control: from the key owner the walk does reach the secret key."""
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    found, _ = reachable_forbidden([_RefreshingClient(Client(ctx)).evaluation_keys, Client(ctx).keygen])
    assert any("SecretKey" in f or "KeyGenerator" in f for f in found)
    found, _ = reachable_forbidden([[{"x": Client(ctx)}]])
    assert found


@pytest.mark.parametrize("strategy, devices, params, mode, seq", [
    ("token", 2, "toy-n11-deep", "client_aided", 32),       # client-aided refreshes through the channel
    ("limb", 2, "toy-n11-deep", "client_aided", 16),        # limb evaluators and limb groups
    ("single", 1, "toy-n10-boot", "ckks", 16),              # server-side bootstrapping (encapsulation keys)
])
def test_workers_and_evaluators_reach_no_secret(strategy, devices, params, mode, seq):
    plan = build_plan(_tiny(params, mode, seq), strategy, devices, "cpu", bootstrap=BootstrapConfig(mode=mode))
    seen: dict = {}

    def inspect(server: ServerSide) -> None:
        seen["server"] = reachable_forbidden(server.roots)
        seen["limb"] = len(server.limb_evaluators)

    ex = Executor(plan)
    out = ex.run(on_server=inspect)
    found, visited = seen["server"]
    assert found == [], found
    assert visited > 100                         # the walk did go through the workers' closures
    if strategy == "limb":
        assert seen["limb"] > 0
    if mode == "client_aided":                   # refreshes went through the channel to the key owner
        assert any(o.kind == "refresh_client" for o in plan.ops) and out.result.summary["client_roundtrip_bytes"] > 0
    if mode == "ckks":                           # the bootstrappers the workers built hold keys only
        assert ex._boots and reachable_forbidden([ex])[0] == []
        assert all(b.ev.keys.encapsulation.hamming_weight == 32 for b in ex._boots.values())
    assert out.max_abs_error < 2 ** -8           # and the run still works through the channel
