import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.workloads import Workload, get_model
from exec.model import TINY_APPROX


def tiny_workload(layers: int = 1, seq: int = 64) -> Workload:
    return Workload(get_model("tiny", layers=layers), seq, params_name="toy-n11-deep", insecure=True,
                    approx=TINY_APPROX)


@pytest.fixture(scope="session")
def tiny_wl():
    return tiny_workload


@pytest.fixture(scope="session")
def tiny_plan():
    def make(strategy: str, devices: int, layers: int = 1):
        return build_plan(tiny_workload(layers), strategy, devices, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))
    return make
