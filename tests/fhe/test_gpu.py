"""CuPy backend: the same code path as NumPy, checked bit for bit and against plaintext. Skips without a GPU."""
import numpy as np
import pytest

from fhe import CKKSContext, Client, Evaluator, cupy_available, get_backend, preset
from fhe.ring import RNSRing

ok, why = cupy_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]


def test_cupy_ring_kernels_match_numpy_bit_for_bit():
    p = preset("toy-n12", allow_insecure=True)
    cpu = RNSRing(p.n, p.primes, get_backend("numpy"))
    gpu = RNSRing(p.n, p.primes, get_backend("cupy"))
    idx = tuple(range(len(p.primes)))
    rng = np.random.default_rng(0)
    a = np.stack([rng.integers(0, q, p.n, dtype=np.uint64) for q in p.primes])
    ga = gpu.backend.asarray(a)
    assert np.array_equal(cpu.ntt(a, idx), gpu.ntt(ga, idx).get())
    assert np.array_equal(cpu.intt(a, idx), gpu.intt(ga, idx).get())
    assert np.array_equal(cpu.base_convert(a[:3], idx[:3], idx[3:]), gpu.base_convert(ga[:3], idx[:3], idx[3:]).get())
    assert np.array_equal(cpu.rescale(a, idx), gpu.rescale(ga, idx).get())
    assert np.array_equal(cpu.automorphism_ntt(a, 5), gpu.automorphism_ntt(ga, 5).get())


@pytest.mark.parametrize("name", ["toy-n12", "n14"])
def test_cupy_ckks_against_plaintext(name):
    ctx = CKKSContext(preset(name, allow_insecure=True), get_backend("cupy"))
    client = Client(ctx, rotations=[1, 3])
    ev = Evaluator(ctx, client.evaluation_keys)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-1, 1, (2, ctx.params.slots))
    cx, cy = client.encrypt(x), client.encrypt(y)
    for ct, ref in [(ev.mul_relin_rescale(cx, cy), x * y), (ev.rotate(cx, 3), np.roll(x, -3)),
                    (ev.add(cx, cy), x + y), (ev.rotate_hoisted(cx, [1, 3])[1], np.roll(x, -1))]:
        assert np.max(np.abs(client.decrypt(ct).real - ref)) < 2.0 ** -18
