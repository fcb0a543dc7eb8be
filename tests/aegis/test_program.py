import networkx as nx
import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig, BootstrapError, BootstrapModel
from aegis.graph import build_graph
from aegis.program import lower
from aegis.trace import polynomial_work
from aegis.workloads import Workload, get_model
from fhe import CKKSContext, Client, Evaluator
from fhe.circuits import PolynomialEvaluator
from fhe.circuits.polynomial import chebyshev_depth
from fhe.ring.counters import count_kernels
from fhe.params import preset


def test_ops_in_execution_order_and_acyclic(bert_small):
    _, prog = bert_small
    for o in prog.ops:
        assert all(s < o.id for s in o.inputs)
        assert o.level >= 0
        assert len(o.inputs) == len(o.in_bytes)
    assert nx.is_directed_acyclic_graph(build_graph(prog))


def test_every_layer_has_every_step(bert_small):
    _, prog = bert_small
    kinds = prog.ops_by_kind()
    for k in ("lin_baby", "lin_out", "attn_qk", "attn_exp", "attn_av", "attn_rowsum", "attn_norm",
              "ln_stats", "ln_inv", "ln_apply", "gelu", "boot_cts", "boot_evalmod", "boot_stc"):
        assert kinds.get(k, 0) > 0, k
    # one weight per linear per layer: qkv, wo, w1, w2
    weights = {o.args["weight"] for o in prog.ops if o.kind == "lin_out"}
    assert len(weights) == 4 * 12
    phases = {o.phase for o in prog.ops}
    assert phases == {"input", "attention", "softmax", "layernorm", "ffn", "gelu", "bootstrap"}


def test_attention_reads_every_key_block(bert_small):
    wl, prog = bert_small
    nb = prog.packing.token_blocks
    per_query = {}
    for o in prog.ops:
        if o.kind == "attn_qk" and o.layer == 0 and o.tile == 0:
            per_query.setdefault(o.block, []).extend(o.args["key_blocks"])
    assert set(per_query) == set(range(nb))
    assert all(sorted(v) == list(range(nb)) for v in per_query.values())


def test_causal_attention_reads_only_earlier_blocks():
    prog = lower(Workload(get_model("gpt2-small"), 512))
    for o in prog.ops:
        if o.kind in ("attn_qk", "attn_av"):
            assert max(o.args["key_blocks"]) <= o.block


def test_bootstraps_refresh_to_the_bootstrap_level():
    p = preset("n16-boot")
    bm = BootstrapModel(p)
    assert bm.parts[0][0] == "boot_cts" and bm.parts[-1][0] == "boot_stc"
    assert bm.output_level == p.max_level - bm.depth == 9
    with pytest.raises(BootstrapError, match="n16-boot"):
        BootstrapModel(preset("n16")).parts
    prog = lower(Workload(get_model("bert-base"), 128, params_name="n16-boot"))
    stc = [o for o in prog.ops if o.kind == "boot_stc" and o.args["stage"] == o.args["stages"] - 1]
    assert stc and all(o.out_bytes == o.args["cts"] * 2 * (bm.output_level + 1) * p.n * 8 for o in stc)


def test_toy_parameters_need_client_aided_refresh():
    wl = Workload(get_model("tiny"), 32, params_name="toy-n11-deep", insecure=True)
    with pytest.raises(BootstrapError, match="client_aided"):
        lower(wl)
    prog = lower(wl, BootstrapConfig(mode="client_aided"))
    refresh = [o for o in prog.ops if o.kind == "refresh_client"]
    assert refresh and all(o.work == () and o.args["client_roundtrip_bytes"] > 0 for o in refresh)


def test_polynomial_trace_matches_the_real_evaluator():
    """The planner's count of a polynomial evaluation is what PolynomialEvaluator really does."""
    ctx = CKKSContext.from_preset("toy-n11-deep", allow_insecure=True)
    client = Client(ctx)
    ev = Evaluator(ctx, client.evaluation_keys)
    coeffs = 1.0 + np.arange(16) / 256.0
    ct = client.encrypt(np.linspace(-0.5, 0.5, ctx.params.slots))
    with count_kernels() as tally:
        out = PolynomialEvaluator(ev).evaluate(ct, coeffs, (-1.0, 1.0))
    work, level = polynomial_work(15, (-1.0, 1.0), ct.level)
    assert level == out.level == ct.level - chebyshev_depth(15)
    assert tally["rescale"].calls == 2 * sum(n for p, _, n in work if p == "rescale")
    assert tally["base_convert"].calls // 2 >= sum(n for p, _, n in work if p == "relin")


def test_same_inputs_same_program(tiny_prog):
    wl, prog = tiny_prog
    again = lower(wl, BootstrapConfig(mode="client_aided"))
    assert [(o.kind, o.inputs, o.work, o.level) for o in prog.ops] == \
        [(o.kind, o.inputs, o.work, o.level) for o in again.ops]


@pytest.mark.parametrize("model", ["bert-base", "bert-large", "minilm-l6", "gpt2-small"])
def test_every_model_lowers_within_its_levels(model):
    """Level accounting of the lowered program (lowering itself refuses work below level 0):
    no op works above its inputs' levels, only a refresh raises a level, one tile is read at
    one level, and a bootstrapped tile comes back at the bootstrap's output level."""
    wl = Workload(get_model(model), 256)
    prog = lower(wl)
    top = BootstrapModel(wl.params(), BootstrapConfig()).output_level
    by_id = {o.id: o for o in prog.ops}
    refresh = ("boot_cts", "boot_evalmod", "boot_stc", "refresh_client")
    tile_level: dict[tuple[int, str], int] = {}
    for o in prog.ops:
        if not o.reads:
            continue
        levels = [lvl for _, _, lvl, _ in o.reads]
        assert o.level <= min(levels), (o.id, o.kind)
        if o.kind not in refresh:                                  # computation only consumes levels
            assert max(lvl for _, lvl, _ in o.work) <= max(levels), (o.id, o.kind)
        for src, name, lvl, _ in o.reads:
            assert tile_level.setdefault((src, name), lvl) == lvl, (o.id, src, name)
            if by_id[src].kind == "boot_stc" and by_id[src].args["stage"] == by_id[src].args["stages"] - 1:
                assert lvl == top, (o.id, src)
    assert sum(o.kind == "boot_stc" for o in prog.ops) > 0       # a whole layer outgrows the 39 levels


def test_a_step_deeper_than_a_refresh_is_refused_with_what_holds_it():
    """MiniLM's fitted softmax (exp by 7 squarings) needs ~13 levels in one step; a bootstrap leaves 9
    on n16-boot: lowering says which op and which preset holds it, as a ValueError, not a lowering bug."""
    from aegis.workloads import WorkloadError
    from exec.minilm_fit import load_approximations

    wl = Workload(get_model("minilm-l6", layers=1), 12, params_name="n16-boot", approx=load_approximations())
    with pytest.raises(WorkloadError, match=r"attn_exp \(layer 0, block 0\) needs about \d+ levels.*"
                                            r"n16-boot.*--params n15 --bootstrap client_aided holds it"):
        lower(wl)
    lower(Workload(get_model("minilm-l6", layers=1), 12, params_name="n15", approx=load_approximations()),
          BootstrapConfig(mode="client_aided"))


def test_work_totals_count_the_program_exactly(bert_small):
    """`aegis plan --json` work: totals are the sums over layers (plus the input), each count equals an
    independent walk over the ops, and the layers of an encoder are identical."""
    from aegis.prims import key_switches
    from aegis.program import WORK_FIELDS, work_totals

    _, prog = bert_small
    w = work_totals(prog.ops)
    assert len(w["per_layer"]) == 12
    assert w["key_switches"] == sum(key_switches(o.work) for o in prog.ops)
    assert w["plaintext_mults"] == sum(n for o in prog.ops for p, _, n in o.work if p == "pmul")
    boots = [o for o in prog.ops if o.kind == "boot_cts" and o.args["stage"] == 0]
    assert w["bootstraps"] == sum(o.args["cts"] for o in boots) > 0
    for f in WORK_FIELDS:
        assert sum(row[f] for row in w["per_layer"]) <= w[f]
    # the input ops do no work: the layers hold all of it, and every layer of BERT is the same
    assert all(sum(row[f] for row in w["per_layer"]) == w[f] for f in WORK_FIELDS)
    assert all(row == w["per_layer"][0] for row in w["per_layer"][1:])

def _bootstraps_by_tensor(prog) -> dict[str, int]:
    """Bootstrapped ciphertexts per tensor (its name without the layer), from the first CoeffToSlot stage."""
    out: dict[str, int] = {}
    for o in prog.ops:
        if o.kind == "boot_cts" and o.args["stage"] == 0:
            t = o.args["tensor"].split(".", 1)[1]
            out[t] = out.get(t, 0) + o.args["cts"]
    return out


def test_the_level_budget_decides_which_tensors_are_bootstrapped():
    """BERT-base at 512 tokens: n16-boot (9 levels) bootstraps the T x T scores; n16-boot-11 holds the
    attention chain (no score bootstraps, but the AV partials of every key chunk are refreshed for the
    normalisation); n16-boot-13 also holds the refreshed hidden state's path to them: no tensor of a
    (query block, key chunk) pair is bootstrapped, and fewer ciphertexts are in all."""
    pair_tensors = {"scores", "exp", "avpart"}
    got = {}
    for name in ("n16-boot", "n16-boot-11", "n16-boot-13"):
        got[name] = _bootstraps_by_tensor(lower(Workload(get_model("bert-base", layers=1), 512, params_name=name)))
    assert got["n16-boot"]["scores"] > 0
    assert "scores" not in got["n16-boot-11"] and got["n16-boot-11"].get("avpart", 0) > 0
    assert not pair_tensors & set(got["n16-boot-13"])
    totals = [sum(got[n].values()) for n in ("n16-boot", "n16-boot-11", "n16-boot-13")]
    assert totals[0] > totals[1] > totals[2], got
