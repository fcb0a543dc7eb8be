"""The planner's bootstrap nodes count exactly the key switches and rescales the fhe bootstrapper runs."""
from collections import Counter

import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig, BootstrapModel
from fhe.circuits.bootstrapping import Bootstrapper
from fhe.ckks.context import CKKSContext
from fhe.ckks.encryptor import Client
from fhe.ckks.evaluator import Evaluator

KEY_SWITCH = ("rot", "relin", "hrot", "giant")


class CountingBoot(Evaluator):
    """An Evaluator that records each key switch and each prime dropped by a rescale, by level."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.ks: Counter = Counter()
        self.rescales: Counter = Counter()

    def relinearize(self, ct):
        if len(ct.parts) == 3:
            self.ks[ct.level] += 1
        return super().relinearize(ct)

    def _apply_galois(self, ct, g, what):
        self.ks[ct.level] += 1
        return super()._apply_galois(ct, g, what)

    def rotate_hoisted(self, ct, steps):
        self.ks[ct.level] += len({s for s in steps if s % self.params.slots})
        return super().rotate_hoisted(ct, steps)

    def rescale(self, ct):
        for i in range(self.params.rescale_width(ct.level)):
            self.rescales[ct.level - i] += 1
        return super().rescale(ct)


@pytest.mark.parametrize("name,levels", [("toy-n10-boot", 9), ("toy-n10-boot-13", 13)])
def test_model_counts_what_the_bootstrapper_runs(name, levels):
    ctx = CKKSContext.from_preset(name, allow_insecure=True)
    cfg = BootstrapConfig()
    bp = cfg.circuit()
    client = Client(ctx)
    ev = CountingBoot(ctx, client.keygen.evaluation_keys(**bp.key_request(ctx.params)))
    bs = Bootstrapper(ev, bp, precompute=False)
    z = np.random.default_rng(0).uniform(-1, 1, ctx.params.slots)
    out = bs.bootstrap(client.encrypt(z, level=0))
    assert np.max(np.abs(client.decrypt(out) - z)) < 2 ** -18
    ev.ks[0] += 1                          # ModRaise's two encapsulation key switches (outside the Evaluator)
    ev.ks[ctx.params.max_level] += 1

    model = BootstrapModel(ctx.params, cfg)
    want_ks, want_rs = Counter(), Counter()
    for _, work, _, _, _ in model.parts:
        for prim, lvl, n in work:
            if prim in KEY_SWITCH:
                want_ks[lvl] += n
            elif prim == "rescale":
                want_rs[lvl] += n
    assert +ev.ks == +want_ks, (set(ev.ks.items()) ^ set(want_ks.items()))
    assert +ev.rescales == +want_rs
    assert model.output_level == out.level == levels
    assert model.depth == ctx.params.max_level - levels
    assert {r for *_, rots in model.parts for r in rots if r} == set(bp.rotations(ctx.params))
