"""The lazy-reduction kernels and the threads setting give the reference's results bit for bit."""
import numpy as np
import pytest

from fhe import Backend
from fhe.primes import ntt_primes_below
from fhe.ring import RNSRing
from fhe.ring import lazy_kernels as lk
from fhe.ring.threads import get_threads, set_threads, using_threads

N = 1 << 11


def _ring(bits: int, count: int = 6) -> RNSRing:
    # the largest primes below 2^bits: the worst case for the lazy bounds (values up to 4q)
    return RNSRing(N, ntt_primes_below(bits, N, count), Backend())


def _inputs(ring: RNSRing, seed: int) -> list[np.ndarray]:
    """Random residues plus the extremes (all q - 1, all 0, alternating)."""
    rng = np.random.default_rng(seed)
    qs = np.array(ring.primes, dtype=np.uint64).reshape(-1, 1)
    rand = np.stack([rng.integers(0, q, ring.n, dtype=np.uint64) for q in ring.primes])
    top = np.broadcast_to(qs - np.uint64(1), rand.shape).copy()
    alt = np.where(np.arange(ring.n) % 2 == 0, top, np.uint64(0)).astype(np.uint64)
    return [rand, top, np.zeros_like(rand), alt]


def _all_ops(ring: RNSRing, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    idx = tuple(range(len(ring.primes)))
    return [ring.ntt(a, idx), ring.intt(a, idx), ring.mul(a, b, idx), ring.mac(b, a, b, idx),
            ring.add(a, b, idx), ring.sub(a, b, idx), ring.sub(b, a, idx),
            ring.mul_scalar(a, [2**49 + 7 * i for i in idx], idx),
            ring.base_convert(a[:2], idx[:2], idx[2:]), ring.base_convert(a[2:], idx[2:], idx[:2]),
            ring.rescale(a, idx), ring.rescale_many(a, idx, 2), ring.automorphism_ntt(a, 5),
            ring.automorphism_ntt(a, 2 * ring.n - 1)]


def _reference(ring: RNSRing, fn):
    ring.compiled = False
    try:
        return fn()
    finally:
        ring.compiled = True


@pytest.mark.parametrize("bits", [50, 51])
def test_compiled_matches_reference_at_the_prime_limits(bits):
    ring = _ring(bits)
    assert ring.compiled
    assert ring.lazy_ntt == (bits <= 50)   # 51-bit primes take the exact (non-lazy) NTT kernels
    cases = _inputs(ring, 3)
    for a in cases:
        for b in cases:
            got = _all_ops(ring, a, b)
            want = _reference(ring, lambda: _all_ops(ring, a, b))
            for g, w in zip(got, want):
                assert g.dtype == np.uint64 and np.array_equal(g, w)


def test_threads_do_not_change_results(monkeypatch):
    from fhe.ring import threads

    monkeypatch.setattr(threads, "MIN_ELEMS_PER_RANGE", 64)   # split even these small calls
    ring = _ring(50, count=8)
    a, b = _inputs(ring, 4)[0], _inputs(ring, 5)[0]
    with using_threads(1):
        one = _all_ops(ring, a, b)
    with using_threads(3):
        three = _all_ops(ring, a, b)
    for x, y in zip(one, three):
        assert np.array_equal(x, y)


def test_threads_setting_is_validated_and_restored():
    before = get_threads()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError):
            set_threads(bad)
    with using_threads(2):
        assert get_threads() == 2
    assert get_threads() == before


def test_lazy_prime_limit_is_what_the_ntt_bounds_need():
    # forward values reach 4q; float64 must hold them exactly and estimate the quotient within 1
    assert 4 * lk.LAZY_PRIME_LIMIT <= 2**52
