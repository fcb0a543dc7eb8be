"""MiniLM's softmax with range control: inputs, the proven score bound, the fit, errors against exact.

Short inputs only (tens of tokens); the table at 128 / 512 / 2048 tokens is ``aegis bench softmax``.
"""
import csv
import dataclasses

import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.workloads import Approximations, Workload, get_model
from exec import minilm
from exec.model import TINY_APPROX, layer_norm
from exec.runner import Executor, promised_precision

needs_weights = pytest.mark.skipif(not minilm.available(), reason=str(minilm.missing()))


def test_position_shift_is_a_polynomial_of_the_query_row():
    ap = Approximations(score_shift=((1.0, 2.0),), score_shift_position=(((0.5, -1.0), (0.0,)),))
    rows = np.arange(12)
    u = (rows % 10) / 9                                   # padded rows 10, 11 repeat rows 0, 1
    assert np.allclose(ap.shift(0, 0, rows, 10), 1.0 + 0.5 * u - u ** 2)
    assert np.allclose(ap.shift(0, 1, rows, 10), 2.0)
    assert np.allclose(Approximations(score_shift=((3.0,),)).shift(0, 0, rows, 10), 3.0)
    wl = Workload(get_model("tiny"), 10, approx=ap)
    assert Workload.from_dict(wl.to_dict()) == wl         # nested tuples survive JSON


def test_position_shift_in_the_executor_leaves_softmax_unchanged():
    """A shift that differs per query row (two query blocks, padded rows and channels): each slot of the
    shift plaintext holds its own row's shift, the approximated program on plaintext still equals the
    exact model, and the encrypted run equals the plaintext program."""
    m = get_model("tiny", d_model=48, heads=3, d_ff=96)
    ap = dataclasses.replace(TINY_APPROX, exp_degree=7, exp_interval=(-4.0, 3.0), exp_squarings=2,
                             inverse_interval=(0.3, 60.0), inverse_degree=31, score_shift=((0.5, -0.25, 0.0),),
                             score_shift_position=(((2.0, -1.5), (1.0,), (0.0, 0.0)),))
    wl = Workload(m, 20, params_name="toy-n11-deep", insecure=True, approx=ap)
    plan = build_plan(wl, "single", 1, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))
    ex = Executor(plan)
    assert wl.seq_len % ex.pk.token_block and wl.seq_len > ex.pk.token_block      # two query blocks, padded
    tb, dh = ex.pk.token_block, ex.pk.head_dim
    for qb in (0, 1):                     # slot (head k, channel offset, t) holds query qb * tb + t
        v = ex.kernels.shift_vector(0, 0, qb).reshape(-1, dh, tb)
        for head in range(3):
            assert np.allclose(v[head], -ap.shift(0, head, qb * tb + np.arange(tb), 20))
    plain, exact = ex.run_plaintext(), ex.exact()
    assert np.max(np.abs(plain - exact)) < 2e-3 * np.max(np.abs(exact))
    assert ex.run().max_abs_error < promised_precision(plan.params)          # encrypted (toy preset): the same
    # the same program with the position part dropped differs from it: the shift reached the scores
    const = dataclasses.replace(ap, score_shift_position=())
    ex2 = Executor(build_plan(dataclasses.replace(wl, approx=const), "single", 1, "cpu",
                              bootstrap=BootstrapConfig(mode="client_aided")))
    assert np.max(np.abs(ex2.run_plaintext() - plain)) > 1e-9


@needs_weights
def test_long_input_construction():
    from exec import softmax_fit as sf
    from exec.minilm_fit import sentences

    ids = sf.token_ids(sentences("held-out"), 40, 3)
    assert len(ids) == 40 and ids[0] == 101 and ids[-1] == 102 and 101 not in ids[1:-1]
    assert np.array_equal(sf.token_ids(sentences("held-out"), 40, 3), ids)          # seeded
    assert np.allclose(sf.embed(ids), minilm.load().embed(ids))                      # <= 512: the model's own
    p = sf.position_ids(2048)
    assert p[0] == 0 and p[-1] == 511 and np.all(np.diff(p) > 0)
    assert np.array_equal(sf.position_ids(512), np.arange(512))


@needs_weights
def test_score_bound_holds_for_real_and_adversarial_inputs():
    from exec import softmax_fit as sf
    from exec.minilm_fit import sentences

    bound = sf.score_bounds()
    assert bound.shape == (6, 12) and np.all(bound < 1000)
    mdl = minilm.load()
    norms = [(mdl.emb_ln_g, mdl.emb_ln_b)] + [(lw.ln2_g, lw.ln2_b) for lw in mdl.layers[:-1]]
    x = sf.embed(sf.token_ids(sentences("fit"), 24, 0))
    rng = np.random.default_rng(0)
    for li in range(6):
        # any LayerNorm output is a valid input: random ones, scaled wildly before the norm
        xr = layer_norm(rng.standard_normal((24, 384)) * rng.uniform(0.1, 100, (24, 1)), *norms[li], mdl.eps)
        for inp in (x, xr):
            q, k, _ = sf._qkv(inp, li)
            for h in range(12):
                assert np.abs(sf._scores(q, k, h)).max() <= bound[li, h]
        x = sf.layer_forward(x, li, sf.exact_softmax)


@needs_weights
def test_fitted_softmax_against_exact_on_held_out_sentences():
    from exec import softmax_fit as sf
    from exec.minilm_fit import sentences

    ap, meas = sf.fit(32, seeds=(0, 1, 2))
    assert meas.shifted_max <= -sf.SHIFT_MARGIN + 1e-9                 # the envelope covers the fit rows
    assert ap.exp_interval[0] <= -np.max(meas.bound)                   # the proven bound is inside the interval
    r = sf.evaluate(ap, sf.token_ids(sentences("held-out"), 32, 7), "held-out", "position")
    assert r.scores_outside == 0 and r.shifted_max < sf.EXP_HI
    assert r.prob_mean_abs < 1e-3 and r.embedding_cos > 0.99
    # rows whose sum lies in the inverse's interval: probabilities within 2e-3 of exact
    f = sf.ApproxSoftmax(ap)
    x = sf.embed(sf.token_ids(sentences("held-out"), 32, 7))
    q, k, _ = sf._qkv(x, 1)
    for h in range(12):
        s = sf._scores(q, k, h)
        rs = f.exp(s - ap.shift(1, h, np.arange(32), 32)[:, None]).sum(1)
        inside = (rs >= ap.inverse_interval[0]) & (rs <= ap.inverse_interval[1])
        assert np.abs(f(s, 1, h) - sf._softmax(s))[inside].max() < 2e-3


@needs_weights
def test_bench_softmax_writes_the_table(tmp_path, capsys):
    from aegis.cli import main

    out = tmp_path / "t.csv"
    assert main(["bench", "softmax", "--tokens", "24", "--table", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["tokens"], r["shift"]) for r in rows] == [("24", "position"), ("24", "constant")]
    assert float(rows[0]["embedding_cos"]) > 0.99
    assert "| 24 | position |" in (tmp_path / "t.md").read_text()
    assert main(["bench", "softmax", "--tokens", "2", "--table", str(out)]) == 2
