import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.program import lower
from aegis.workloads import Workload, get_model


@pytest.fixture(scope="session")
def bert_small():
    """BERT-base (12 layers, secure n16-boot parameters: Q, K and V reach attention without a bootstrap) at 512
    tokens: 4 token blocks."""
    wl = Workload(get_model("bert-base"), 512, params_name="n16-boot")
    return wl, lower(wl)


@pytest.fixture(scope="session")
def tiny_prog():
    """The tiny model on an insecure toy set with client-aided refreshes (what the CPU executor runs)."""
    wl = Workload(get_model("tiny", layers=2), 64, params_name="toy-n11-deep", insecure=True)
    return wl, lower(wl, BootstrapConfig(mode="client_aided"))
