"""The fused / 32-bit kernel model (fhe.costs.FusedCosts) and the h100-sxm-sota profile it drives."""
import json
import math

import pytest

from aegis.prims import PRIMS, prim_cost, prim_cost_styled
from fhe import costs
from fhe.params import preset
from sim import kernel_bench
from sim.compute import KernelModel
from sim.profile import ProfileError, load_spec, parse_spec

BOOT = preset("n16-boot")
LEVELS = (BOOT.max_level, 24, BOOT.application_top, 1, 0)


@pytest.mark.parametrize("level", LEVELS)
def test_fused_launches_never_exceed_unfused(level):
    """Every primitive: a fused library issues at most as many kernels as our unfused rings, in either word
    size; and it does the same modular arithmetic while moving no more bytes (64-bit words)."""
    for prim in PRIMS:
        unfused = prim_cost(BOOT, prim, level)
        for word in (costs.WORD64, costs.WORD32):
            assert prim_cost_styled(BOOT, prim, level, True, word).calls <= unfused.calls, (prim, word)
        fused = prim_cost_styled(BOOT, prim, level, True)
        assert fused.mod_ops == unfused.mod_ops, prim
        assert fused.bytes_moved <= unfused.bytes_moved, prim


def test_fused_launch_counts_are_the_table():
    """A key switch is ModUp + inner product + ModDown launches of the table, whatever the digits."""
    t = costs.FUSED_LAUNCHES
    for level in LEVELS[:4]:
        assert prim_cost_styled(BOOT, "relin", level, True).calls == t.mod_up + t.inner_product + t.mod_down
        assert prim_cost_styled(BOOT, "rescale", level, True).calls == t.rescale
    assert prim_cost(BOOT, "relin", BOOT.max_level).calls > 40       # 5 digits, one launch per step


def test_unfused_requires_64_bit_words():
    with pytest.raises(ValueError, match="64-bit"):
        prim_cost_styled(BOOT, "rot", 5, False, costs.WORD32)


def test_word_size_shapes():
    """64-bit: the parameter set's own limbs.  32-bit: enough 30-bit primes for the same log Q_l and log P,
    the same digit count, and fewer bytes per ciphertext (primes of 32-50 bits waste a 64-bit word)."""
    for level in LEVELS:
        s = costs.shape(BOOT, level)
        assert (s.q, s.p, s.word_bytes) == (level + 1, BOOT.p_count, 8)
        assert sum(s.digits) == sum(len(d) for d in BOOT.digits(level))
        w = costs.shape(BOOT, level, costs.WORD32)
        log_q = sum(math.log2(q) for q in BOOT.q_primes[:level + 1])
        assert (w.q - 1) * 30 < log_q <= w.q * 30
        assert w.p * 30 >= sum(math.log2(p) for p in BOOT.p_primes)
        assert len(w.digits) == len(BOOT.digits(level)) and sum(w.digits) == w.q
        assert max(w.digits) * 30 <= w.p * 30 + 30                     # P still covers a digit
        assert (w.q + w.p) * w.limb < (s.q + s.p) * s.limb
    top = costs.shape(BOOT, BOOT.max_level, costs.WORD32)
    assert (top.q, top.p) == (46, 12)
    # a rescale divides by one of our primes: one 64-bit limb, one or two 30-bit limbs
    assert {costs.shape(BOOT, lv, costs.WORD32).drop for lv in range(1, BOOT.max_level + 1)} <= {1, 2}
    with pytest.raises(ValueError):
        costs.WordSize(4, 40)


def test_sota_profile_reproduces_each_cited_figure():
    """Every published figure the profile cites (at its ring degree) comes out of the simulator's kernel model
    (sim.compute.KernelModel on the profile: fused launches, 32-bit words, its efficiencies) within 20 %."""
    spec = load_spec("h100-sxm-sota")
    figs = kernel_bench.figures(spec)
    assert figs, "the profile cites no figure"
    for name, f in figs.items():
        assert f["source"] and f["seconds"] > 0 and int(f["log_n"]) == 16
    rows = {r.primitive: r for r in kernel_bench.rows(spec, BOOT)}
    for name, f in figs.items():
        r = rows[name]
        assert r.published_s == f["seconds"]
        assert 0.8 <= r.ratio <= 1.2, (name, r.seconds, f["seconds"])
    # the figure is reached through the model, not stored: the same work on the roofline profile is ~4x slower
    km = KernelModel(load_spec("h100-sxm"), BOOT)
    work, _ = kernel_bench.primitive_work(BOOT, "bootstrap")
    assert km.work_time(work) > 3 * rows["bootstrap"].seconds
    assert rows["bootstrap"].fused_launches < rows["bootstrap"].unfused_launches / 4


def test_roofline_profile_keeps_its_kernels():
    """h100-sxm (no kernels / word fields) stays the unfused 64-bit roofline: the floor every figure used."""
    spec = load_spec("h100-sxm")
    assert (spec.device.kernels, spec.device.word_bits) == ("unfused", 64)
    km = KernelModel(spec, BOOT)
    c = prim_cost(BOOT, "rot", 9)
    d = spec.device
    want = max(c.bytes_moved / (d.hbm_bytes_per_s * d.memory_efficiency),
               c.mod_ops / (d.mod_ops_per_s * d.compute_efficiency)) + c.calls * d.launch_overhead_s
    assert km.prim_time("rot", 9) == pytest.approx(want)


def _raw(**device):
    raw = json.loads(json.dumps(load_spec("h100-sxm").raw))
    raw["device"].update(device)
    return raw


def test_profile_fields_are_checked():
    assert parse_spec(_raw(kernels="fused", word_bits=32)).device.prime_bits == 30
    for bad, msg in [({"kernels": "magic"}, "device.kernels"), ({"word_bits": 16}, "device.word_bits"),
                     ({"word_bits": 32}, "needs device.kernels"),
                     ({"kernels": "fused", "word_bits": 32, "prime_bits": 40}, "device.prime_bits"),
                     ({"word_bits": "32"}, "device.word_bits")]:
        with pytest.raises(ProfileError, match=msg):
            parse_spec(_raw(**bad))


def test_bench_kernels_cli(capsys, tmp_path):
    from aegis.cli import main

    out = tmp_path / "k.json"
    assert main(["bench", "kernels", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bootstrap" in text and "31.20" in text and "Cheddar" in text
    rec = json.loads(out.read_text())
    assert {r["primitive"] for r in rec["rows"]} == set(kernel_bench.PRIMITIVES)
    assert main(["bench", "kernels", "--hardware", "no-such-profile"]) == 2


def test_compute_shares_add_up():
    """simulate's compute by phase / kind: device-seconds that add up to the devices' busy time, and the
    printed shares (linear layers apart) from them."""
    from aegis.cli import compute_share_lines
    from aegis.plan import build_plan
    from aegis.workloads import Workload, get_model
    from sim.engine import simulate

    plan = build_plan(Workload(get_model("bert-base", layers=1), 128), "token", 2, "h100-sxm-sota")
    s = simulate(plan, load_spec("h100-sxm-sota")).summary
    by_phase, by_kind = s["compute_by_phase_s"], s["compute_by_kind_s"]
    busy = sum(u * s["latency_s"] for u in s["utilisation"])
    assert sum(by_phase.values()) == pytest.approx(busy, rel=1e-9)
    assert sum(by_kind.values()) == pytest.approx(busy, rel=1e-9)
    assert by_phase["bootstrap"] > 0 and by_kind["lin_out"] > 0
    lines = compute_share_lines(by_phase, by_kind)
    assert lines[0].startswith("compute ") and "bootstrap" in lines[0] and "linear layers" in lines[1]
    assert compute_share_lines({}, {}) == []
