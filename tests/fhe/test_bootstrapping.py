"""CKKS bootstrapping at a toy ring degree: each stage against its plaintext counterpart, the whole
pipeline's precision, composite levels, and the keys it needs."""
import math
import time

import numpy as np
import pytest

from fhe.circuits.bootstrapping import (BootstrapError, BootstrapParameters, Bootstrapper, bitrev_indices,
                                        transform_shapes)
from fhe.circuits.dft import bsgs_shape, butterfly, compose, dense, dft_matrices, tile_diagonals
from fhe.circuits.evalmod import EvalModConfig, evalmod_error
from fhe.ckks.context import CKKSContext
from fhe.ckks.encryptor import Client
from fhe.ckks.evaluator import Evaluator
from fhe.params import ParameterError, preset

TOY = "toy-n10-boot"


def decode_matrix(used: int) -> np.ndarray:
    """V[j, k] = zeta^(5^j k) for ``used`` slots (zeta a primitive 4 * used-th root of unity)."""
    e = np.array([pow(5, j, 4 * used) for j in range(used)])
    return np.exp(1j * np.pi * (np.outer(e, np.arange(used)) % (4 * used)) / (2 * used))


def product(mats, n):
    m = np.eye(n, dtype=complex)
    for d in mats:
        m = dense(d, n) @ m
    return m


@pytest.mark.parametrize("used,levels", [(64, 3), (64, 2), (32, 5), (16, 1)])
def test_dft_factors_are_the_special_fft(used, levels):
    v = decode_matrix(used)
    p = np.eye(used)[bitrev_indices(used)]
    assert np.allclose(product(dft_matrices(used, levels, inverse=False), used), v @ p, atol=1e-12)
    assert np.allclose(product(dft_matrices(used, levels, inverse=True), used) @ v @ p, np.eye(used), atol=1e-12)


def test_butterfly_inverse_and_merged_diagonal_count():
    n = 32
    for m in (2, 8, 32):
        assert np.allclose(dense(compose(butterfly(n, m, True), butterfly(n, m), n), n), np.eye(n), atol=1e-14)
    merged = dft_matrices(1024, 2, inverse=False)            # 10 stages -> 5 + 5
    assert [len(d) for d in merged] == [2 ** 6 - 1, 32]         # +-n/2 coincide modulo n in the last


def test_bsgs_shape_reconstructs_every_offset():
    d = dft_matrices(256, 2, inverse=True)[0]
    sh = bsgs_shape(sorted(d), 256)
    seen = {(sh.stride * (sh.n1 * g + b)) % 256 for g, bs in sh.terms.items() for b in bs}
    assert seen == set(d)
    assert len(sh.babies) == sh.n1 - 1 and len(sh.giants(256)) <= len(d) // sh.n1 + 1
    tiled = tile_diagonals(d, 256, 1024)
    assert all(v.shape == (1024,) for v in tiled.values())


def test_evalmod_error_analysis():
    e = evalmod_error(EvalModConfig())
    assert e["poly"] < 1e-13 and e["sine"] < 1e-11 and e["model"] < 1e-5


def test_presets_have_a_documented_budget():
    p = preset("n16-boot")
    assert p.is_secure and p.boot_levels == 15
    lv = BootstrapParameters().levels(p)
    assert lv["output"] == 9 and BootstrapParameters().depth == 15
    with pytest.raises(BootstrapError, match="n16-boot"):
        BootstrapParameters().levels(preset("n16"))
    with pytest.raises(ParameterError, match="composite"):
        type(p)(10, (50, 40, 30, 30), (50,), 1, 40, name="toy-x", insecure=True, boot_levels=3, boot_scale_bits=60)


@pytest.fixture(scope="module")
def boot():
    ctx = CKKSContext.from_preset(TOY, allow_insecure=True)
    bp = BootstrapParameters()
    client = Client(ctx)
    ek = client.keygen.evaluation_keys(**bp.key_request(ctx.params))
    ev = Evaluator(ctx, ek)
    return ctx, client, ev, Bootstrapper(ev, bp)


def test_composite_levels_rescale_by_a_prime_pair(boot):
    ctx, client, ev, _ = boot
    p = ctx.params
    x = np.random.default_rng(3).uniform(-1, 1, p.slots)
    ct = client.encrypt(x)
    assert ct.scale == 2.0 ** p.boot_scale_bits
    sq = ev.square(ct)
    assert sq.level == p.max_level - 2 and math.isclose(sq.scale, p.scale_at(sq.level), rel_tol=1e-12)
    assert np.max(np.abs(client.decrypt(sq).real - x * x)) < 1e-12
    low = ev.adjust_level(ct, p.boot_region_bottom)
    assert np.max(np.abs(client.decrypt(low).real - x)) < 1e-12


def test_each_stage_matches_its_plaintext_counterpart(boot):
    ctx, client, ev, bs = boot
    p, ring = ctx.params, ctx.ring
    n = p.slots
    z = np.random.default_rng(1).uniform(-1, 1, n)
    ct = client.encrypt(z, level=0)
    raised = bs.mod_raise(ct)
    # ModRaise: t = D m + e + q0 I with small integers I
    pt = client.decryptor.decrypt(raised)
    idx = p.q_indices(raised.level)
    y = ring.to_float(ring.intt(pt.data, idx), idx) / p.q_primes[0]
    ints = np.round(y)
    m_coeffs = client.encoder.coefficients(z)
    assert np.max(np.abs(ints)) <= bs.bp.evalmod.k_bound
    assert np.max(np.abs((y - ints) * p.q_primes[0] / p.scale_at(0) - m_coeffs)) < 1e-8
    # CoeffToSlot: bit-reversed (y_k + i y_{k+n}) / B, split into real and imaginary ciphertexts
    w = (y[:n] + 1j * y[n:])[bitrev_indices(n)] / bs.bp.evalmod.bound
    re, im = bs.coeff_to_slot(raised)
    assert np.max(np.abs(client.decrypt(re).real - w.real)) < 1e-11
    assert np.max(np.abs(client.decrypt(im).real - w.imag)) < 1e-11
    # EvalMod: sin(2 pi B x) of what it was given
    x = client.decrypt(re).real
    out = bs.eval_mod(re)
    assert out.level == bs.lv["stc"]
    assert np.max(np.abs(client.decrypt(out).real - np.sin(2 * np.pi * bs.bp.evalmod.bound * x))) < 1e-9
    # SlotToCoeff: V P (a + i b) q0 / (2 pi D) of its two inputs
    s_re, s_im = client.decrypt(out).real, client.decrypt(bs.eval_mod(im)).real
    res = bs.slot_to_coeff(out, bs.eval_mod(im))
    v = decode_matrix(n) @ np.eye(n)[bitrev_indices(n)]
    expect = v @ (s_re + 1j * s_im) * p.q_primes[0] / (2 * np.pi * p.scale_at(0))
    assert res.level == bs.levels_after == 9
    assert np.max(np.abs(client.decrypt(res) - expect)) < 1e-6


def test_bootstrap_precision_over_random_vectors(boot):
    ctx, client, ev, bs = boot
    rng = np.random.default_rng(7)
    bits = []
    for k in range(3):
        z = rng.uniform(-1, 1, ctx.params.slots)
        if k == 2:
            z = z + 1j * rng.uniform(-1, 1, ctx.params.slots)      # complex slots are refreshed too
        ct = client.encrypt(z, level=1)                             # brought to level 0 inside
        t0 = time.perf_counter()
        out = bs.bootstrap(ct)
        total = time.perf_counter() - t0
        phases = bs.phase_seconds                                   # time per phase, as the bench prints it
        assert list(phases) == ["mod_raise", "subsum", "coeff_to_slot", "eval_mod", "slot_to_coeff"]
        assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= total
        bits.append(-math.log2(np.max(np.abs(client.decrypt(out) - z))))
        # the refreshed ciphertext computes: one multiplication at the output level
        sq = ev.square(out)
        assert np.max(np.abs(client.decrypt(sq) - z * z)) < 1e-4
    assert min(bits) >= 20, bits


def test_sparse_packing():
    ctx = CKKSContext.from_preset(TOY, allow_insecure=True)
    bp = BootstrapParameters(slots=64)
    client = Client(ctx)
    ev = Evaluator(ctx, client.keygen.evaluation_keys(**bp.key_request(ctx.params)))
    bs = Bootstrapper(ev, bp, precompute=False)
    z = np.random.default_rng(5).uniform(-1, 1, 64)
    ct = client.encrypt(np.tile(z, ctx.params.slots // 64), level=0)
    out = client.decrypt(bs.bootstrap(ct))
    assert np.max(np.abs(out - np.tile(z, ctx.params.slots // 64))) < 2 ** -18
    assert len(bp.rotations(ctx.params)) < len(BootstrapParameters().rotations(ctx.params)) + 4


def test_missing_keys_are_named(boot):
    ctx, client, _, _ = boot
    bp = BootstrapParameters()
    partial = client.keygen.evaluation_keys(rotations=bp.rotations(ctx.params)[1:], conjugate=True,
                                            encapsulation=True)
    bs = Bootstrapper(Evaluator(ctx, partial), bp, precompute=False)
    missing = bp.rotations(ctx.params)[0]
    with pytest.raises(KeyError, match=f"rotation by {missing}"):
        bs.bootstrap(client.encrypt([0.5], level=0))
    bare = Bootstrapper(Evaluator(ctx, client.keygen.evaluation_keys()), bp, precompute=False)
    with pytest.raises(BootstrapError, match="encapsulation"):
        bare.bootstrap(client.encrypt([0.5], level=0))


def test_shapes_follow_the_circuit():
    p = preset(TOY, allow_insecure=True)
    cts, stc = transform_shapes(p, BootstrapParameters())
    assert [s.level for s in cts] == [39, 37, 35] and [s.level for s in stc] == [15, 13, 11]
    assert all(s.babies + s.giants == len(s.rotations) for s in cts + stc)


def test_toy_sets_may_use_a_small_weight_and_keys_must_match_the_parameters(boot):
    """A toy (insecure) set may use a weight below 32; a bootstrapper refuses keys made for another weight."""
    ctx, client, ev, _ = boot
    enc = client.keygen.encapsulation_keys(8)
    assert enc.hamming_weight == 8
    bs = Bootstrapper(ev, BootstrapParameters(hamming_weight=16), precompute=False)   # ev's keys: weight 32
    with pytest.raises(BootstrapError, match="weight-32 sparse secret.*ask for 16"):
        bs.bootstrap(client.encrypt([0.5], level=0))


def _negacyclic_times_monomial(a: np.ndarray, k: int, sign: int) -> np.ndarray:
    """a(X) * sign X^k in Z[X]/(X^N + 1), coefficient vectors (object ints)."""
    n = len(a)
    return sign * (np.concatenate([-a[n - k:], a[: n - k]]) if k else a)


def test_a_weight_1_sparse_secret_gives_the_secret_key_away(boot):
    """Why the weight has a floor: from the dense-to-sparse key alone (what the server receives), a
    weight-1 s' is found among 2N candidates (the p_0 row of b_0 + a_0 s' is the small error), and then
    b_0 + a_0 s' = e + p_0 s (mod q_0) gives every coefficient of the dense secret s."""
    ctx, client, _, _ = boot
    p, ring = ctx.params, ctx.ring
    gk = client.keygen.encapsulation_keys(1).to_sparse          # toy set: weight 1 allowed
    q0, p0 = p.q_primes[0], p.primes[gk.p_idx[0]]
    rows = (0,) + gk.p_idx
    b = ring.backend.to_host(ring.intt(gk.b[0], rows)).astype(object)
    a = ring.backend.to_host(ring.intt(gk.a[0], rows)).astype(object)

    def centred(x, q):
        x = x % q
        return np.where(x > q // 2, x - q, x).astype(float)

    guess = next((k, sg) for k in range(p.n) for sg in (1, -1)
                 if np.max(np.abs(centred(b[1] + _negacyclic_times_monomial(a[1], k, sg), p0))) < 64)
    x = b[0] + _negacyclic_times_monomial(a[0], *guess)          # e + p_0 s (mod q_0)
    trits = np.array([-1, 0, 1])
    s = trits[np.argmin([np.abs(centred(x - t * p0, q0)) for t in trits], axis=0)]
    assert np.array_equal(s, client.keygen.secret_key.coeffs)


@pytest.mark.parametrize("name,levels", [("toy-n10-boot-11", 11), ("toy-n10-boot-13", 13)])
def test_deeper_presets_bootstrap_and_every_level_left_computes(name, levels):
    """The n16-boot-11 / n16-boot-13 layouts at N = 2^10: the bootstrapped ciphertext decrypts to the input
    (>= 20 bits, as on n16-boot's layout), sits at level 11 / 13, and a chain of products using every one of
    those levels matches its plaintext."""
    ctx = CKKSContext.from_preset(name, allow_insecure=True)
    bp = BootstrapParameters()
    client = Client(ctx)
    ev = Evaluator(ctx, client.keygen.evaluation_keys(**bp.key_request(ctx.params)))
    bs = Bootstrapper(ev, bp, precompute=False)
    rng = np.random.default_rng(11)
    z = rng.uniform(-1, 1, ctx.params.slots)
    out = bs.bootstrap(client.encrypt(z, level=1))
    assert out.level == bs.levels_after == levels
    assert -math.log2(np.max(np.abs(client.decrypt(out) - z))) >= 20
    ref, ct = z.copy(), out
    while ct.level > 0:
        y = rng.uniform(0.8, 1.2, ctx.params.slots)
        ct = ev.mul_relin_rescale(ct, client.encrypt(y, level=ct.level))
        ref = ref * y
    assert ct.level == 0 and np.max(np.abs(client.decrypt(ct).real - ref)) < 2 ** -15
