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
    prog = lower(Workload(get_model("bert-base"), 128))
    stc = [o for o in prog.ops if o.kind == "boot_stc"]
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
    prog = lower(Workload(get_model(model), 256))
    assert all(lvl >= 0 for o in prog.ops for _, lvl, _ in o.work)
    assert all(lvl >= 1 for o in prog.ops for p, lvl, _ in o.work if p == "rescale")
