"""--attention diagonal: the head-major program computes the same model, counts what the executor does,
and runs encrypted on several devices with the plan's bytes."""
import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.program import lower, work_totals
from aegis.workloads import Approximations, Workload, WorkloadError, get_model
from exec.model import TINY_APPROX
from exec.plain import CountingEvaluator
from exec.runner import Executor, _PlainClient, promised_precision


def _wl(seq: int, attention: str, layers: int = 1) -> Workload:
    return Workload(get_model("tiny", layers=layers), seq, params_name="toy-n11-deep", insecure=True,
                    approx=TINY_APPROX, attention=attention)


def _plan(seq: int, attention: str, strategy: str = "single", devices: int = 1, layers: int = 1):
    return build_plan(_wl(seq, attention, layers), strategy, devices, "cpu",
                      bootstrap=BootstrapConfig(mode="client_aided"))


@pytest.mark.parametrize("seq,layers", [(40, 2), (600, 1)])
def test_diagonal_attention_equals_the_tile_attention_and_counts_exactly(seq, layers):
    """Plaintext runs of both programs agree with each other and with the exact model (one token block of 40
    tokens; two blocks of 512 with padded keys), and every op of the diagonal program does exactly the
    primitives the program counts."""
    tile, diag = Executor(_plan(seq, "tile", layers=layers)), Executor(_plan(seq, "diagonal", layers=layers))
    assert diag.pk.head_major and diag.pk.token_blocks == -(-seq // 512)
    a, b, exact = tile.run_plaintext(), diag.run_plaintext(), diag.exact()
    assert np.max(np.abs(a - b)) < 1e-5 * np.max(np.abs(exact))
    assert np.max(np.abs(b - exact)) < 1e-5 * np.max(np.abs(exact))
    plan, store = diag.plan, {}
    for op in plan.ops:
        ev = CountingEvaluator(diag.params.slots)
        store.update(diag._outputs(op, diag.execute(ev, op, [store[(s, n)] for s, n, _, _ in op.reads],
                                                    _PlainClient(ev))))
        assert {(p, lvl): n for p, lvl, n in ev.tally.freeze() if p != "add"} == \
            {(p, lvl): n for p, lvl, n in op.work if p not in ("add", "encode")}, (op.id, op.kind)


@pytest.mark.parametrize("strategy,devices", [("single", 1), ("tensor", 2)])
def test_diagonal_attention_runs_encrypted_with_the_plans_bytes(strategy, devices):
    plan = _plan(40, "diagonal", strategy, devices)
    out = Executor(plan).run()
    s = out.result.summary
    assert out.max_abs_error < promised_precision(plan.params) and out.cosine_vs_exact > 0.9999
    assert s["comm_bytes_match"] and s["comm_bytes"]["total"] == sum(c.total_bytes for c in plan.comm)
    assert (s["comm_bytes"]["total"] > 0) == (devices > 1)


def test_bert_base_at_2048_tokens_needs_far_fewer_key_switches():
    """Issue 16's target (<= 0.4 M key switches per layer at 2048 tokens): the diagonal program meets it even
    with the score bootstraps n16-boot forces (exp of depth 6); with an exp of depth 5, or on n16-boot-11 (11
    levels after a bootstrap), the attention chain fits and the scores are not bootstrapped at all."""
    bert = get_model("bert-base", layers=1)
    tile = work_totals(lower(Workload(bert, 2048, params_name="n16-boot", attention="tile")).ops)
    diag = work_totals(lower(Workload(bert, 2048, params_name="n16-boot", attention="diagonal")).ops)
    lean = work_totals(lower(Workload(bert, 2048, params_name="n16-boot", attention="diagonal",
                                      approx=Approximations(exp_degree=7))).ops)
    deep = work_totals(lower(Workload(bert, 2048, params_name="n16-boot-11", attention="diagonal")).ops)
    assert deep["key_switches"] < 200_000 and deep["bootstraps"] < tile["bootstraps"] / 3
    assert tile["key_switches"] > 2_000_000
    assert diag["key_switches"] < 400_000 and lean["key_switches"] < 200_000
    assert lean["bootstraps"] < diag["bootstraps"] < tile["bootstraps"] + 512
    assert lean["plaintext_mults"] < tile["plaintext_mults"]


def test_diagonal_attention_is_refused_where_it_does_not_apply():
    with pytest.raises(WorkloadError, match="causal"):
        lower(Workload(get_model("gpt2-small", layers=1), 256, attention="diagonal"))
    with pytest.raises(WorkloadError, match="token block"):
        Workload(get_model("bert-base"), 256, attention="diagonal", token_block=128)
    with pytest.raises(WorkloadError, match="attention"):
        Workload(get_model("bert-base"), 256, attention="rows")


def test_auto_picks_the_program_with_less_work_where_the_diagonal_form_applies():
    """attention="auto" (the default): diagonal for BERT-base at 2048 tokens on n16-boot-11 (its chain fits the
    11 levels a bootstrap leaves), tile at 512 tokens (a 2048-token block would be mostly padding), tile on
    n16-boot (9 levels: every score diagonal would be bootstrapped), tile for the token strategy when there are
    fewer blocks than devices, tile for causal models; the plan records the form chosen."""
    bert = get_model("bert-base", layers=1)
    assert Workload(bert, 2048).attention == "auto"
    pick = lambda seq, params, strategy="aegis", devices=4, model=bert: build_plan(  # noqa: E731
        Workload(model, seq, params_name=params), strategy, devices, "h100-sxm").workload.attention
    assert pick(2048, "n16-boot-11") == "diagonal"
    assert pick(512, "n16-boot-11") == "tile"
    assert pick(2048, "n16-boot") == "tile"
    assert pick(2048, "n16-boot-11", "token", 4) == "tile"
    assert pick(2048, "n16-boot-11", model=get_model("gpt2-small", layers=1)) == "tile"
    assert lower(Workload(bert, 2048, params_name="n16-boot-11")).workload.attention == "diagonal"
