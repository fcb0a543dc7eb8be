import json

import pandas as pd
import pytest

from analysis.check import check, format_check, verdict
from analysis.metrics import comm_change, kendall_tau, memory_table, with_speedup
from aegis.program import PHASES


def _row(strategy, devices, latency, seq=2048, fits=True, attention=0, ffn=0, peak=10, cap=80):
    r = {"model": "m", "seq": seq, "hardware": "h", "devices": devices, "strategy": strategy, "status": "ok",
         "latency_s": latency, "fits": fits, "peak_max_bytes": peak, "capacity_bytes": cap, "comm_total_bytes": 0}
    r.update({f"comm_{p}_bytes": 0 for p in PHASES})
    r["comm_attention_bytes"], r["comm_ffn_bytes"] = attention, ffn
    return r


def test_speedup_efficiency_and_lifted_baseline():
    df = pd.DataFrame([_row("single", 1, 100.0, fits=False), _row("aegis", 4, 25.0), _row("limb", 4, 50.0)])
    s = with_speedup(df).set_index("strategy")
    assert s.loc["aegis", "speedup"] == 4.0 and s.loc["aegis", "efficiency"] == 1.0
    assert s.loc["limb", "efficiency"] == 0.5
    assert s["baseline_lifted"].all()          # one device did not fit: its memory limit was lifted


def test_comm_change_names_every_baseline_and_the_cause_of_minus_100():
    df = pd.DataFrame([_row("aegis", 4, 1, attention=20, ffn=0), _row("limb", 4, 1, attention=1000, ffn=50),
                       _row("tensor", 4, 1, attention=100, ffn=40), _row("token", 4, 1, attention=20, ffn=0)])
    c = comm_change(df).set_index("baseline")
    assert list(c.index) == ["limb", "tensor", "token"]              # each baseline its own row, no silent minimum
    assert c.loc["tensor", "attention_change_pct"] == pytest.approx(-80.0)
    assert c.loc["limb", "attention_change_pct"] == pytest.approx(-98.0)
    assert c.loc["tensor", "ffn_change_pct"] == pytest.approx(-100.0)
    assert "by construction" in c.loc["tensor", "ffn_note"] and c.loc["tensor", "attention_note"] == ""
    assert c.loc["token", "ffn_change_pct"] != c.loc["token", "ffn_change_pct"]      # NaN: token moves nothing
    assert c.loc["token", "ffn_note"] == "neither moves FFN bytes"


def test_bound_names_what_holds_a_configuration_back():
    from analysis.metrics import bound

    base = {"devices": 4, "fits": True, "latency_s": 10.0, "utilisation_mean": 1.0, "utilisation_min": 1.0,
            "efficiency": 1.0, "comm_critical_fraction": 0.0, "critical_sync_s": 0.0, "peak_max_bytes": 1,
            "capacity_bytes": 2}
    assert bound(base).startswith("compute")
    assert bound({**base, "fits": False, "peak_max_bytes": 3 * 2 ** 30}).startswith("memory")
    assert bound({**base, "comm_critical_fraction": 0.2}) == "communication: 20.0 % of the critical path"
    assert bound({**base, "utilisation_mean": 0.5, "utilisation_min": 0.0, "efficiency": 0.5}).startswith("imbalance")
    assert bound({**base, "efficiency": 0.45}).startswith("redundant work")
    assert bound({**base, "critical_sync_s": 1.0}).startswith("synchronisation")


def test_memory_table():
    df = pd.DataFrame([_row("single", 1, 1, peak=100), _row("aegis", 4, 1, peak=31)])
    m = memory_table(df).set_index("strategy")
    assert m.loc["aegis", "memory_change_pct"] == pytest.approx(-69.0)
    assert m.loc["aegis", "peak_over_capacity"] == pytest.approx(31 / 80)


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)


def _run_dir(tmp_path, name, measured, predicted, comm_equal=True, strategy="aegis"):
    d = tmp_path / name
    d.mkdir()
    cb = {"total": 10, "by_phase": {"attention": 10}}
    doc = {"plan": {"model": "tiny", "seq_len": 64, "devices": 2, "strategy": strategy},
           "measured": {"latency_s": measured, "comm_bytes": cb, "peak_memory_bytes": [1, 1]},
           "predicted": {"latency_s": predicted, "comm_bytes": cb if comm_equal else {"total": 11, "by_phase": {}},
                         "peak_memory_bytes": [1, 1]},
           "comm_bytes_match": comm_equal}
    (d / "result.json").write_text(json.dumps(doc))
    for f, t in (("ops_measured.csv", measured), ("ops_predicted.csv", predicted)):
        (d / f).write_text(f"op,kind,phase,layer,device,start,end,bytes_moved\n0,lin_out,ffn,0,0,0,{t},0\n")
    return d


def test_check_passes_and_fails(tmp_path):
    good = [_run_dir(tmp_path, "a", 10.0, 10.5), _run_dir(tmp_path, "b", 20.0, 19.0, strategy="limb")]
    res = check(good)
    assert res.passed and res.median_abs_error == pytest.approx(0.05) and res.comm_mismatches == 0
    assert "PASS" in format_check(res)
    assert verdict(res).startswith("PASS: median |error| 5.0 % <= 10 %")
    slow = [_run_dir(tmp_path, "c", 10.0, 14.0)]
    res = check(slow)
    assert not res.passed
    assert verdict(res) == ("FAIL: median |error| 40.0 % exceeds the 10 % limit (runs beyond it: c +40 %); "
                            "p95 |error| 40.0 % exceeds the 25 % limit (runs beyond it: c +40 %)")
    assert format_check(res).endswith(verdict(res))
    bad_comm = [_run_dir(tmp_path, "d", 10.0, 10.0, comm_equal=False)]
    res = check(bad_comm)
    assert not res.passed and res.comm_mismatches == 1
    assert verdict(res) == "FAIL: communication differs from the plan in 1 runs (d)"
    with pytest.raises(ValueError, match="no result.json"):
        check([tmp_path])


def test_check_lists_unpredicted_client_ops_apart_and_skips_tied_rankings(tmp_path):
    runs = [_run_dir(tmp_path, "x", 10.0, 10.0), _run_dir(tmp_path, "y", 12.0, 10.0, strategy="token")]
    with open(runs[0] / "ops_measured.csv", "a") as f:
        f.write("1,refresh_client,refresh,0,0,10,10.25,0\n")
    res = check(runs)
    assert res.unmodelled == {"refresh_client": pytest.approx(0.25)}
    assert {k["kind"] for k in res.kinds} == {"lin_out"}            # no 100 % error for the client op
    assert res.kendall == {"tiny-64x2": None}                        # both predicted 10 s: nothing to rank
    text = format_check(res)
    assert "refresh_client 0.250 s measured" in text and "no ranking" in text
    ranked = check([_run_dir(tmp_path, "z1", 10.0, 9.0), _run_dir(tmp_path, "z2", 12.0, 11.0, strategy="token")])
    assert ranked.kendall == {"tiny-64x2": 1.0}


def test_plots_for_a_small_sweep(tmp_path):
    from analysis.plots import sweep_plots
    from sim.sweep import SweepSpec, run_sweep

    f = tmp_path / "s.csv"
    run_sweep(SweepSpec(seqs=[128, 256], devices=[1, 2], strategies=["single", "limb", "aegis"]), f, workers=1,
              progress=False)
    paths = sweep_plots(f, tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"scaling.png", "scaling.svg", "memory_2.png", "comm_128_2.png", "comm_256_2.svg"} <= names
    assert len(paths) == 2 * (1 + 2 + 1)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_report_tables_cover_every_regime_and_variant():
    from analysis.reproduce import regime_table, variant_table

    rows = []
    for hw in ("h", "ib"):
        for sched, ovl, f in (("default", "on", 1.0), ("default", "off", 1.25), ("priority", "on", 0.9)):
            for s, g, lat in (("single", 1, 100.0), ("token", 4, 25.0 * f), ("limb", 4, 60.0 * f)):
                r = _row(s, g, lat)
                r.update(hardware=hw, schedule=sched, overlap=ovl, jitter=0.0, comm_critical_fraction=0.1 * (s == "limb"))
                rows.append(r)
    sp = with_speedup(pd.DataFrame(rows))
    rt = regime_table(sp)
    assert "| m | 2048 | ib | 4 | 1.67x (10.0 %) | 4.00x (0.0 %) |" in rt     # default schedule, overlap on only
    vt = variant_table(sp)
    assert "default / overlap off" in vt and "priority / overlap on" in vt
    assert "| token | 0.009 (3.20x) | 0.007 (4.00x) | 0.006 (4.44x) |" in vt   # hours, speedup per variant


def test_plot_labels_never_overlap_and_identical_curves_are_named():
    """predicted_vs_measured stacks its labels at least one text height apart; scaling names a curve
    that coincides with one already drawn (``aegis (= token)``) instead of hiding it."""
    from analysis.plots import _label_heights, _same_curve

    ys = [0.50, 0.51, 0.505, 0.20, 0.99, 0.98]
    hs = _label_heights(ys, gap=0.045)
    assert all(abs(a - b) >= 0.045 - 1e-12 for i, a in enumerate(hs) for b in hs[i + 1:])
    assert max(hs) <= 0.97 and sorted(range(6), key=lambda i: ys[i]) == sorted(range(6), key=lambda i: hs[i])
    drawn = {"limb": ([1, 2, 4], [1.0, 1.6, 2.2]), "token": ([1, 2, 4], [1.0, 2.0, 2.0])}
    assert _same_curve(drawn, [1, 2, 4], [1.0, 2.0, 2.0 * (1 + 1e-12)]) == ("token", "=")
    assert _same_curve(drawn, [1, 2, 4], [1.0, 1.999, 2.0]) == ("token", "≈")
    assert _same_curve(drawn, [1, 2, 4], [1.0, 2.0, 2.5]) is None and _same_curve(drawn, [1, 2], [1.0, 2.0]) is None


def test_sweep_plots_draw_only_the_pairs_a_grid_holds(tmp_path):
    """A grid that is a union of products (16384 tokens on 8 devices only, say) plots without empty panels."""
    from analysis.plots import sweep_plots
    from sim.sweep import SweepGrid, SweepSpec, run_sweep

    grid = SweepGrid([SweepSpec(["bert-base"], [128], [1, 2], ["single", "token"]),
                      SweepSpec(["bert-base"], [256], [1, 4], ["single", "token"])])
    run_sweep(grid, tmp_path / "s.csv", workers=1, progress=False)
    names = {p.stem for p in sweep_plots(tmp_path / "s.csv", tmp_path / "plots")}
    assert names == {"scaling", "comm_128_2", "comm_256_4", "memory_2", "memory_4"}


def test_a_sweep_over_presets_keeps_them_apart(tmp_path):
    """--params is a swept axis: each configuration runs on each preset, the speedup of a preset's row is
    against one device on the same preset, and the plots are drawn per preset plus one comparison."""
    from analysis.metrics import main_regime, presets
    from analysis.plots import sweep_plots
    from sim.sweep import SweepSpec, read_rows, run_sweep

    f = tmp_path / "s.csv"
    spec = SweepSpec(seqs=[128], devices=[1, 2], strategies=["single", "token"], params=["n16-boot-13", "n16-boot"])
    run_sweep(spec, f, workers=1, progress=False)
    df = pd.DataFrame(read_rows(f))
    assert len(df) == 4 and (df["status"] == "ok").all() and presets(df) == ["n16-boot", "n16-boot-13"]
    assert set(main_regime(df)["params"]) == {"n16-boot"}
    assert set(main_regime(df, params="n16-boot-13")["params"]) == {"n16-boot-13"}
    sp = with_speedup(df)
    for p, g in sp.groupby("params"):
        one = float(g[g["devices"] == 1]["latency_s"].iloc[0])
        assert g["baseline_latency_s"].astype(float).eq(one).all()
    by = {(r["params"], int(r["devices"])): r for _, r in df.iterrows()}
    # 13 levels left after bootstrapping: fewer bootstraps, but 1.88x the key bytes
    assert float(by[("n16-boot-13", 1)]["peak_max_bytes"]) > float(by[("n16-boot", 1)]["peak_max_bytes"])
    names = {p.stem for p in sweep_plots(f, tmp_path / "plots")}
    assert names == {"scaling_n16-boot", "scaling_n16-boot-13", "comm_128_2_n16-boot", "comm_128_2_n16-boot-13",
                     "memory_2_n16-boot", "memory_2_n16-boot-13", "presets"}


def test_report_preset_table_puts_presets_side_by_side():
    from analysis.reproduce import preset_table

    rows = []
    for p, f in (("n16-boot", 1.0), ("n16-boot-13", 0.5)):
        for s, g, lat in (("single", 1, 3600.0 * f), ("token", 4, 900.0 * f)):
            r = _row(s, g, lat, peak=2 ** 30 * (10 if p == "n16-boot" else 19), fits=p == "n16-boot")
            r.update(params=p, schedule="default", overlap="on", jitter=0.0)
            rows.append(r)
    sp = with_speedup(pd.DataFrame(rows))
    t = preset_table(sp)
    assert "| strategy | n16-boot | n16-boot-13 |" in t
    assert "| m | 2048 | h | 4 | token | 0.250 h, 10.0 GiB | 0.125 h, 19.0 GiB (does not fit) |" in t
    assert preset_table(sp[sp["params"] == "n16-boot"]) == ""
