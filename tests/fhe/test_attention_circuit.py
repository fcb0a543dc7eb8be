"""Head-major diagonal attention products (fhe.circuits.attention): NumPy, counts, real CKKS."""
import numpy as np
import pytest

from exec.plain import CountingEvaluator, PlainEvaluator
from fhe import Client, Evaluator
from fhe.circuits.attention import (HeadMajor, attention_counts, diagonal_context, diagonal_scores,
                                    rotation_steps)


def _diagonals(scores: np.ndarray) -> np.ndarray:
    """(heads, t, s) score matrix -> (heads, t, r): diagonal r holds (t, (t + r) mod T)."""
    t = scores.shape[1]
    idx = (np.arange(t)[:, None] + np.arange(t)[None, :]) % t
    return np.take_along_axis(scores, np.broadcast_to(idx, scores.shape), axis=2)


def _run(ev, lay, q, k, v, p, baby, level):
    qc = [ev.encrypt(x, level) for x in lay.pack(q)]
    kc = [ev.encrypt(x, level) for x in lay.pack(k)]
    vc = [ev.encrypt(x, level) for x in lay.pack(v)]
    pc = [ev.encrypt(x, level) for x in lay.pack(p)]      # p: (heads, tokens, r) -> one ct per diagonal r
    s = diagonal_scores(ev, qc, kc, lay, baby)
    c = diagonal_context(ev, pc, vc, lay, baby)
    return s, c


@pytest.mark.parametrize("slots,heads,tokens,dh,baby", [(256, 3, 20, 4, None), (256, 4, 64, 8, 4),
                                                        (512, 2, 7, 3, 8), (1024, 12, 64, 5, 16)])
def test_products_equal_numpy_and_counts_equal_the_formula(slots, heads, tokens, dh, baby):
    rng = np.random.default_rng(tokens)
    lay = HeadMajor(slots, heads, tokens)
    q, k, v = (rng.normal(size=(heads, tokens, dh)) for _ in range(3))
    p = rng.normal(size=(heads, tokens, tokens))
    ev = CountingEvaluator(slots)
    s, c = _run(ev, lay, q, k, v, p, baby, 10)
    got = np.stack([lay.unpack(ev.decrypt(x)) for x in s], axis=-1)
    assert np.allclose(got, _diagonals(np.einsum("htc,hsc->hts", q, k)), atol=1e-12)
    # sum_r P[t, r] V[(t + r) mod T]: the context of the diagonal-packed probabilities
    vr = v[:, (np.arange(tokens)[:, None] + np.arange(tokens)[None, :]) % tokens, :]
    want = np.einsum("htr,htrc->htc", p, vr)
    assert np.allclose(np.stack([lay.unpack(ev.decrypt(x)) for x in c], axis=-1), want, atol=1e-10)
    assert {x.level for x in s} == {x.level for x in c} == {7}          # depth 3 each
    tally = ev.tally.c
    count = {"rotations": sum(n for (pr, _), n in tally.items() if pr in ("rot", "hrot")),
             "relins": sum(n for (pr, _), n in tally.items() if pr == "relin"),
             "tensors": sum(n for (pr, _), n in tally.items() if pr == "tensor"),
             "pmuls": sum(n for (pr, _), n in tally.items() if pr == "pmul")}
    formula = attention_counts(tokens, heads, dh, slots, baby)
    assert all(formula[key] == n for key, n in count.items()), (formula, count)


def test_padding_slots_stay_zero_and_bad_shapes_are_refused():
    lay = HeadMajor(64, 3, 5)
    ev = PlainEvaluator(64)
    rng = np.random.default_rng(0)
    q = [ev.encrypt(x, 6) for x in lay.pack(rng.normal(size=(3, 5, 2)))]
    s = diagonal_scores(ev, q, q, lay)
    valid = np.zeros(64, bool)
    for h in range(3):
        valid[h * lay.segment: h * lay.segment + 5] = True
    assert all(np.all(ev.decrypt(x)[~valid] == 0) for x in s)
    with pytest.raises(ValueError, match="segment"):
        HeadMajor(64, 3, 17)
    with pytest.raises(ValueError, match="same number"):
        diagonal_scores(ev, q, q[:1], lay)


def test_bert_base_attention_products_per_layer_are_far_below_the_tile_program():
    """BERT-base at 2048 tokens: the head-major products need ~36 k key switches per layer (the tile
    program's attn_qk + attn_av: 1.96 M); at 8192 tokens four token groups and still < 0.4 M."""
    at = attention_counts(2048, 12, 64, 32768)
    assert at["token_groups"] == 1 and at["key_switches"] < 40_000
    assert attention_counts(8192, 12, 64, 32768)["key_switches"] < 400_000


def test_encrypted_products_match_plaintext(deep):
    """Real CKKS (insecure toy set, N = 2^11): the same circuit decrypts to the NumPy products."""
    lay = HeadMajor(deep.params.slots, 2, 8)
    baby = 2
    client = Client(deep, rotations=rotation_steps(lay, baby))
    ev = Evaluator(deep, client.evaluation_keys)
    rng = np.random.default_rng(3)
    q, k, v = (rng.uniform(-1, 1, size=(2, 8, 3)) for _ in range(3))
    p = rng.uniform(0, 1, size=(2, 8, 8))
    top = deep.params.max_level
    qc, kc, vc = ([client.encrypt(x, top) for x in lay.pack(m)] for m in (q, k, v))
    pc = [client.encrypt(x, top) for x in lay.pack(p)]
    s = diagonal_scores(ev, qc, kc, lay, baby)
    c = diagonal_context(ev, pc, vc, lay, baby)
    got_s = np.stack([lay.unpack(client.decrypt(x)) for x in s], axis=-1)
    assert np.max(np.abs(got_s - _diagonals(np.einsum("htc,hsc->hts", q, k)))) < 2.0 ** -12
    vr = v[:, (np.arange(8)[:, None] + np.arange(8)[None, :]) % 8, :]
    got_c = np.stack([lay.unpack(client.decrypt(x)) for x in c], axis=-1)
    assert np.max(np.abs(got_c - np.einsum("htr,htrc->htc", p, vr))) < 2.0 ** -12
    assert s[0].level == c[0].level == top - 3
