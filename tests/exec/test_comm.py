import numpy as np
import pytest

from aegis.comm import CommOp, pair_bytes
from exec.comm import NumpyCommunicator, make_communicator
from fhe import CKKSContext, Client

PRIMES = [1099511480321, 1099511922689, 1099512004609, 1099512037377, 1099512266753]
N = 16


def _rows(rng, limbs=5):
    return np.stack([rng.integers(0, q, N, dtype=np.uint64) for q in PRIMES[:limbs]])


def test_all_gather_semantics_and_bytes():
    rng = np.random.default_rng(0)
    full = _rows(rng)
    G = 3
    comm = NumpyCommunicator(G)
    shards = [{k: full[k] for k in range(5) if k % G == d} for d in range(G)]
    got = comm.all_gather(shards, "attention")
    for d in range(G):
        assert np.array_equal(np.stack([got[d][k] for k in range(5)]), full)
    plan_op = CommOp(0, "all_gather", "attention", 0, (0, 1, 2), payload=((5, 1, 1),))
    assert {(s, t): b for (s, t, _), b in comm.counted().items()} == pair_bytes(plan_op, N * 8)


def test_reduce_scatter_and_all_reduce_are_modular_sums():
    rng = np.random.default_rng(1)
    G = 2
    parts = [_rows(rng) for _ in range(G)]
    expect = np.stack([(parts[0][k] + parts[1][k]) % np.uint64(PRIMES[k]) for k in range(5)])
    comm = NumpyCommunicator(G)
    rs = comm.reduce_scatter(parts, PRIMES, "ffn")
    for d in range(G):
        for k, row in rs[d].items():
            assert k % G == d and np.array_equal(row, expect[k])
    plan_op = CommOp(0, "reduce_scatter", "ffn", 0, (0, 1), payload=((5, 1, 1),))
    assert {(s, t): b for (s, t, _), b in comm.counted().items()} == pair_bytes(plan_op, N * 8)
    comm2 = NumpyCommunicator(G)
    ar = comm2.all_reduce(parts, PRIMES, "ffn")
    assert all(np.array_equal(a, expect) for a in ar)
    plan_ar = CommOp(0, "all_reduce", "ffn", 0, (0, 1), payload=((5, 1, 1),))
    assert {(s, t): b for (s, t, _), b in comm2.counted().items()} == pair_bytes(plan_ar, N * 8)


def test_send_copies_ciphertexts_and_counts_them():
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    client = Client(ctx)
    ct = client.encrypt(np.arange(8.0))
    comm = NumpyCommunicator(2)
    (copy,) = comm.send([ct], 0, 1, "attention")
    assert copy.parts[0] is not ct.parts[0] and np.array_equal(copy.parts[1], ct.parts[1])
    assert comm.counted() == {(0, 1, "attention"): ct.nbytes}
    assert np.allclose(client.decrypt(copy).real[:8], np.arange(8.0), atol=1e-6)


def test_unknown_backend():
    with pytest.raises(ValueError, match="valid: numpy, cupy"):
        make_communicator("tpu", 2)


def test_cupy_communicator_needs_a_gpu():
    from fhe.backend import cupy_available

    ok, why = cupy_available()
    if not ok:
        pytest.skip(f"no GPU: {why}")
    comm = make_communicator("cupy", 2)
    import cupy

    x = cupy.arange(8, dtype=cupy.uint64)
    assert cupy.array_equal(comm._copy(x, 1), x)


def test_limb_calibration_times_every_limb_split_primitive():
    from exec.calibrate_limb import LIMB_PRIMS, group_times, time_limb_prims
    from fhe import CKKSContext

    assert all(t >= 0.0 for t in group_times([[lambda: None, lambda: None]] * 2, repeats=2))
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    got = time_limb_prims(ctx, [2], [1], repeats=1)
    assert set(got) == {"2"} and set(got["2"]) == set(LIMB_PRIMS)
    assert all(limbs == 2 and sec >= 0 for samples in got["2"].values() for limbs, sec in samples)
    assert got["2"]["rot"][0][1] > got["2"]["add"][0][1] > 0
