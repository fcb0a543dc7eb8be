"""What each HE-program op computes, on any evaluator with the fhe.ckks.Evaluator interface.

The same code runs on encrypted tiles (:class:`fhe.ckks.Evaluator`) and on plaintext slot
vectors (:class:`exec.plain.PlainEvaluator`).  Packing and algorithms are those of
:mod:`aegis.program` (slot(t, c) = c * tb + t); each function returns the op's outputs by
*role* (``out``; ``exp``/``rowpart`` for attn_exp; ``centred``/``var`` for ln_stats).
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from aegis.packing import Packing
from aegis.program import Op
from aegis.workloads import Approximations, ModelConfig
from fhe.circuits import PolynomialEvaluator, chebyshev_fit
from fhe.circuits.attention import HeadMajor, sum_of_products, token_rotations
from fhe.circuits.linear import bsgs_split

from .model import LayerWeights, activation, expand_channels

CT = Any


def rotate_sum(ev: Any, terms: list[tuple[CT, int]]) -> CT:
    """sum_g rot(ct_g, step_g): the giant steps of a BSGS product.

    An evaluator may provide ``rotate_sum`` (limb parallelism aggregates these on the output:
    one reduce-scatter instead of one all-gather per rotation); otherwise rotations and adds.
    """
    if hasattr(ev, "rotate_sum"):
        return ev.rotate_sum(terms)
    acc = None
    for ct, step in terms:
        r = ev.rotate(ct, step) if step else ct
        acc = r if acc is None else ev.add(acc, r)
    return acc


def target_function(fn: str, model: ModelConfig, approx: Approximations) -> Callable[[np.ndarray], np.ndarray]:
    """The function a polynomial of kind ``fn`` approximates for this model (what the fit targets).

    ``exp`` is exp(x / 2^s) when the approximation squares s times afterwards; ``inv_sqrt``
    includes the model's LayerNorm epsilon; ``gelu`` is the model's activation.
    """
    if fn == "exp":
        k = 2.0 ** -approx.exp_squarings
        return lambda x: np.exp(x * k)
    if fn == "inverse":
        return lambda x: 1.0 / x
    if fn == "inv_sqrt":
        return lambda x: 1.0 / np.sqrt(x + model.ln_eps)
    if fn == "gelu":
        return activation(model)
    raise ValueError(f"no approximation target {fn!r}; valid: exp, inverse, inv_sqrt, gelu")


class OpKernels:
    """Op implementations for one model, packing and set of weights."""

    def __init__(self, model: ModelConfig, pk: Packing, weights: list[LayerWeights], approx: Approximations) -> None:
        if pk.token_block < pk.head_dim:
            raise ValueError(f"the executor needs token_block >= head_dim ({pk.token_block} < {pk.head_dim})")
        self.m, self.pk, self.w, self.ap = model, pk, weights, approx
        tb, dh = pk.token_block, pk.head_dim
        t = np.arange(pk.slots) % tb
        c = np.arange(pk.slots) // tb
        self._tok = t
        self._offset = c % dh
        self.cd = pk.channel_tiles(model.d_model)
        self._pts: dict[tuple, Any] = {}
        self._pt_lock = threading.Lock()
        self._matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._fits: dict[tuple, np.ndarray] = {}
        #: weights="encoded": diagonals encoded once and kept; "on_the_fly": encoded at every product
        self.encoded_weights = False

    # ---- plaintexts: constants encoded once per evaluator and level ----------------------------
    def _encoded(self, ev: Any, key: tuple, vec: Callable[[], np.ndarray], level: int, scale: float) -> Any:
        k = (id(ev), key, level, scale)
        pt = self._pts.get(k)
        if pt is None:
            pt = ev.encoder.encode(vec(), level=level, scale=scale)
            with self._pt_lock:
                self._pts[k] = pt
        return pt

    def mulp(self, ev: Any, ct: CT, key: tuple, vec: Callable[[], np.ndarray], cache: bool = True) -> CT:
        """ct * constant plaintext (not rescaled); constants are encoded once per level."""
        if not hasattr(ev, "encoder") or not cache:
            return ev.mul_plain(ct, vec())
        return ev.mul_plain(ct, self._encoded(ev, key, vec, ct.level, ev.params.scale_at(ct.level)))

    def mulp_rescale(self, ev: Any, ct: CT, key: tuple, vec: Callable[[], np.ndarray]) -> CT:
        return ev.rescale(self.mulp(ev, ct, key, vec))

    def addp(self, ev: Any, ct: CT, key: tuple, vec: Callable[[], np.ndarray]) -> CT:
        if not hasattr(ev, "encoder"):
            return ev.add_plain(ct, vec())
        return ev.add_plain(ct, self._encoded(ev, key, vec, ct.level, ct.scale))

    # ---- plaintext helpers ---------------------------------------------------------------------
    def token_mask(self, r: int) -> np.ndarray:
        """1 where a rotation by r stays inside the token block (t < tb - r)."""
        return (self._tok < self.pk.token_block - r).astype(np.float64)

    def offset_mask(self, s: int) -> np.ndarray:
        """1 at channel offset s of every head."""
        return (self._offset == s).astype(np.float64)

    def _padded(self, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """W (d_in, d_out) and b zero-padded to whole channel tiles (padded channels stay zero)."""
        cb = self.pk.channel_block
        rows, cols = -(-w.shape[0] // cb) * cb, -(-w.shape[1] // cb) * cb
        wp = np.zeros((rows, cols))
        wp[: w.shape[0], : w.shape[1]] = w
        bp = np.zeros(cols)
        bp[: b.shape[0]] = b
        return wp, bp

    def _head_major_order(self) -> np.ndarray:
        """Head-major packing: the model channel at each padded position j * Hp + h (h*dh + j), -1 for a padded head."""
        dh, hp, H = self.pk.head_dim, self.pk.channel_block, self.m.heads
        j, h = np.divmod(np.arange(dh * hp), hp)
        return np.where(h < H, h * dh + j, -1)

    def _matrix(self, op: Op) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) of a lin_out op's weight, padded to whole tiles: W is (d_in, d_out) with Q|K|V side by
        side for wqkv, each starting at a tile boundary.  Head-major packing: Q, K, V columns (and the
        output projection's rows) in head-major order (tile j = channel j of every head)."""
        name = op.args["weight"]
        lw = self.w[int(name.split(".")[0][1:])]
        kind = name.split(".")[1]
        hm = self.pk.head_major
        if kind == "wqkv":
            if hm:
                order = self._head_major_order()
                parts = []
                for w, b in ((lw.wq, lw.bq), (lw.wk, lw.bk), (lw.wv, lw.bv)):
                    wp, _ = self._padded(w, b)
                    cols = np.zeros((wp.shape[0], order.size))
                    cols[:, order >= 0] = wp[:, order[order >= 0]]
                    bp = np.zeros(order.size)
                    bp[order >= 0] = b[order[order >= 0]]
                    parts.append((cols, bp))
            else:
                parts = [self._padded(w, b) for w, b in ((lw.wq, lw.bq), (lw.wk, lw.bk), (lw.wv, lw.bv))]
            return np.hstack([w for w, _ in parts]), np.concatenate([b for _, b in parts])
        if kind == "wo" and hm:
            order = self._head_major_order()
            wp, bp = self._padded(lw.wo, lw.bo)
            rows = np.zeros((order.size, wp.shape[1]))
            rows[order >= 0] = wp[order[order >= 0]]
            return rows, bp
        return self._padded(*{"wo": (lw.wo, lw.bo), "w1": (lw.w1, lw.b1), "w2": (lw.w2, lw.b2)}[kind])

    def _diag_pt(self, weight: str, j: int, jo: int, k: int, rot: int) -> np.ndarray:
        """Slot vector of diagonal k of the (input tile j, output tile jo) block, pre-rotated by ``rot`` channels."""
        cb = self.pk.channel_block
        W, _ = self._matrix_cached(weight)
        blk = W[j * cb: (j + 1) * cb, jo * cb: (jo + 1) * cb]
        c = np.arange(cb)
        diag = blk[(c + k) % cb, c]                   # M = blk^T: diag_k[c] = M[c, c+k] = blk[c+k, c]
        return expand_channels(self.pk, np.roll(diag, rot))

    def _matrix_cached(self, weight: str) -> tuple[np.ndarray, np.ndarray]:
        if weight not in self._matrices:
            op = Op(0, "lin_out", "", 0, 0, 0, 0, (), (), 0, 0, (), args={"weight": weight})
            self._matrices[weight] = self._matrix(op)
        return self._matrices[weight]

    def _coeffs(self, fn: str, degree: int, lo: float, hi: float, pre: float = 1.0) -> np.ndarray:
        """Chebyshev fit on [lo, hi] of y -> f(pre y), f the target of ``fn``."""
        key = (fn, degree, lo, hi, pre)
        if key not in self._fits:
            f = target_function(fn, self.m, self.ap)
            self._fits[key] = chebyshev_fit((lambda y: f(pre * y)) if pre != 1.0 else f, (lo, hi), degree)
        return self._fits[key]

    def _poly(self, ev: Any, ct: CT, fn: str, degree: int, interval: tuple[float, float], pre: float = 1.0) -> CT:
        return PolynomialEvaluator(ev).evaluate(ct, self._coeffs(fn, degree, *interval, pre), tuple(interval))

    # ---- ops ----------------------------------------------------------------------------------
    def lin_baby(self, ev: Any, op: Op, x: list[CT]) -> dict[str, list[CT]]:
        tb, n1 = self.pk.token_block, op.args["n1"]
        out = []
        for ct in x:
            rots = ev.rotate_hoisted(ct, [tb * b for b in range(1, n1)])
            out += [rots[tb * b] for b in range(1, n1)]
        return {"out": out}

    def lin_out(self, ev: Any, op: Op, x: list[CT], babies: list[CT], tiles_in: list[int] | None = None,
                bias: bool = True) -> dict[str, list[CT]]:
        """Output tiles of x W; ``tiles_in`` (row split) names the input tiles present -- a partial sum."""
        tb, cb = self.pk.token_block, self.pk.channel_block
        n1, n2 = op.args["n1"], op.args["n2"]
        tiles_in = list(range(op.args["in_tiles"])) if tiles_in is None else tiles_in
        weight = op.args["weight"]
        _, bvec = self._matrix_cached(weight)

        def rot(pos: int, b: int) -> CT:
            return x[pos] if b == 0 else babies[pos * (n1 - 1) + b - 1]

        out = []
        for jo in op.args["out_tiles"]:
            terms = []
            for g in range(n2):
                inner = None
                for pos, j in enumerate(tiles_in):
                    for b in range(n1):
                        k = g * n1 + b
                        if k >= cb:
                            continue
                        term = self.mulp(ev, rot(pos, b), ("diag", weight, j, jo, k, g * n1),
                                         lambda: self._diag_pt(weight, j, jo, k, g * n1), cache=self.encoded_weights)
                        inner = term if inner is None else ev.add(inner, term)
                if inner is not None:
                    terms.append((inner, tb * n1 * g))
            y = ev.rescale(rotate_sum(ev, terms))
            if bias:
                y = self.addp(ev, y, ("bias", weight, jo), lambda: expand_channels(self.pk, bvec[jo * cb: (jo + 1) * cb]))
            trim = op.args.get("trimmed_to_level")
            if trim is not None and trim < y.level:
                y = ev.adjust_level(y, trim)
            out.append(y)
        return {"out": out}

    def _token_rotations(self, ev: Any, ct: CT, direct: bool) -> list[CT]:
        """K^(r) for r = 0 .. tb-1: rotated by r tokens inside the block, masked into place (one level)."""
        tb = self.pk.token_block
        if direct:
            rots = ev.rotate_hoisted(ct, [s for r in range(1, tb) for s in (r, r - tb)])
        else:
            n1, n2 = bsgs_split(tb)
            base = ev.rotate_hoisted(ct, list(range(1, n1)))
            base[0] = ct
            rots = {}
            for a in range(n1):
                steps = [s for b in range(n2) for s in (n1 * b, n1 * b - tb) if s]
                got = ev.rotate_hoisted(base[a], steps)
                got[0] = base[a]
                for b in range(n2):
                    rots[a + n1 * b] = got[n1 * b]
                    rots[a + n1 * b - tb] = got[n1 * b - tb] if n1 * b - tb else base[a]
        out = [self.mulp_rescale(ev, ct, ("ones",), lambda: np.ones(self.pk.slots))]
        for r in range(1, tb):
            both = ev.add(self.mulp(ev, rots[r], ("tok", r), lambda: self.token_mask(r)),
                          self.mulp(ev, rots[r - tb], ("tok-", r), lambda: 1.0 - self.token_mask(r)))
            out.append(ev.rescale(both))
        return out

    def attn_qk(self, ev: Any, op: Op, q: list[CT], ks: list[list[CT]], direct: bool = False) -> dict[str, list[CT]]:
        tb, dh, lg = self.pk.token_block, self.pk.head_dim, self.pk.log_head_dim
        spp = self.pk.score_cts_per_pair
        out = []
        for ti, qt in enumerate(q):
            lqk = min(qt.level, ks[0][ti].level - 1)
            qt = ev.adjust_level(qt, lqk)                    # once per op, as the plan counts it
            for kb in ks:
                kr = self._token_rotations(ev, kb[ti], direct)
                scores: list[CT | None] = [None] * spp
                for r in range(tb):
                    h = ev.mul_relin_rescale(qt, kr[r])
                    for e in range(lg):
                        h = ev.add(h, ev.rotate(h, tb << e))
                    mv = self.mulp_rescale(ev, h, ("off", 0), lambda: self.offset_mask(0))
                    g, s = divmod(r, dh)
                    if s:
                        mv = ev.rotate(mv, -s * tb)
                    scores[g] = mv if scores[g] is None else ev.add(scores[g], mv)
                if self.ap.score_shift:
                    tile = op.args["tiles"][ti]
                    qb = op.block if self.ap.score_shift_position else -1    # a constant shift: one per tile
                    scores = [self.addp(ev, sc, ("shift", op.layer, tile, qb),
                                        lambda: self.shift_vector(op.layer, tile, qb)) for sc in scores]
                out += scores
        return {"out": out}

    def shift_vector(self, layer: int, tile: int, query_block: int = -1) -> np.ndarray:
        """Minus the score shift of (layer, head) in every slot of the head's channels of ``tile``: the
        constant ``score_shift`` or, with ``score_shift_position``, the shift of each slot's query row of
        ``query_block`` (slot (channel, t) holds query ``query_block * token_block + t``)."""
        tb, dh = self.pk.token_block, self.pk.head_dim
        rows = max(query_block, 0) * tb + np.arange(tb)
        # padded heads (zero Q and K) score 0 for every key: shifting them by ln(tokens) + 1 keeps their
        # row sums at 1/e, inside the inverse's interval
        shifts = np.full((self.pk.heads_per_tile, tb), -(math.log(self.pk.seq_len) + 1.0))
        for k in range(self.pk.heads_per_tile):
            head = tile * self.pk.heads_per_tile + k
            if head < self.m.heads:
                shifts[k] = -self.ap.shift(layer, head, rows, self.pk.seq_len)
        return np.repeat(shifts[:, None, :], dh, axis=1).reshape(-1)

    def key_mask(self, key_block: int, g: int, query_block: int) -> np.ndarray:
        """1 where the key of score ciphertext g against ``key_block`` is a real token -- and, for a causal
        model, not after the query (diagonal r = g * head_dim + channel offset; slot (t, c) scores key
        (t + r) mod token_block of the block against query t of ``query_block``)."""
        tb = self.pk.token_block
        r = g * self.pk.head_dim + self._offset
        key = key_block * tb + (self._tok + r) % tb
        ok = key < self.pk.seq_len
        if self.m.causal:
            ok &= key <= query_block * tb + self._tok
        return ok.astype(np.float64)

    def attn_exp(self, ev: Any, op: Op, scores: list[CT], tiles: int) -> dict[str, list[CT]]:
        lo, hi = op.args["interval"]
        e = [self._poly(ev, s, "exp", op.args["degree"], (lo, hi)) for s in scores]
        for _ in range(op.args.get("squarings", 0)):
            e = [ev.mul_relin_rescale(x, x) for x in e]
        if op.args.get("key_mask"):
            kbs, spp = op.args["key_blocks"], self.pk.score_cts_per_pair
            masked = []
            for i, x in enumerate(e):
                kb, g = kbs[(i // spp) % len(kbs)], i % spp
                qb = op.block if self.m.causal else -1           # causal masks depend on the query block too
                masked.append(self.mulp_rescale(ev, x, ("keys", kb, g, qb), lambda: self.key_mask(kb, g, qb)))
            e = masked
        per = len(e) // tiles
        rows = []
        for ti in range(tiles):
            acc = e[ti * per]
            for x in e[ti * per + 1: (ti + 1) * per]:
                acc = ev.add(acc, x)
            rows.append(acc)
        return {"exp": e, "rowpart": rows}

    def attn_av(self, ev: Any, op: Op, probs: list[CT], vs: list[list[CT]], direct: bool = False) -> dict[str, list[CT]]:
        tb, dh, lg = self.pk.token_block, self.pk.head_dim, self.pk.log_head_dim
        spp = self.pk.score_cts_per_pair
        tiles = len(vs[0])
        out = []
        for ti in range(tiles):
            acc = None
            for bi, vb in enumerate(vs):
                vr = self._token_rotations(ev, vb[ti], direct)
                for r in range(tb):
                    g, s = divmod(r, dh)
                    p = probs[(ti * len(vs) + bi) * spp + g]
                    mv = self.mulp_rescale(ev, p, ("off", s), lambda: self.offset_mask(s))
                    if s:
                        mv = ev.rotate(mv, s * tb)
                    for e in range(lg):
                        mv = ev.add(mv, ev.rotate(mv, -(tb << e)))
                    t = ev.mul_relin_rescale(mv, vr[r])
                    acc = t if acc is None else ev.add(acc, t)
            out.append(acc)
        return {"out": out}

    def attn_rowsum(self, ev: Any, op: Op, parts: list[list[CT]]) -> dict[str, list[CT]]:
        tb, lg = self.pk.token_block, self.pk.log_head_dim
        out = []
        for ti in range(len(parts[0])):
            r = parts[0][ti]
            for p in parts[1:]:
                r = ev.add(r, p[ti])
            for e in range(lg):
                r = ev.add(r, ev.rotate(r, tb << e))
            # the mask also divides by rowsum_scale: the row sum enters bootstrapping at most 1 (see lowering)
            sc = float(op.args.get("rowsum_scale", 1.0))
            r = self.mulp_rescale(ev, r, ("rowsum", sc), lambda: self.offset_mask(0) / sc)
            for e in range(lg):
                r = ev.add(r, ev.rotate(r, -(tb << e)))
            out.append(r)
        return {"out": out}

    def attn_norm(self, ev: Any, op: Op, rowsum: list[CT], partials: list[list[CT]]) -> dict[str, list[CT]]:
        out = []
        for ti in range(len(rowsum)):
            c = partials[0][ti]
            for p in partials[1:]:
                c = ev.add(c, p[ti])
            inv = self._poly(ev, rowsum[ti], "inverse", op.args["degree"], tuple(op.args["interval"]),
                             float(op.args.get("rowsum_scale", 1.0)))
            la = min(c.level, inv.level)
            out.append(ev.mul_relin_rescale(ev.adjust_level(c, la), ev.adjust_level(inv, la)))
        return {"out": out}

    def ln_stats(self, ev: Any, op: Op, x: list[CT], res: list[CT] | None) -> dict[str, list[CT]]:
        tb, cb = self.pk.token_block, self.pk.channel_block
        d = op.args["d_model"]
        if res:
            lr = min(x[0].level, res[0].level)
            s = [ev.add(ev.adjust_level(a, lr), ev.adjust_level(b, lr)) for a, b in zip(x, res)]
        else:
            s = list(x)
        tot = s[0]
        for t in s[1:]:
            tot = ev.add(tot, t)
        for e in range(int(math.log2(cb))):
            tot = ev.add(tot, ev.rotate(tot, tb << e))
        mu = [ev.mul_const_rescale(tot, 1.0 / d)] * len(s)
        if d % cb:           # the last tile has padded channels: its mean is masked there, so they stay zero
            last = len(s) - 1
            mu[last] = self.mulp_rescale(ev, tot, ("mean", d), lambda: expand_channels(
                self.pk, (np.arange(cb) + last * cb < d) / d))
        centred = [ev.sub(ev.adjust_level(t, m.level), m) for t, m in zip(s, mu)]
        sq = [ev.mul_relin_rescale(c, c) for c in centred]
        v = sq[0]
        for t in sq[1:]:
            v = ev.add(v, t)
        for e in range(int(math.log2(cb))):
            v = ev.add(v, ev.rotate(v, tb << e))
        return {"centred": centred, "var": [ev.mul_const_rescale(v, 1.0 / d)]}

    def ln_inv(self, ev: Any, op: Op, var: list[CT]) -> dict[str, list[CT]]:
        return {"out": [self._poly(ev, v, "inv_sqrt", op.args["degree"], tuple(op.args["interval"])) for v in var]}

    def ln_apply(self, ev: Any, op: Op, centred: list[CT], inv: CT) -> dict[str, list[CT]]:
        cb = self.pk.channel_block
        name = op.weight.split(".gamma_beta")[0]
        layer, which = int(name.split(".")[0][1:]), name.split(".")[1]
        lw = self.w[layer]
        g, b = (lw.ln1_g, lw.ln1_b) if which == "ln1" else (lw.ln2_g, lw.ln2_b)
        out = []
        la = min(centred[0].level, inv.level)
        inv = ev.adjust_level(inv, la)
        for j, c in enumerate(centred):
            y = ev.mul_relin_rescale(ev.adjust_level(c, la), inv)
            y = self.mulp_rescale(ev, y, ("gamma", name, j), lambda: expand_channels(self.pk, g[j * cb: (j + 1) * cb]))
            out.append(self.addp(ev, y, ("beta", name, j), lambda: expand_channels(self.pk, b[j * cb: (j + 1) * cb])))
        return {"out": out}

    def residual(self, ev: Any, op: Op, x: list[CT], y: list[CT]) -> dict[str, list[CT]]:
        return {"out": [ev.add(a, b) for a, b in zip(x, y)]}

    def gelu(self, ev: Any, op: Op, x: list[CT]) -> dict[str, list[CT]]:
        return {"out": [self._poly(ev, t, "gelu", op.args["degree"], tuple(op.args["interval"])) for t in x]}

    # ---- head-major diagonal attention (aegis.program.attention_diagonal, fhe.circuits.attention) ------------
    def _lay(self, op: Op) -> HeadMajor:
        return HeadMajor(self.pk.slots, self.m.heads, op.args["tokens"])

    def _masks(self, ev: Any) -> Callable[[CT, tuple, Callable[[], np.ndarray]], CT]:
        return lambda ct, key, vec: self.mulp(ev, ct, key, vec)

    def attn_kbaby(self, ev: Any, op: Op, tiles: list[CT]) -> dict[str, list[CT]]:
        """K (or V) tiles masked-rotated by a = 0 .. n1-1 tokens: tile-major, a-minor."""
        lay, n1 = self._lay(op), op.args["n1"]
        out = []
        for ct in tiles:
            r = token_rotations(ev, ct, list(range(n1)), lay, self._masks(ev))
            out += [r[a] for a in range(n1)]
        return {"out": out}

    def attn_dqk(self, ev: Any, op: Op, q: list[CT], kb: list[CT]) -> dict[str, list[CT]]:
        """Score diagonals r = a + n1 b of this op's giant steps b, shifted by n1 b tokens."""
        lay, n1, tokens = self._lay(op), op.args["n1"], op.args["tokens"]
        out = []
        for b in op.args["giants"]:
            qg = [token_rotations(ev, qc, [-n1 * b], lay, self._masks(ev))[-n1 * b] for qc in q]
            for a in range(n1):
                if a + n1 * b >= tokens:
                    break
                out.append(sum_of_products(ev, [(qg[c], kb[c * n1 + a]) for c in range(len(q))]))
        return {"out": out}

    def _diag_key_mask(self, op: Op, a: int) -> np.ndarray:
        """1 where the key of a shifted score diagonal with baby step a is a real token (slot (h, t): key
        (t + a) mod tokens of the op's key block)."""
        lay, tb = self._lay(op), self.pk.token_block
        t = np.arange(lay.segment)
        key = op.args["key_block"] * tb + (t + a) % lay.tokens
        seg = ((key < self.pk.seq_len) & (t < lay.tokens)).astype(np.float64)
        v = np.zeros(self.pk.slots)
        for h in range(self.m.heads):
            v[h * lay.segment:(h + 1) * lay.segment] = seg
        return v

    def attn_dexp(self, ev: Any, op: Op, scores: list[CT]) -> dict[str, list[CT]]:
        """exp of the shifted diagonals (padded keys masked) and the chunk's row sums, un-shifted."""
        lay, n1, tokens = self._lay(op), op.args["n1"], op.args["tokens"]
        lo, hi = op.args["interval"]
        e = [self._poly(ev, s, "exp", op.args["degree"], (lo, hi)) for s in scores]
        for _ in range(op.args.get("squarings", 0)):
            e = [ev.mul_relin_rescale(x, x) for x in e]
        i, row = 0, None
        out = []
        for b in op.args["giants"]:
            na = sum(1 for a in range(n1) if a + n1 * b < tokens)
            chunk = e[i: i + na]
            if op.args.get("pad_keys"):
                chunk = [self.mulp_rescale(ev, x, ("dkeys", op.args["key_block"], a, tokens),
                                           lambda a=a: self._diag_key_mask(op, a)) for a, x in enumerate(chunk)]
            out += chunk
            i += na
            acc = chunk[0]
            for x in chunk[1:]:
                acc = ev.add(acc, x)
            acc = token_rotations(ev, acc, [n1 * b], lay, self._masks(ev))[n1 * b]
            row = acc if row is None else ev.add(row, acc)
        return {"exp": out, "rowpart": [row]}

    def attn_dav(self, ev: Any, op: Op, p: list[CT], vb: list[CT]) -> dict[str, list[CT]]:
        """Context partials of every head-channel tile: per giant step, sum_a P'_(a+n1 b) V^(a), un-shifted."""
        lay, n1, tokens = self._lay(op), op.args["n1"], op.args["tokens"]
        tiles = len(vb) // n1
        lav = min(p[0].level, vb[0].level)
        p = [ev.adjust_level(x, lav) for x in p]
        acc: list[CT | None] = [None] * tiles
        i = 0
        for b in op.args["giants"]:
            as_ = [a for a in range(n1) if a + n1 * b < tokens]
            pg = p[i: i + len(as_)]
            i += len(as_)
            for c in range(tiles):
                s = sum_of_products(ev, [(pg[j], vb[c * n1 + a]) for j, a in enumerate(as_)])
                t = token_rotations(ev, s, [n1 * b], lay, self._masks(ev))[n1 * b]
                acc[c] = t if acc[c] is None else ev.add(acc[c], t)
        return {"out": acc}

    def attn_drowsum(self, ev: Any, op: Op, parts: list[list[CT]]) -> dict[str, list[CT]]:
        """Row sums of a query block / rowsum_scale; padded (head, token) slots set inside the inverse's interval."""
        lay = self._lay(op)
        r = parts[0][0]
        for x in parts[1:]:
            r = ev.add(r, x[0])
        sc = float(op.args["rowsum_scale"])
        r = self.mulp_rescale(ev, r, ("drowsum", sc), lambda: np.full(self.pk.slots, 1.0 / sc))
        lo, hi = op.args["interval"]
        valid = lay.masks(0)[0]
        return {"out": [self.addp(ev, r, ("dfill", lay, lo, hi), lambda: (1.0 - valid) * 0.5 * (lo + hi))]}

    def attn_dnorm(self, ev: Any, op: Op, rowsum: CT, partials: list[list[CT]]) -> dict[str, list[CT]]:
        """Context tiles = (sum of the partials) x inverse(row sum): the inverse once for every tile."""
        inv = self._poly(ev, rowsum, "inverse", op.args["degree"], tuple(op.args["interval"]),
                         float(op.args.get("rowsum_scale", 1.0)))
        out = []
        for ti in range(len(partials[0])):
            c = partials[0][ti]
            for x in partials[1:]:
                c = ev.add(c, x[ti])
            out.append(c)
        la = min(out[0].level, inv.level) if out else inv.level
        inv = ev.adjust_level(inv, la)
        return {"out": [ev.mul_relin_rescale(ev.adjust_level(c, la), inv) for c in out]}
