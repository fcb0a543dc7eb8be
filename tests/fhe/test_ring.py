import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhe import Backend, preset
from fhe.ring import RNSRing


@pytest.fixture(scope="module")
def ring():
    p = preset("toy-n10", allow_insecure=True)
    return RNSRing(p.n, p.primes, Backend())


def _rand(ring, seed, limbs=None):
    rng = np.random.default_rng(seed)
    primes = ring.primes[: limbs or len(ring.primes)]
    return np.stack([rng.integers(0, q, ring.n, dtype=np.uint64) for q in primes])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32))
def test_ntt_round_trip(ring, seed):
    idx = tuple(range(len(ring.primes)))
    a = _rand(ring, seed)
    assert np.array_equal(ring.intt(ring.ntt(a, idx), idx), a)


def test_ntt_product_is_negacyclic_convolution(ring):
    idx = (1,)
    q = ring.primes[1]
    a, b = _rand(ring, 1)[1:2], _rand(ring, 2)[1:2]
    c = ring.intt(ring.mul(ring.ntt(a, idx), ring.ntt(b, idx), idx), idx)[0]
    ai, bi = [int(v) for v in a[0]], [int(v) for v in b[0]]
    ref = [0] * ring.n
    for i, x in enumerate(ai):
        for j, y in enumerate(bi):
            k = i + j
            if k < ring.n:
                ref[k] += x * y
            else:
                ref[k - ring.n] -= x * y
    assert [r % q for r in ref] == [int(v) for v in c]


def test_compiled_kernels_match_the_array_reference(ring):
    idx = tuple(range(len(ring.primes)))
    a = _rand(ring, 7)
    compiled = ring.compiled
    try:
        ring.compiled = False
        b, c = _rand(ring, 8), _rand(ring, 9)

        def run():
            return (ring.ntt(a, idx), ring.intt(a, idx), ring.base_convert(a[:3], idx[:3], idx[3:]),
                    ring.mul(a, b, idx), ring.mac(c, a, b, idx), ring.add(a, b, idx), ring.sub(a, b, idx),
                    ring.mul_scalar(a, [3**40 + i for i in idx], idx), ring.sub(a, a, idx))
        ref = run()
        ring.compiled = True
        got = run()
    finally:
        ring.compiled = compiled
    for r, g in zip(ref, got):
        assert np.array_equal(r, g)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3))
def test_base_conversion_is_exact_up_to_a_multiple_of_q(ring, seed, k):
    src = tuple(range(k))
    dst = tuple(range(k, len(ring.primes)))
    a = _rand(ring, seed, k)
    out = ring.base_convert(a, src, dst)
    big_q = int(np.prod([ring.primes[i] for i in src], dtype=object))
    for col in range(0, ring.n, 97):
        x = _crt([int(a[i, col]) for i in range(k)], [ring.primes[i] for i in src])
        for row, j in enumerate(dst):
            p = ring.primes[j]
            xc = x - big_q if x > big_q // 2 else x
            assert any((xc + u * big_q) % p == int(out[row, col]) for u in range(-(k // 2) - 1, k // 2 + 2))


def _crt(residues, moduli):
    x, m = 0, 1
    for r, q in zip(residues, moduli):
        x += m * ((r - x) * pow(m, -1, q) % q)
        m *= q
    return x


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([3, 5, 25, 2047]), st.sampled_from([5, 125, 2047]))
def test_automorphisms_compose_and_match_coefficient_form(ring, seed, g1, g2):
    idx = tuple(range(len(ring.primes)))
    a = _rand(ring, seed)
    ntt = ring.ntt(a, idx)
    assert np.array_equal(ring.ntt(ring.automorphism_coeff(a, g1, idx), idx), ring.automorphism_ntt(ntt, g1))
    two = ring.automorphism_ntt(ring.automorphism_ntt(ntt, g1), g2)
    assert np.array_equal(two, ring.automorphism_ntt(ntt, g1 * g2 % (2 * ring.n)))


def test_rescale_divides_with_rounding(ring):
    idx = (0, 1, 2)
    rng = np.random.default_rng(3)
    vals = rng.integers(-(2**60), 2**60, ring.n)
    a = np.stack([np.mod(vals, ring.primes[i]).astype(np.uint64) for i in idx])
    out = ring.intt(ring.rescale(ring.ntt(a, idx), idx), idx[:2])
    got = ring.to_float(out, idx[:2])
    want = np.array([round(int(v) / ring.primes[2]) for v in vals], dtype=np.float64)
    assert np.max(np.abs(got - want)) <= 1


def test_to_float_reconstructs_large_signed_values(ring):
    idx = tuple(range(4))
    rng = np.random.default_rng(5)
    vals = [int(v) * 2**40 + int(w) for v, w in zip(rng.integers(-(2**40), 2**40, ring.n), rng.integers(0, 2**40, ring.n))]
    a = np.stack([np.array([v % ring.primes[i] for v in vals], dtype=np.uint64) for i in idx])
    got = ring.to_float(a, idx)
    assert np.allclose(got, np.array(vals, dtype=np.float64), rtol=1e-15, atol=0)
