import numpy as np
import pytest

from fhe import CKKSContext, Client, Evaluator


@pytest.fixture(scope="session")
def toy():
    """A small insecure context with keys (N = 2^10), shared by the fast tests."""
    ctx = CKKSContext.from_preset("toy-n10", allow_insecure=True)
    client = Client(ctx, rotations=[1, 2, 3, 5, -1, -4], conjugate=True)
    return ctx, client, Evaluator(ctx, client.evaluation_keys)


@pytest.fixture(scope="session")
def deep():
    """An insecure context with 12 levels (N = 2^11) for circuits."""
    ctx = CKKSContext.from_preset("toy-n11-deep", allow_insecure=True)
    return ctx


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
