"""Every homomorphic operation against its plaintext reference."""
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhe import CKKSContext, Client, Encoder, Evaluator, LevelError
from fhe.rlwe.keys import EvaluationKeys, SecretKey

TOL = 2.0 ** -18


def err(client, ct, ref):
    return float(np.max(np.abs(client.decrypt(ct)[: len(ref)] - ref)))


def test_encode_decode_round_trip(toy, rng):
    ctx, _, _ = toy
    enc = Encoder(ctx)
    z = rng.uniform(-1, 1, ctx.params.slots) + 1j * rng.uniform(-1, 1, ctx.params.slots)
    assert np.max(np.abs(enc.decode(enc.encode(z)) - z)) < 2.0 ** -30


@settings(max_examples=10, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=1, max_size=512))
def test_encode_decode_property(toy, values):
    ctx, _, _ = toy
    enc = Encoder(ctx)
    out = enc.decode(enc.encode(values))[: len(values)]
    assert np.max(np.abs(out - np.array(values))) < 1e-6


def test_encrypt_decrypt_public_and_secret_key(toy, rng):
    ctx, client, _ = toy
    from fhe.ckks import Encryptor

    x = rng.uniform(-1, 1, ctx.params.slots)
    assert err(client, client.encrypt(x), x) < TOL
    sk_enc = Encryptor(ctx, client.keygen.secret_key)
    assert err(client, sk_enc.encrypt(client.encoder.encode(x)), x) < TOL


def test_additive_ops(toy, rng):
    ctx, client, ev = toy
    x, y = rng.uniform(-1, 1, (2, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    assert err(client, ev.add(cx, cy), x + y) < TOL
    assert err(client, ev.sub(cx, cy), x - y) < TOL
    assert err(client, ev.neg(cx), -x) < TOL
    assert err(client, ev.add_plain(cx, y), x + y) < TOL
    assert err(client, ev.sub_plain(cx, y), x - y) < TOL
    assert err(client, ev.add_const(cx, 0.75), x + 0.75) < TOL


def test_multiplicative_ops(toy, rng):
    ctx, client, ev = toy
    x, y = rng.uniform(-1, 1, (2, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    assert err(client, ev.mul_plain_rescale(cx, y), x * y) < TOL
    assert err(client, ev.mul_const_rescale(cx, -1.5), -1.5 * x) < TOL
    assert err(client, ev.mul_int(cx, 3), 3 * x) < TOL
    three = ev.mul(cx, cy)
    assert len(three.parts) == 3
    assert err(client, ev.rescale(three), x * y) < TOL  # decrypts with s^2 before relinearisation
    prod = ev.mul_relin_rescale(cx, cy)
    assert prod.level == cx.level - 1 and len(prod.parts) == 2
    assert err(client, prod, x * y) < TOL


def test_mul_plain_add_is_the_sum_of_products(toy, rng):
    ctx, client, ev = toy
    x, y, w = rng.uniform(-1, 1, (3, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    pw = client.encoder.encode(w, level=cx.level)
    acc = ev.mul_plain(cx, pw)
    fused = ev.mul_plain_add(acc, cy, pw)
    split = ev.add(acc, ev.mul_plain(cy, pw))
    assert all(np.array_equal(a, b) for a, b in zip(fused.parts, split.parts))   # bit for bit
    assert err(client, ev.rescale(fused), (x + y) * w) < TOL
    with pytest.raises(ValueError, match="level"):
        ev.mul_plain_add(acc, ev.drop_level(cy, cy.level - 1), pw)


def test_mixed_levels_are_aligned(toy, rng):
    ctx, client, ev = toy
    x, y = rng.uniform(-1, 1, (2, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    xy = ev.mul_relin_rescale(cx, cy)
    xyy = ev.mul_relin_rescale(xy, cy)      # level L-2 times level L
    assert err(client, xyy, x * y * y) < TOL
    assert err(client, ev.add(xyy, cx), x * y * y + x) < TOL


def test_rotations_conjugation_and_hoisting(toy, rng):
    ctx, client, ev = toy
    x = rng.uniform(-1, 1, ctx.params.slots)
    cx = client.encrypt(x)
    for k in (1, 3, -1, -4):
        assert err(client, ev.rotate(cx, k), np.roll(x, -k)) < TOL
    hoisted = ev.rotate_hoisted(cx, [0, 1, 2, 5])
    for k, ct in hoisted.items():
        assert err(client, ct, np.roll(x, -k)) < TOL
    z = x + 1j * rng.uniform(-1, 1, ctx.params.slots)
    assert err(client, ev.conjugate(client.encrypt(z)), np.conj(z)) < TOL


def test_sum_slots(toy, rng):
    ctx, client, ev = toy
    x = rng.uniform(-1, 1, ctx.params.slots)
    out = client.decrypt(ev.sum_slots(client.encrypt(x), 4)).real
    want = sum(np.roll(x, -k) for k in range(4))
    assert np.max(np.abs(out - want)) < TOL


def test_missing_rotation_key_names_the_rotation(toy):
    ctx, client, ev = toy
    with pytest.raises(KeyError, match="rotation by 7"):
        ev.rotate(client.encrypt([1.0]), 7)


def test_levels_run_out_with_a_clear_error(toy):
    ctx, client, ev = toy
    ct = ev.drop_level(client.encrypt([0.5]), 0)
    with pytest.raises(LevelError, match="level 0"):
        ev.rescale(ct)


def test_evaluation_keys_hold_no_secret(toy):
    ctx, client, _ = toy
    ek = client.evaluation_keys
    blob = pickle.dumps(ek)
    assert not any(isinstance(v, SecretKey) for v in vars(ek).values())
    assert client.keygen.secret_key.ntt.tobytes()[:4096] not in blob
    assert isinstance(pickle.loads(blob), EvaluationKeys)


def test_secret_is_ternary_and_fresh():
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    a, b = Client(ctx), Client(ctx)
    sa, sb = a.keygen.secret_key.coeffs, b.keygen.secret_key.coeffs
    assert set(np.unique(sa)) <= {-1, 0, 1}
    assert not np.array_equal(sa, sb)  # keys come from the OS CSPRNG, never a fixed seed


def test_secure_preset_multiply_and_rotate(rng):
    """The same checks on a 128-bit-secure preset (N = 2^13)."""
    ctx = CKKSContext.from_preset("n13")
    client = Client(ctx, rotations=[1])
    ev = Evaluator(ctx, client.evaluation_keys)
    x, y = rng.uniform(-1, 1, (2, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    assert err(client, ev.mul_relin_rescale(cx, cy), x * y) < TOL
    assert err(client, ev.rotate(cx, 1), np.roll(x, -1)) < TOL
    assert err(client, ev.add(cx, cy), x + y) < TOL
