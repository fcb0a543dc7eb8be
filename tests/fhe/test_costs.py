"""The cost formulas against the bytes and calls the kernels really make."""
import numpy as np
import pytest

from fhe import Client, Evaluator, costs
from fhe.ring.counters import count_kernels
from fhe.rlwe import keyswitch as ks


def _total(tally):
    return (sum(t.bytes_read for t in tally.values()), sum(t.bytes_written for t in tally.values()),
            sum(t.calls for t in tally.values()))


def _formula(c):
    return (c.bytes_read, c.bytes_written, c.calls)


@pytest.fixture(scope="module")
def keyed(deep):
    client = Client(deep, rotations=[1, 2, 3])
    return deep, client, Evaluator(deep, client.evaluation_keys)


@pytest.mark.parametrize("level", [12, 7, 4, 0])
def test_operation_formulas_match_counted_kernels(keyed, level):
    ctx, client, ev = keyed
    p = ctx.params
    ct = ev.drop_level(client.encrypt(np.ones(4)), level)
    cases = [
        (lambda: ks.key_switch(ctx.ring, p, ct.parts[1], client.evaluation_keys.relin, level), costs.key_switch(p, level)),
        (lambda: ev.rotate(ct, 1), costs.rotate(p, level)),
        (lambda: ev.rotate_hoisted(ct, [1, 2, 3]), costs.hoisted_rotations(p, level, 3)),
        (lambda: ev.mul_plain(ct, ct.parts[0]), None),
    ]
    if level > 0:
        cases.append((lambda: ev.mul_relin_rescale(ct, ct), costs.hmul(p, level)))
    for fn, formula in cases:
        if formula is None:
            continue
        with count_kernels() as tally:
            fn()
        assert _total(tally) == _formula(formula)


def test_kernel_formulas(keyed):
    ctx, _, _ = keyed
    ring, n = ctx.ring, ctx.params.n
    a = np.zeros((5, n), dtype=np.uint64)
    idx = tuple(range(5))
    for name, call, formula in [
        ("ntt", lambda: ring.ntt(a, idx), costs.ntt(n, 5)),
        ("intt", lambda: ring.intt(a, idx), costs.intt(n, 5)),
        ("mul", lambda: ring.mul(a, a, idx), costs.mul(n, 5)),
        ("mac", lambda: ring.mac(a, a, a, idx), costs.mac(n, 5)),
        ("base_convert", lambda: ring.base_convert(a[:2], idx[:2], idx[2:]), costs.base_convert(n, 2, 3)),
        ("automorphism", lambda: ring.automorphism_ntt(a, 5), costs.automorphism(n, 5)),
        ("rescale", lambda: ring.rescale(a, idx), costs.rescale(n, 5)),
    ]:
        with count_kernels() as tally:
            call()
        t = tally[name]
        assert (t.bytes_read, t.bytes_written, t.calls) == _formula(formula), name


def test_sizes(keyed):
    ctx, client, _ = keyed
    p = ctx.params
    assert costs.switching_key_bytes(p) == client.evaluation_keys.relin.nbytes
    ct = client.encrypt([1.0])
    assert costs.ciphertext_bytes(p.n, p.max_level + 1) == ct.nbytes
