import numpy as np
import pytest

from fhe import Client, Evaluator, LevelError
from fhe.circuits import LinearTransform, PolynomialEvaluator, chebyshev_depth, chebyshev_fit, tile


@pytest.fixture(scope="module")
def deep_keys(deep):
    ctx = deep
    probe = LinearTransform(Evaluator(ctx), np.ones((32, 32)), ctx.params.max_level, precompute=False)
    client = Client(ctx, rotations=probe.rotations())
    return ctx, client, Evaluator(ctx, client.evaluation_keys)


@pytest.mark.parametrize("shape", [(32, 32), (20, 32), (32, 7)])
def test_linear_transform_matches_matmul(deep_keys, rng, shape):
    ctx, client, ev = deep_keys
    m = rng.uniform(-1, 1, shape)
    x = rng.uniform(-1, 1, shape[1])
    lt = LinearTransform(ev, m, ctx.params.max_level)
    xp = np.zeros(lt.d)
    xp[: shape[1]] = x
    out = lt.apply(client.encrypt(tile(xp, ctx.params.slots)))
    got = client.decrypt(out).real[: shape[0]]
    assert np.max(np.abs(got - m @ x)) < 2.0 ** -16
    assert out.level == ctx.params.max_level - 1


def test_linear_transform_on_the_fly_encoding_agrees(deep_keys, rng):
    ctx, client, ev = deep_keys
    m = rng.uniform(-1, 1, (32, 32))
    x = tile(rng.uniform(-1, 1, 32), ctx.params.slots)
    ct = client.encrypt(x)
    a = client.decrypt(LinearTransform(ev, m, ct.level, precompute=True).apply(ct))
    b = client.decrypt(LinearTransform(ev, m, ct.level, precompute=False).apply(ct))
    assert np.max(np.abs(a - b)) < 2.0 ** -18


@pytest.mark.parametrize("degree", [3, 8, 15, 31])
def test_polynomial_matches_plaintext_series_and_depth(deep_keys, rng, degree):
    ctx, client, ev = deep_keys
    x = rng.uniform(-4, 4, ctx.params.slots)
    coeffs = chebyshev_fit(np.tanh, (-4, 4), degree)
    ct = client.encrypt(x)
    out = PolynomialEvaluator(ev).evaluate(ct, coeffs, (-4, 4))
    want = np.polynomial.chebyshev.chebval(x / 4, coeffs)
    assert np.max(np.abs(client.decrypt(out).real - want)) < 2.0 ** -16
    assert ct.level - out.level == chebyshev_depth(degree, (-4, 4))


def test_polynomial_needing_too_many_levels_is_refused(deep_keys):
    ctx, client, ev = deep_keys
    ct = ev.drop_level(client.encrypt([0.1]), 3)
    with pytest.raises(LevelError, match="needs"):
        PolynomialEvaluator(ev).evaluate(ct, chebyshev_fit(np.exp, (-1, 1), 31))
