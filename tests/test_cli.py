import json

from aegis.cli import main


def test_demo_runs_and_checks_against_plaintext(capsys):
    assert main(["demo", "--params", "toy-n11-deep", "--insecure"]) == 0
    out = capsys.readouterr().out
    assert "all results match the plaintext reference" in out


def test_toy_preset_is_refused_without_insecure(capsys):
    assert main(["demo", "--params", "toy-n10"]) == 2
    assert "insecure" in capsys.readouterr().err


def test_bench_writes_records(tmp_path, capsys):
    path = tmp_path / "b.json"
    assert main(["bench", "fhe", "--n", "13", "--repeats", "1", "--json", str(path)]) == 0
    recs = json.loads(path.read_text())
    assert {r["op"] for r in recs} >= {"encrypt", "add", "pmul", "hmul", "rotate", "ntt", "rescale", "decrypt"}
    for r in recs:
        assert r["n"] == 8192 and r["backend"] == "numpy" and r["median_s"] > 0
        if r["op"] not in ("ntt",):
            assert r["precision_bits"] > 16, r


def test_bench_rejects_unknown_n(capsys):
    assert main(["bench", "fhe", "--n", "12"]) == 2
    assert "no secure preset" in capsys.readouterr().err
