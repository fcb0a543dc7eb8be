"""Evaluation keys on the executor's devices, as the plan's key plan (:mod:`aegis.keystore`) places them.

Replicated (or no key plan): every device evaluates with the one bundle the key owner made.
Sharded: device d starts with the keys it owns, each cut to the level the plan stores it at
(:func:`fhe.rlwe.keys.key_at_level`); a key fetch (a ``send`` comm op with ``args["key"]``)
copies the rows of the owner's key through the communicator (bytes counted like any transfer)
and the device drops the copy after the last op of the run it serves.  A key that is not on a
device when an op needs it fails the run with the evaluator's "no evaluation key" error, so a
plan whose fetches are wrong cannot pass.  Bootstrapping's encapsulation keys (two small keys
over q_0 p_0) stay on every device.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fhe.params import CKKSParameters
from fhe.rlwe.keys import (EvaluationKeys, SeededSwitchingKey, SwitchingKey, conjugation_element, galois_element,
                           key_at_level)


def _slot(keys: EvaluationKeys, name: str) -> tuple[str, int]:
    if name == "relin":
        return "relin", 0
    step = int(name.split(":", 1)[1])
    p = keys.params
    return "galois", conjugation_element(p) if step % p.slots == 0 else galois_element(p, step) % (2 * p.n)


def get_key(keys: EvaluationKeys, name: str) -> Any:
    """The key named ``name`` (``relin`` or ``rot:<step>``, step 0 = conjugation) in ``keys``."""
    where, g = _slot(keys, name)
    key = keys.relin if where == "relin" else keys.galois.get(g)
    if key is None:
        raise KeyError(f"no evaluation key {name} on this device")
    return key


def device_keys(keys: EvaluationKeys, kplan: Any, devices: int) -> list[EvaluationKeys]:
    """Per device, the bundle it starts with (the same object on every device unless keys are sharded)."""
    if kplan is None or kplan.policy.where != "sharded":
        return [keys] * devices
    out = [EvaluationKeys(params=keys.params, encapsulation=keys.encapsulation) for _ in range(devices)]
    for name, d in kplan.owner.items():
        put_key(out[d], name, None, keys.params, kplan.level[name], key_at_level(get_key(keys, name), keys.params,
                                                                                   kplan.level[name]))
    for name in kplan.local:                   # kept on every device (scope "app": bootstrapping's keys)
        for d in range(devices):
            put_key(out[d], name, None, keys.params, kplan.level[name], get_key(keys, name))
    return out


def key_arrays(key: Any, params: CKKSParameters, level: int) -> list[Any]:
    """The arrays that carry ``key`` cut to ``level`` (seeds as 32-byte arrays): what a fetch moves."""
    k = key_at_level(key, params, level)
    if isinstance(k, SeededSwitchingKey):
        return list(k.bq) + list(k.bp) + [np.frombuffer(s, dtype=np.uint8) for s in k.seeds]
    return list(k.bq) + list(k.bp) + list(k.aq) + list(k.ap)


def put_key(keys: EvaluationKeys, name: str, arrays: list[Any] | None, params: CKKSParameters, level: int,
            template: Any) -> None:
    """Store key ``name`` in ``keys``: rebuilt from received ``arrays`` shaped like ``template`` (a key; or a bool,
    whether the arrays are a seed-compressed key's), or ``template`` itself when ``arrays`` is None."""
    key = template
    if arrays is not None:
        dn = len(params.digits(level))
        t = key_at_level(template, params, level) if not isinstance(template, bool) else None
        if t is None and template:             # no template: a seeded key over the level's primes
            key = SeededSwitchingKey(arrays[:dn], arrays[dn:2 * dn],
                                     [bytes(np.asarray(a).tobytes()) for a in arrays[2 * dn:3 * dn]],
                                     tuple(params.primes[i] for i in params.q_indices(level)),
                                     tuple(params.primes[i] for i in params.p_indices))
        elif t is None:
            key = SwitchingKey(arrays[:dn], arrays[dn:2 * dn], arrays[2 * dn:3 * dn], arrays[3 * dn:4 * dn])
        elif isinstance(t, SeededSwitchingKey):
            key = SeededSwitchingKey(arrays[:dn], arrays[dn:2 * dn],
                                     [bytes(np.asarray(a).tobytes()) for a in arrays[2 * dn:3 * dn]],
                                     t.q_primes, t.p_primes, t.backend)
        else:
            key = SwitchingKey(arrays[:dn], arrays[dn:2 * dn], arrays[2 * dn:3 * dn], arrays[3 * dn:4 * dn])
    where, g = _slot(keys, name)
    if where == "relin":
        keys.relin = key
    else:
        keys.galois[g] = key


def drop_key(keys: EvaluationKeys, name: str, params: CKKSParameters) -> None:
    """Remove the copy of ``name`` from a device's bundle."""
    where, g = _slot(keys, name)
    if where == "relin":
        keys.relin = None
    else:
        keys.galois.pop(g, None)


def without_backend(keys: EvaluationKeys) -> EvaluationKeys:
    """``keys`` with seed-compressed keys' backend handles dropped (NumPy), so the bundle can cross processes."""
    from dataclasses import replace

    def strip(k: Any) -> Any:
        return replace(k, backend=None) if isinstance(k, SeededSwitchingKey) else k

    return EvaluationKeys(params=keys.params, relin=strip(keys.relin) if keys.relin else None,
                          galois={g: strip(k) for g, k in keys.galois.items()}, encapsulation=keys.encapsulation)
