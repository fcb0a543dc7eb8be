import pytest

from aegis.plan import build_plan
from aegis.program import lower
from aegis.workloads import Workload, get_model


@pytest.fixture(scope="session")
def bert512():
    wl = Workload(get_model("bert-base"), 512)
    prog = lower(wl)
    return wl, prog, {(s, g): build_plan(wl, s, g, program=prog)
                      for s, g in [("single", 1), ("limb", 4), ("tensor", 4), ("token", 4), ("aegis", 4),
                                   ("aegis", 2)]}
