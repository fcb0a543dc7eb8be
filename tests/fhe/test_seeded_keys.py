"""Seed-compressed switching keys: half the bytes, the same results, and cutting a key to a level."""
import numpy as np

from fhe import CKKSContext, Client, Evaluator
from fhe.costs import switching_key_bytes_at
from fhe.rlwe import sampling
from fhe.rlwe.keys import EvaluationKeys, SeededSwitchingKey, galois_element, key_at_level


def test_seed_expansion_is_deterministic_and_row_wise():
    primes = [97, 193, 257]
    a = sampling.uniform_mod_from_seed(b"s" * 32, primes, 64)
    b = sampling.uniform_mod_from_seed(b"s" * 32, primes[:2], 64)
    assert a.shape == (3, 64) and np.array_equal(a[:2], b)          # a cut key keeps the same rows
    assert all(int(a[i].max()) < q for i, q in enumerate(primes))
    assert not np.array_equal(a, sampling.uniform_mod_from_seed(b"t" * 32, primes, 64))


def test_seeded_keys_rotate_and_relinearise_correctly():
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    client = Client(ctx, rotations=[1, 3], seeded_keys=True)
    ek = client.evaluation_keys
    assert isinstance(ek.relin, SeededSwitchingKey)
    p = ctx.params
    assert ek.relin.nbytes == switching_key_bytes_at(p, p.max_level, seeded=True)
    assert 2 * ek.relin.nbytes == switching_key_bytes_at(p, p.max_level) + 64 * p.dnum
    ev = Evaluator(ctx, ek)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, p.slots), rng.uniform(-1, 1, p.slots)
    cx, cy = client.encrypt(x), client.encrypt(y)
    assert np.max(np.abs(client.decrypt(ev.rotate(cx, 3)).real - np.roll(x, -3))) < 2 ** -15
    assert np.max(np.abs(client.decrypt(ev.mul_relin_rescale(cx, cy)).real - x * y)) < 2 ** -15


def test_key_cut_to_a_level_switches_at_that_level():
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    p = ctx.params
    for seeded in (False, True):
        client = Client(ctx, rotations=[2], seeded_keys=seeded)
        g = galois_element(p, 2)
        lvl = 1
        cut = key_at_level(client.evaluation_keys.galois[g], p, lvl)
        assert cut.nbytes == switching_key_bytes_at(p, lvl, seeded)
        ev = Evaluator(ctx, EvaluationKeys(params=p, galois={g: cut}))
        x = np.random.default_rng(2).uniform(-1, 1, p.slots)
        ct = client.encrypt(x, level=lvl)
        assert np.max(np.abs(client.decrypt(ev.rotate(ct, 2)).real - np.roll(x, -2))) < 2 ** -15
