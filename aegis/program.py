"""The HE program: a Transformer lowered to operations on ciphertext tiles.

Packing is :mod:`aegis.packing` (tiles of token_block tokens x channel_block channels,
channel-major).  Every op works on whole ciphertexts of one token block (attention ops on
one query block and a *chunk* of key blocks), so token blocks stay explicit.  An op is
coarse: it stands for a repeated inner loop (all baby steps of a tile, all score diagonals
of a block pair) and carries the exact count of primitives it performs (:mod:`aegis.prims`)
at the levels it performs them, so BERT-base at 8192 tokens stays a graph of tens of
thousands of nodes.

Op kinds and what the executor runs for each (slot(t, c) = c * tb + t, tb = token_block,
cb = channel_block, dh = head dim):

``input``          the client's encrypted embedding tiles of block i, fresh at the level a bootstrap
                   returns (the top level when refreshes are client-aided).
``lin_baby``       hoisted baby-step rotations of one input tile by ``tb * b``, b = 1 .. n1-1.
``lin_out``        one output tile of ``x W``: for every input tile and each of its cb block
                   diagonals a plaintext product (diagonals encoded on the fly or resident),
                   giant-step rotations by ``tb * n1 * g``, one rescale (depth 1).
``attn_qk``        scores of query block i against the key blocks of one chunk, tile j:
                   for every diagonal r < tb, ``K^(r) = rot_r(K) m_r + rot_(r-tb)(K) (1-m_r)``
                   (hoisted), ``Q * K^(r)``, a head-aligned rotate-and-sum over dh channels, and
                   a mask/rotation that packs diagonal r at channel offset ``r mod dh``: dh
                   diagonals share one ciphertext (``score_cts_per_pair`` per key block).
``attn_exp``       the exp polynomial on those score ciphertexts (optionally ``exp_squarings``
                   squarings: exp(x) = p(x)^(2^s), p ~ exp(x / 2^s)), times a 0/1 key mask when the
                   last token block is padded (padded keys get zero weight) or the model is causal
                   (keys after the query get zero weight); their sum (row-sum partial).
``attn_av``        ``sum_r P_r * V^(r)``: each packed diagonal masked, moved to offset 0 and
                   replicated over the head's channels, times the token-rotated V.
``attn_rowsum``    row sums of one query block: partials of all chunks added, rotate-and-sum
                   within each head, replicated over the head's channels.
``attn_norm``      context = (sum of the chunks' AV partials) x inverse(row sum) (the inverse
                   is a Chebyshev polynomial).  Normalising the context instead of the
                   probabilities keeps the softmax streaming over key chunks (no T x T store).
``ln_stats``       LayerNorm of block i (after the residual add, post-norm): mean by a
                   rotate-and-sum over the cb channels and the tiles, centred tiles, variance.
``ln_inv``         1/sqrt(variance) by a Chebyshev polynomial.
``ln_apply``       centred tile x inverse x gamma + beta.
``residual``       x + f(x) (pre-norm models).
``gelu``           the GELU polynomial on one tile.
``boot_cts``/``boot_evalmod``/``boot_stc``  bootstrapping stages (:mod:`aegis.bootstrap_model`: one op per
                   CoeffToSlot / SlotToCoeff factor, ``args["stage"]`` of ``args["stages"]``);
``refresh_client`` the explicit client-aided refresh when bootstrapping is off.

Bootstraps are inserted where an op needs more levels than its input has left
(``_ensure``), on the tensor that runs short, tile by tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from fhe.circuits.attention import bsgs_split as diagonal_split
from fhe.circuits.attention import shift_steps
from fhe.circuits.linear import bsgs_split
from fhe.params import CKKSParameters

from .bootstrap_model import BootstrapConfig, BootstrapModel
from .packing import Packing
from .prims import KEY_PRIMS, Tally, Work, ct_bytes, limb_bytes, merged, scaled
from .trace import polynomial_work
from .workloads import Workload, WorkloadError

PHASES = ("input", "attention", "softmax", "layernorm", "ffn", "gelu", "bootstrap")
#: key blocks per attention op: at most this many chunks per query block
MAX_KEY_CHUNKS = 4
#: channel tiles of one tensor are grouped into at most this many ops per token block
MAX_TILE_GROUPS = 8
#: diagonal attention: the giant steps of one (query block, key block) pair are split into at most this many ops
MAX_GIANT_CHUNKS = 4

Key = tuple[int, ...]


@dataclass(slots=True, eq=False)
class Op:
    """One node of the HE program.

    Attributes:
        id: index in :attr:`Program.ops`.
        kind: op kind (module docstring).
        phase: one of :data:`PHASES`.
        layer: Transformer layer (-1 for the input).
        block: token block of the op's output (the query block for attention).
        tile: output channel tile, or -1 when the op covers every tile of its block.
        level: level the op works at (its lowest input level).
        inputs: ids of the ops whose outputs it reads.
        in_bytes: bytes read from each of ``inputs`` (same order).
        out_cts: ciphertexts it produces.
        out_bytes: bytes of those ciphertexts.
        work: ``(prim, level, count)`` it performs.
        rotations: rotation steps (slots) whose Galois keys it needs (+ "conj" is step 0).
        plaintexts: weight plaintexts it multiplies by (diagonals), at ``level``.
        weight: weight slice the plaintexts come from ("" if none).
        weight_raw_bytes: raw (float64) bytes of that weight slice.
        scratch_bytes: transient memory while it runs (extended digits, working ciphertexts).
        args: what the executor needs beyond the above (key blocks, BSGS split, polynomial).
        reads: ``(source op, tile name, level, bytes)`` for every tile it reads: what crosses an edge.
    """

    id: int
    kind: str
    phase: str
    layer: int
    block: int
    tile: int
    level: int
    inputs: tuple[int, ...]
    in_bytes: tuple[int, ...]
    out_cts: int
    out_bytes: int
    work: Work
    rotations: tuple[int, ...] = ()
    plaintexts: int = 0
    weight: str = ""
    weight_raw_bytes: int = 0
    scratch_bytes: int = 0
    args: dict[str, Any] = field(default_factory=dict)
    reads: tuple[tuple[int, str, int, int], ...] = ()

    @property
    def key_level(self) -> int:
        """Highest level at which the op key-switches (the level its evaluation keys must cover); -1 if none."""
        return max((lvl for p, lvl, _ in self.work if p in KEY_PRIMS or p == "hoist"), default=-1)


@dataclass
class Tensor:
    """Ciphertexts of one activation: ``src[key]`` is the op that produced the tile(s) at ``key``.

    Keys are ``(block, tile)``, ``(block,)`` or ``(block, chunk, tile)``; ``cts[key]`` ciphertexts each.
    """

    name: str
    level: int
    src: dict[Key, int]
    cts: dict[Key, int]


#: the op kinds of CKKS bootstrapping (one op per stage; the executor runs them on whole ciphertexts only)
BOOT_KINDS = ("boot_cts", "boot_evalmod", "boot_stc")


@dataclass
class Program:
    """The lowered workload: ops in a valid execution order (every input precedes its consumer)."""

    workload: Workload
    params: CKKSParameters
    packing: Packing
    bootstrap: BootstrapConfig
    ops: list[Op]
    outputs: list[int]
    key_chunks: list[tuple[int, ...]]

    def ops_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.ops:
            out[o.kind] = out.get(o.kind, 0) + 1
        return out


#: what ``work_totals`` counts: key switches (:data:`aegis.prims.KEY_PRIMS`), plaintext multiplies
#: (``pmul``), ciphertext-ciphertext multiplies (``tensor``) and bootstraps
WORK_FIELDS = ("key_switches", "plaintext_mults", "ciphertext_mults", "bootstraps")


def work_totals(ops: list[Op]) -> dict[str, Any]:
    """Primitive counts of a program: ``{field: count}`` for the whole model (:data:`WORK_FIELDS`) plus
    ``per_layer`` (a list, layer 0 first, of the same four counts; the input's ops count in the total only).

    A bootstrap is one ciphertext through CoeffToSlot, EvalMod and SlotToCoeff (the first ``boot_cts``
    stage of a tile, weighted by its ciphertexts); a key switch is one rotation, relinearisation,
    hoisted rotation or giant step (a hoisted group's shared ModUp is not a key switch of its own)."""
    layers: dict[int, list[int]] = {}
    for o in ops:
        row = layers.setdefault(o.layer, [0, 0, 0, 0])
        for p, _, n in o.work:
            if p in KEY_PRIMS:
                row[0] += n
            elif p == "pmul":
                row[1] += n
            elif p == "tensor":
                row[2] += n
        if o.kind == "boot_cts" and o.args.get("stage", 0) == 0:
            row[3] += int(o.args.get("cts", o.out_cts))
    total = [sum(r[k] for r in layers.values()) for k in range(4)]
    per = [dict(zip(WORK_FIELDS, layers.get(n, [0, 0, 0, 0]))) for n in range(max(layers, default=-1) + 1)]
    return {**dict(zip(WORK_FIELDS, total)), "per_layer": per}


def tile_groups(tiles: int, offset: int = 0) -> list[tuple[int, ...]]:
    """Split ``tiles`` channel tiles into at most :data:`MAX_TILE_GROUPS` contiguous groups."""
    size = -(-tiles // MAX_TILE_GROUPS)
    return [tuple(range(offset + a, offset + min(tiles, a + size))) for a in range(0, tiles, size)]


class _Lowering:
    def __init__(self, wl: Workload, boot: BootstrapConfig) -> None:
        self.wl = wl
        self.m = wl.model
        self.p = wl.params()
        self.pk = Packing.for_model(self.m, self.p.slots, wl.seq_len, wl.token_block, wl.attention == "diagonal")
        self.boot_cfg = boot
        self.boot = BootstrapModel(self.p, boot)
        self.ops: list[Op] = []
        self.nb = self.pk.token_blocks
        self.cd = self.pk.channel_tiles(self.m.d_model)
        self.cf = self.pk.channel_tiles(self.m.d_ff)
        nc = min(self.nb, MAX_KEY_CHUNKS)
        bounds = [round(c * self.nb / nc) for c in range(nc + 1)]
        self.chunks = [tuple(range(bounds[c], bounds[c + 1])) for c in range(nc)]
        self.ap = wl.approx
        self.K = self.p.p_count
        self.hgroups = tile_groups(self.cd)

    # ---- helpers ------------------------------------------------------------------------
    def ctb(self, level: int, cts: int = 1) -> int:
        return ct_bytes(self.p, level, cts)

    def ext_bytes(self, level: int) -> int:
        """Memory of one polynomial's ModUp output: every digit extended to Q_l and P."""
        return len(self.p.digits(level)) * (level + 1 + self.K) * limb_bytes(self.p)

    def emit(self, kind: str, phase: str, layer: int, block: int, tile: int, level: int,
             reads: list[tuple[Tensor, Key]], work: Tally | Work, outs: int, out_bytes: int,
             **extra: Any) -> int:
        acc: dict[int, int] = {}
        parts: dict[tuple[int, str, int], int] = {}
        for t, k in reads:
            sid = t.src[k]
            b = self.ctb(t.level, t.cts[k])
            acc[sid] = acc.get(sid, 0) + b
            parts[(sid, f"{t.name}{list(k)}", t.level)] = b
        w = work.freeze() if isinstance(work, Tally) else work
        for prim, lvl, _ in w:
            if lvl < 0 or (prim == "rescale" and lvl < 1):
                raise WorkloadError(self._out_of_levels(kind, layer, block, prim, lvl))
        op = Op(len(self.ops), kind, phase, layer, block, tile, level, tuple(acc), tuple(acc.values()),
                outs, out_bytes, w, reads=tuple((s, name, lvl, b) for (s, name, lvl), b in parts.items()), **extra)
        self.ops.append(op)
        return op.id

    def share(self, oid: int, t: Tensor, parts: list[tuple[Key, int]]) -> None:
        """Op ``oid`` produces several keys of ``t``, ``parts`` = (key, ciphertexts) in the order of its output
        list: record which slice of that list each key's readers take (``args["slices"]``: read name ->
        [start, count]), so that a reader gets (and a transfer carries) exactly the tiles the plan counts."""
        sl = self.ops[oid].args.setdefault("slices", {})
        start = 0
        for key, n in parts:
            t.src[key], t.cts[key] = oid, n
            sl[f"{t.name}{list(key)}"] = [start, n]
            start += n

    def _out_of_levels(self, kind: str, layer: int, block: int, prim: str, lvl: int) -> str:
        """Why an op cannot be lowered: one step of it needs more levels than a refreshed ciphertext has.

        A step deeper than what a refresh (client-aided or bootstrapped) leaves would run below level 0:
        name the op, the level, and the secure presets whose client-aided refresh leaves enough.
        """
        from fhe.params import preset, preset_names

        how = "a client-aided refresh" if self.boot_cfg.mode == "client_aided" else "a bootstrap"
        need = self.boot.output_level - lvl + (prim == "rescale")
        fits = [n for n in preset_names(include_toy=False)
                if BootstrapModel(preset(n), BootstrapConfig(mode="client_aided")).output_level >= need]
        works = (f"--params {fits[0]} --bootstrap client_aided holds it" if fits else
                 "no secure preset holds it") + " (or lower the approximation degrees)"
        return (f"{kind} (layer {layer}, block {block}) needs about {need} levels in one step, more than "
                f"{self.p.name} leaves after {how} ({self.boot.output_level}): it would do {prim} at level {lvl}; "
                + works)

    # ---- levels and bootstrapping ----------------------------------------------------------
    def ensure(self, t: Tensor, need: int, layer: int) -> Tensor:
        """``t`` with at least ``need`` levels left: bootstrap every tile when it runs short."""
        if t.level >= need:
            return t
        top = self.boot.output_level
        if need > top:
            raise WorkloadError(
                f"a step needs {need} levels but a bootstrapped ciphertext has {top} "
                f"({self.p.name}, bootstrap depth {self.boot.depth}); use a preset with more levels "
                "or lower approximation degrees")
        src: dict[Key, int] = {}
        for key, sid in t.src.items():
            cts = t.cts[key]
            block = key[0]
            tile = key[-1] if len(key) > 1 else -1
            prev: tuple[Tensor, Key] = (t, key)
            stage: dict[str, int] = {}
            for name, work, lin, lout, rots in self.boot.parts:
                w = scaled(work, cts)
                s_i = stage[name] = stage.get(name, -1) + 1
                last = s_i == self.boot.stages(name) - 1
                extra: dict[str, Any] = {"args": {"tensor": t.name, "cts": cts, "stage": s_i,
                                                  "stages": self.boot.stages(name)}}
                if name == "refresh_client":
                    extra["args"]["client_roundtrip_bytes"] = self.ctb(t.level, cts) + self.ctb(lout, cts)
                    extra["args"]["level_out"] = lout
                # CoeffToSlot splits every ciphertext into real and imaginary halves; EvalMod keeps both
                outs = 2 * cts if (name == "boot_cts" and last) or name == "boot_evalmod" else cts
                nid = self.emit(name, "bootstrap", layer, block, tile, lin, [prev], w, outs, self.ctb(lout, outs),
                                rotations=rots + ((0,) if name == "boot_cts" and last else ()), args=extra["args"],
                                scratch_bytes=self.ext_bytes(max(lin, lout)) + self.ctb(max(lin, lout), 2))
                prev = (Tensor(t.name, lout, {key: nid}, {key: outs}), key)
            src[key] = prev[0].src[key]
        return Tensor(t.name, top, src, dict(t.cts))

    def trim(self, t: Tensor, level: int) -> Tensor:
        """``t`` brought down to ``level`` by the ops that produce it (adjust_level: one product and one
        rescale at ``level + 1``), so it is stored and sent with only the limbs its readers use."""
        if t.level <= level:
            return t
        for key, sid in t.src.items():
            op = self.ops[sid]
            cts = t.cts[key]
            if op.out_cts != cts:          # the op also produces other tiles: leave it
                return t
        for key, sid in t.src.items():
            op = self.ops[sid]
            cts = t.cts[key]
            op.work = merged(op.work, (("pmul", level + 1, cts), ("rescale", level + 1, cts)))
            op.out_bytes = self.ctb(level, cts)
            op.args["trimmed_to_level"] = level
        return Tensor(t.name, level, dict(t.src), dict(t.cts))

    # ---- building blocks ---------------------------------------------------------------------
    def input(self) -> Tensor:
        # With bootstrapping, the client encrypts at the level a bootstrapped ciphertext has: every
        # layer then has the same shape and no key is needed above bootstrapping's own levels.
        top = self.boot.output_level if self.boot_cfg.mode == "ckks" else self.p.application_top
        src, cts = {}, {}
        for i in range(self.nb):
            for g, grp in enumerate(self.hgroups):
                src[(i, g)] = self.emit("input", "input", -1, i, g, top, [], (), len(grp), self.ctb(top, len(grp)),
                                        args={"tiles": list(grp)})
                cts[(i, g)] = len(grp)
        return Tensor("x", top, src, cts)

    def linear(self, x: Tensor, d_in: int, groups: list[tuple[int, ...]], d_out_raw: int, weight: str,
               layer: int, phase: str, name: str) -> Tensor:
        """x W for every token block: one op for the hoisted baby steps of all input tiles, one per output group."""
        x = self.ensure(x, 1, layer)
        lvl, tb, cb = x.level, self.pk.token_block, self.pk.channel_block
        cin = self.pk.channel_tiles(d_in)
        n1, n2 = bsgs_split(cb)
        baby_rots = tuple(tb * b for b in range(1, n1))
        giant_rots = tuple(tb * n1 * g for g in range(1, n2))
        baby_work = Tally().add("hoist", lvl, cin if n1 > 1 else 0).add("hrot", lvl, cin * (n1 - 1)).freeze()
        diags = cin * cb
        works: dict[int, Work] = {}
        for size in {len(g) for g in groups}:
            w = Tally().add("pmul", lvl, diags * size).add("add", lvl, diags * size) \
                .add("giant", lvl, (n2 - 1) * size).add("gout", lvl, size).add("add", lvl, (n2 - 1) * size) \
                .add("rescale", lvl, size)
            if self.wl.weights == "on_the_fly":
                w.add("encode", lvl, diags * size)
            works[size] = w.freeze()
        raw_tile = d_in * min(cb, d_out_raw) * 8
        src, cts = {}, {}
        for i in range(self.nb):
            xkeys = [k for k in x.src if k[0] == i]
            babies = Tensor(f"{x.name}.baby", lvl, {}, {})
            bid = self.emit("lin_baby", phase, layer, i, -1, lvl, [(x, k) for k in xkeys], baby_work,
                            cin * (n1 - 1), self.ctb(lvl, cin * (n1 - 1)), rotations=baby_rots,
                            scratch_bytes=self.ext_bytes(lvl), args={"n1": n1, "in_tiles": cin})
            babies.src[(i,)], babies.cts[(i,)] = bid, cin * (n1 - 1)
            reads = [(x, k) for k in xkeys] + [(babies, (i,))]
            for g, grp in enumerate(groups):
                src[(i, g)] = self.emit(
                    "lin_out", phase, layer, i, g, lvl, reads, works[len(grp)], len(grp), self.ctb(lvl - 1, len(grp)),
                    rotations=giant_rots, plaintexts=diags * len(grp), weight=f"{weight}[{g}]",
                    weight_raw_bytes=raw_tile * len(grp), scratch_bytes=self.ctb(lvl, 2) + self.ext_bytes(lvl),
                    args={"weight": weight, "out_tiles": list(grp), "in_tiles": cin, "n1": n1, "n2": n2})
                cts[(i, g)] = len(grp)
        return Tensor(name, lvl - 1, src, cts)

    def poly_tile(self, x: Tensor, kind: str, phase: str, degree: int, interval: tuple[float, float],
                  layer: int, name: str) -> Tensor:
        """A Chebyshev polynomial on every tile of ``x`` (one op per key)."""
        need = _poly_depth(degree, interval)
        x = self.ensure(x, need, layer)
        work, out = polynomial_work(degree, interval, x.level)
        src = {}
        for key, _ in x.src.items():
            cts = x.cts[key]
            src[key] = self.emit(kind, phase, layer, key[0], key[-1] if len(key) > 1 else -1, x.level, [(x, key)],
                                 scaled(work, cts), cts, self.ctb(out, cts),
                                 scratch_bytes=self.ctb(x.level, _poly_live(degree)),
                                 args={"degree": degree, "interval": list(interval)})
        return Tensor(name, out, src, dict(x.cts))

    @property
    def key_mask(self) -> bool:
        """Whether keys are masked out after exp (one level): padded keys of a padded last token block,
        and for a causal model the keys after each query in its own block."""
        return self.wl.seq_len % self.pk.token_block != 0 or self.m.causal

    @property
    def exp_depth(self) -> int:
        """Levels of attn_exp: the polynomial, its squarings, and the key-padding mask."""
        return _poly_depth(self.ap.exp_degree, self.ap.exp_interval) + self.ap.exp_squarings + int(self.key_mask)

    def exp_work(self, level: int) -> tuple[Work, int]:
        """Work per score ciphertext of attn_exp at ``level`` and the level of its output."""
        w, out = polynomial_work(self.ap.exp_degree, self.ap.exp_interval, level)
        extra = Tally()
        for _ in range(self.ap.exp_squarings):
            extra.add("tensor", out).add("relin", out).add("rescale", out)
            out -= 1
        if self.key_mask:
            extra.add("pmul", out).add("rescale", out)
            out -= 1
        return merged(w, extra.freeze()), out

    def _token_split(self) -> tuple[int, int]:
        """Baby/giant split of the token offsets r = a + n1 * b (``token_rotations="bsgs"``)."""
        return bsgs_split(self.pk.token_block)

    def _token_rotations(self, t: Tally, lvl: int) -> None:
        """All tb token rotations of one K or V tile, masked into place (depth 1).

        ``direct``: 2 (tb - 1) rotations hoisted from the tile (2 (tb - 1) Galois keys).
        ``bsgs``: rotations by a < n1 hoisted from the tile, then from each of those, hoisted
        rotations by ``n1 b`` and ``n1 b - tb`` -- about 7 % more key-switch work for
        ``n1 + 2 n2`` keys instead of ``2 tb`` (tens of GiB less key memory at N = 2^16).
        """
        tb = self.pk.token_block
        if self.wl.token_rotations == "direct":
            t.add("hoist", lvl).add("hrot", lvl, 2 * (tb - 1))
        else:
            n1, n2 = self._token_split()
            t.add("hoist", lvl).add("hrot", lvl, n1 - 1)
            t.add("hoist", lvl, n1).add("hrot", lvl, n1 * (2 * n2 - 1))
        t.add("pmul", lvl, 2 * tb - 1).add("add", lvl, tb - 1).add("rescale", lvl, tb)

    def _token_rotation_steps(self) -> tuple[int, ...]:
        tb = self.pk.token_block
        if self.wl.token_rotations == "direct":
            return tuple(s for r in range(1, tb) for s in (r, r - tb))
        n1, n2 = self._token_split()
        return tuple(range(1, n1)) + tuple(s for b in range(n2) for s in (n1 * b, n1 * b - tb) if s)

    def attention(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        pk, tb, dh, lg = self.pk, self.pk.token_block, self.pk.head_dim, self.pk.log_head_dim
        spp = pk.score_cts_per_pair
        offsets = {r % dh for r in range(tb)} - {0}
        moves = tb - sum(1 for r in range(tb) if r % dh == 0)
        d_exp = self.exp_depth
        # Bootstrapping the T x T scores would cost O(T^2) bootstraps: give Q, K, V the levels of the
        # whole chain (mask, QK, pack, exp, expand, AV) up front when a bootstrapped ciphertext has them.
        chain = 5 + d_exp
        if chain <= self.boot.output_level:
            k, q, v = self.ensure(k, chain, layer), self.ensure(q, chain - 1, layer), self.ensure(v, 2, layer)
        k = self.ensure(k, 3, layer)
        q = self.ensure(q, 2, layer)
        lqk = min(q.level, k.level - 1)
        s_level = lqk - 2
        tok = self._token_rotation_steps()
        head_sum = tuple(tb << e for e in range(lg))
        qk_rots = tok + head_sum + tuple(-s * tb for s in sorted(offsets))
        per_pair = Tally()
        self._token_rotations(per_pair, k.level)
        per_pair.add("tensor", lqk, tb).add("relin", lqk, tb).add("rescale", lqk, tb)
        per_pair.add("rot", lqk - 1, tb * lg).add("add", lqk - 1, tb * lg)
        per_pair.add("pmul", lqk - 1, tb).add("rescale", lqk - 1, tb)
        per_pair.add("rot", lqk - 2, moves).add("add", lqk - 2, tb)
        pair_work = per_pair.freeze()
        scores = Tensor(f"L{layer}.scores", s_level, {}, {})
        probs = Tensor(f"L{layer}.exp", 0, {}, {})
        rows = Tensor(f"L{layer}.rowpart", 0, {}, {})
        kbs: dict[tuple[int, int], list[int]] = {}
        for i in range(self.nb):
            for c, chunk in enumerate(self.chunks):
                kb = [b for b in chunk if not self.m.causal or b <= i]
                if kb:
                    kbs[(i, c)] = kb
        keys = [(i, c, g) for (i, c) in kbs for g in range(len(self.hgroups))]

        def emit_qk(key: Key) -> None:
            i, c, g = key
            kb, gs = kbs[(i, c)], q.cts[(i, g)]
            reads = [(q, (i, g))] + [(k, (b, g)) for b in kb]
            cts = spp * len(kb) * gs
            work = scaled(pair_work, len(kb) * gs)
            if q.level > lqk:        # Q brought to the level of the rotated K once per op
                work = merged(work, (("pmul", lqk + 1, gs), ("rescale", lqk + 1, gs)))
            sid = self.emit("attn_qk", "attention", layer, i, g, lqk, reads, work, cts, self.ctb(s_level, cts),
                            rotations=qk_rots, scratch_bytes=self.ext_bytes(k.level) + self.ctb(lqk, 4),
                            args={"key_blocks": kb, "chunk": c, "causal": self.m.causal,
                                  "tiles": list(self.hgroups[g])})
            scores.src[key], scores.cts[key] = sid, cts

        def emit_exp(key: Key) -> None:
            cts = scores.cts[key]
            gs = q.cts[(key[0], key[2])]
            w = merged(scaled(ew, cts), (("add", e_level, cts - gs),))
            eid = self.emit("attn_exp", "softmax", layer, key[0], key[2], scores.level, [(scores, key)], w,
                            cts + gs, self.ctb(e_level, cts + gs),
                            scratch_bytes=self.ctb(scores.level, _poly_live(self.ap.exp_degree)),
                            args={"degree": self.ap.exp_degree, "interval": list(self.ap.exp_interval),
                                  "squarings": self.ap.exp_squarings, "key_mask": self.key_mask,
                                  "key_blocks": kbs[(key[0], key[1])], "chunk": key[1]})
            probs.src[key], probs.cts[key] = eid, cts
            rows.src[key], rows.cts[key] = eid, gs

        def emit_av(key: Key) -> None:
            i, c, g = key
            kb, gs = kbs[(i, c)], q.cts[(i, g)]
            reads = [(probs, key)] + [(v, (b, g)) for b in kb]
            aid = self.emit("attn_av", "attention", layer, i, g, min(lp, v.level), reads,
                            merged(scaled(av_pair, len(kb) * gs), (("add", lav - 1, (len(kb) - 1) * gs),)), gs,
                            self.ctb(lav - 1, gs), rotations=av_rots,
                            scratch_bytes=self.ext_bytes(v.level) + self.ctb(lp, 4),
                            args={"key_blocks": kb, "chunk": c, "tiles": list(self.hgroups[g])})
            partial.src[key], partial.cts[key] = aid, gs

        def av_setup(lp_: int, v_: Tensor) -> tuple:
            lav_ = min(lp_ - 1, v_.level - 1)
            w = Tally()
            self._token_rotations(w, v_.level)
            w.add("pmul", lp_, tb).add("rescale", lp_, tb).add("rot", lp_ - 1, moves)
            w.add("rot", lp_ - 1, tb * lg).add("add", lp_ - 1, tb * lg)
            w.add("tensor", lav_, tb).add("relin", lav_, tb).add("rescale", lav_, tb).add("add", lav_ - 1, tb - 1)
            return lav_, w.freeze()

        av_rots = tok + tuple(s * tb for s in sorted(offsets)) + tuple(-(tb << e) for e in range(lg))
        ew, e_level = self.exp_work(s_level) if s_level >= d_exp else ((), -1)
        if e_level >= 2:
            # streaming order: QK, exp and AV of one (query block, key chunk) back to back, so only one
            # chunk's scores are alive at a time
            v = self.trim(self.ensure(v, 2, layer), e_level)
            lp = e_level
            probs.level = rows.level = e_level
            lav, av_pair = av_setup(lp, v)
            partial = Tensor(f"L{layer}.avpart", lav - 1, {}, {})
            for key in keys:
                emit_qk(key)
                emit_exp(key)
                emit_av(key)
        else:
            # scores must be refreshed: every QK first, bootstraps, then exp and AV
            for key in keys:
                emit_qk(key)
            # one level more than exp needs when a refreshed ciphertext has it: the row sums' mask
            scores = self.ensure(scores, min(d_exp + 1, self.boot.output_level), layer)
            ew, e_level = self.exp_work(scores.level)
            probs.level = rows.level = e_level
            for key in keys:
                emit_exp(key)
            probs = self.ensure(probs, 2, layer)
            v = self.ensure(v, 2, layer)
            lp = probs.level
            v = self.trim(v, lp)
            lav, av_pair = av_setup(lp, v)
            partial = Tensor(f"L{layer}.avpart", lav - 1, {}, {})
            for key in keys:
                emit_av(key)
        # row sums, then normalisation of the summed context
        rows = self.ensure(rows, 1, layer)
        rl = rows.level
        keys_max = self.wl.seq_len              # keys a query attends to (at most, when causal)
        lo, hi = self.ap.exp_interval
        if self.ap.inverse_interval is not None:
            inv_interval = tuple(self.ap.inverse_interval)
        elif self.m.causal:
            inv_interval = (math.exp(lo), keys_max * math.exp(hi))
        else:
            inv_interval = (keys_max * math.exp(lo), keys_max * math.exp(hi))
        # The row sums grow with the keys (about the token count): bootstrapped as they are, EvalMod's
        # sin(2 pi delta) / (2 pi) would lose (2 pi delta)^2 / 6 of them (delta = sum x scale / q_0: 2.6 %
        # for sums of 64 with q_0 / scale = 2^10).  The row-sum mask therefore carries 1 / rowsum_scale
        # (a power of two >= the interval's end, no extra level), so that every bootstrapped row sum is
        # at most 1, and the inverse is fitted to 1 / (rowsum_scale x) on the scaled interval.
        rowsum_scale = 2.0 ** max(0, math.ceil(math.log2(inv_interval[1])))
        inv_interval = (inv_interval[0] / rowsum_scale, inv_interval[1] / rowsum_scale)
        rsum = Tensor(f"L{layer}.rowsum", rl - 1, {}, {})
        rs_rots = tuple(tb << e for e in range(lg)) + tuple(-(tb << e) for e in range(lg))
        by_ig: dict[tuple[int, int], list[Key]] = {}
        for key in rows.src:
            by_ig.setdefault((key[0], key[2]), []).append(key)
        for (i, g), keys in by_ig.items():
            gs = q.cts[(i, g)]
            w = Tally().add("add", rl, (len(keys) - 1) * gs).add("rot", rl, lg * gs).add("add", rl, lg * gs) \
                .add("pmul", rl, gs).add("rescale", rl, gs).add("rot", rl - 1, lg * gs).add("add", rl - 1, lg * gs)
            rid = self.emit("attn_rowsum", "softmax", layer, i, g, rl, [(rows, key) for key in keys], w, gs,
                            self.ctb(rl - 1, gs), rotations=rs_rots, scratch_bytes=self.ctb(rl, 2),
                            args={"rowsum_scale": rowsum_scale})
            rsum.src[(i, g)], rsum.cts[(i, g)] = rid, gs
        need_inv = _poly_depth(self.ap.inverse_degree, inv_interval)
        rsum = self.ensure(rsum, need_inv + 1, layer)
        iw, inv_level = polynomial_work(self.ap.inverse_degree, inv_interval, rsum.level)
        partial = self.ensure(partial, 1, layer)
        out_level = min(inv_level, partial.level) - 1
        ctx = Tensor(f"L{layer}.ctx", out_level, {}, {})
        for (i, g), keys in by_ig.items():
            gs = q.cts[(i, g)]
            w = Tally().extend(iw, gs).add("add", partial.level, (len(keys) - 1) * gs) \
                .add("tensor", out_level + 1, gs).add("relin", out_level + 1, gs).add("rescale", out_level + 1, gs)
            if inv_level != partial.level:       # the higher operand is brought down once
                w.add("pmul", out_level + 2, gs).add("rescale", out_level + 2, gs)
            nid = self.emit("attn_norm", "softmax", layer, i, g, min(rsum.level, partial.level),
                            [(rsum, (i, g))] + [(partial, key) for key in keys], w, gs, self.ctb(out_level, gs),
                            scratch_bytes=self.ctb(rsum.level, _poly_live(self.ap.inverse_degree)),
                            args={"degree": self.ap.inverse_degree, "interval": list(inv_interval),
                                  "rowsum_scale": rowsum_scale})
            ctx.src[(i, g)], ctx.cts[(i, g)] = nid, gs
        return ctx

    # ---- head-major diagonal attention (fhe.circuits.attention) ------------------------------------------
    def _token_rot_work(self, t: Tally, level: int, shifts: int, zeros: int, times: int = 1) -> None:
        """Work of ``fhe.circuits.attention.token_rotations`` with ``shifts`` non-zero and ``zeros`` zero shifts
        on one ciphertext at ``level``, ``times`` ciphertexts."""
        if shifts:
            t.add("hoist", level, times).add("hrot", level, 2 * shifts * times).add("add", level, shifts * times)
        t.add("pmul", level, (2 * shifts + zeros) * times).add("rescale", level, (shifts + zeros) * times)


    def attention_diagonal(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        """Attention in head-major tiles with the diagonal products of :mod:`fhe.circuits.attention`.

        Token block = one diagonal group (``tokens`` = seq_len in one block, else the block size, padded keys
        masked).  Per layer and key block v: ``attn_kbaby`` ops (K and V masked-rotated by a < n1, per tile
        group, kept while block v is attended); per (query block u, key block v, giant chunk): ``attn_qk``
        (query giant steps, products summed over the head channels, one relinearisation per diagonal: the
        score diagonals stay shifted by n1 b tokens, which is what the context needs), ``attn_exp`` (exp of
        the scores, the row sums of the chunk un-shifted), ``attn_av`` (per giant step and head channel one
        sum of products and one giant rotation); per query block ``attn_rowsum`` (sum, 1 / rowsum_scale) and
        per (query block, tile group) ``attn_norm`` (inverse row sum x context)."""
        why = diagonal_unsupported(self.wl)
        if why:
            raise WorkloadError(f"--attention diagonal does not handle {why} yet; use --attention tile")
        T, tb, nb = self.wl.seq_len, self.pk.token_block, self.nb
        tokens = T if nb == 1 else tb
        pad_keys = nb > 1 and T % tb != 0
        n1, n2 = diagonal_split(tokens, self.wl.attention_baby)
        nch = min(n2, MAX_GIANT_CHUNKS)
        bounds = [round(c * n2 / nch) for c in range(nch + 1)]
        giants = [list(range(bounds[c], bounds[c + 1])) for c in range(nch)]
        groups = tile_groups(self.pk.head_tiles)
        nt = self.pk.head_tiles
        ap = self.ap
        d_exp, chain = _diagonal_chain(ap, pad_keys)
        if chain <= self.boot.output_level:
            q, k = self.ensure(q, chain, layer), self.ensure(k, chain, layer)
        q, k, v = self.ensure(q, 2, layer), self.ensure(k, 2, layer), self.ensure(v, 3, layer)
        lq = min(q.level, k.level)
        q, k = self.trim(q, lq), self.trim(k, lq)
        if q.level != k.level:
            raise WorkloadError(f"layer {layer}: Q and K at levels {q.level} and {k.level}; the diagonal attention "
                                "needs them level")
        lqk = lq - 1                                   # the masked Q and K
        s_level = lqk - 1
        common = {"form": "diagonal", "tokens": tokens, "n1": n1}
        baby_rots = tuple(shift_steps(range(1, n1), tokens))

        def babies(t: Tensor, name: str, vb: int) -> Tensor:
            out = Tensor(f"L{layer}.{name}", t.level - 1, {}, {})
            for g, grp in enumerate(groups):
                w = Tally()
                self._token_rot_work(w, t.level, n1 - 1, 1, len(grp))
                out.src[(vb, g)] = self.emit("attn_kbaby", "attention", layer, vb, g, t.level, [(t, (vb, g))], w,
                                             n1 * len(grp), self.ctb(t.level - 1, n1 * len(grp)), rotations=baby_rots,
                                             scratch_bytes=self.ext_bytes(t.level) + self.ctb(t.level, 2),
                                             args={**common, "of": name, "tiles": list(grp)})
                out.cts[(vb, g)] = n1 * len(grp)
            return out

        e_level = s_level - d_exp               # the level exp (squarings, key mask) leaves the scores at
        scores = Tensor(f"L{layer}.scores", s_level, {}, {})
        rows = Tensor(f"L{layer}.rowpart", 0, {}, {})
        partial = Tensor(f"L{layer}.avpart", 0, {}, {})
        probs = Tensor(f"L{layer}.exp", 0, {}, {})

        def emit_qk(u: int, vb: int, c: int, kb: Tensor) -> None:
            w = Tally()
            rs = 0
            for b in giants[c]:
                self._token_rot_work(w, q.level, int(b > 0), int(b == 0), nt)
                na = sum(1 for a in range(n1) if a + n1 * b < tokens)
                rs += na
                w.add("tensor", lqk, na * nt).add("add", lqk, na * (nt - 1)).add("relin", lqk, na) \
                    .add("rescale", lqk, na)
            reads = [(q, (u, g)) for g in range(len(groups))] + [(kb, (vb, g)) for g in range(len(groups))]
            sid = self.emit("attn_qk", "attention", layer, u, c, lqk + 1, reads, w, rs, self.ctb(s_level, rs),
                            rotations=tuple(shift_steps([-n1 * b for b in giants[c]], tokens)),
                            scratch_bytes=self.ext_bytes(q.level) + self.ctb(q.level - 1, nt) + self.ctb(lqk, 3),
                            args={**common, "giants": giants[c], "chunk": vb, "pad_keys": pad_keys})
            scores.src[(u, vb, c)], scores.cts[(u, vb, c)] = sid, rs

        def emit_exp(u: int, vb: int, c: int, sc: Tensor) -> None:
            rs = sc.cts[(u, vb, c)]
            lvl = sc.level
            w_exp, el = polynomial_work(ap.exp_degree, ap.exp_interval, lvl)
            w = Tally().extend(w_exp, rs)
            for _ in range(ap.exp_squarings):
                w.add("tensor", el, rs).add("relin", el, rs).add("rescale", el, rs)
                el -= 1
            if pad_keys:
                w.add("pmul", el, rs).add("rescale", el, rs)
                el -= 1
            for b in giants[c]:
                na = sum(1 for a in range(n1) if a + n1 * b < tokens)
                w.add("add", el, na - 1)
                self._token_rot_work(w, el, int(b > 0), int(b == 0))
            w.add("add", el - 1, len(giants[c]) - 1)
            eid = self.emit("attn_exp", "softmax", layer, u, c, lvl, [(sc, (u, vb, c))], w, rs + 1,
                            self.ctb(el, rs) + self.ctb(el - 1),
                            rotations=tuple(shift_steps([n1 * b for b in giants[c]], tokens)),
                            scratch_bytes=self.ctb(lvl, _poly_live(ap.exp_degree)),
                            args={**common, "giants": giants[c], "chunk": vb, "pad_keys": pad_keys,
                                  "degree": ap.exp_degree, "interval": list(ap.exp_interval),
                                  "squarings": ap.exp_squarings, "key_block": vb})
            probs.src[(u, vb, c)], probs.cts[(u, vb, c)] = eid, rs
            rows.src[(u, vb, c)], rows.cts[(u, vb, c)] = eid, 1
            probs.level, rows.level = el, el - 1

        def emit_av(u: int, vb: int, c: int, pr: Tensor, vbt: Tensor) -> None:
            lav = min(pr.level, vbt.level)
            w = Tally()
            rs = pr.cts[(u, vb, c)]
            if pr.level > lav:
                w.add("pmul", lav + 1, rs).add("rescale", lav + 1, rs)
            for b in giants[c]:
                na = sum(1 for a in range(n1) if a + n1 * b < tokens)
                w.add("tensor", lav, na * nt).add("add", lav, (na - 1) * nt).add("relin", lav, nt) \
                    .add("rescale", lav, nt)
                self._token_rot_work(w, lav - 1, int(b > 0), int(b == 0), nt)
            w.add("add", lav - 2, (len(giants[c]) - 1) * nt)
            reads = [(pr, (u, vb, c))] + [(vbt, (vb, g)) for g in range(len(groups))]
            aid = self.emit("attn_av", "attention", layer, u, c, lav, reads, w, nt, self.ctb(lav - 2, nt),
                            rotations=tuple(shift_steps([n1 * b for b in giants[c]], tokens)),
                            scratch_bytes=self.ext_bytes(lav) + self.ctb(lav, 3) + self.ctb(lav - 2, nt),
                            args={**common, "giants": giants[c], "chunk": vb})
            self.share(aid, partial, [((u, vb, c, g), len(grp)) for g, grp in enumerate(groups)])
            partial.level = lav - 2

        if s_level - d_exp >= 2:
            # streamed: per key block its K and V babies, then every (query block, giant chunk) of it
            vv = self.trim(v, e_level + 1)
            for vb in range(nb):
                kb, vbt = babies(k, "kbaby", vb), None
                for u in range(nb):
                    for c in range(nch):
                        emit_qk(u, vb, c, kb)
                        emit_exp(u, vb, c, scores)
                        if vbt is None:
                            vbt = babies(vv, "vbaby", vb)
                        emit_av(u, vb, c, probs, vbt)
        else:
            kbs = {vb: babies(k, "kbaby", vb) for vb in range(nb)}
            for vb in range(nb):
                for u in range(nb):
                    for c in range(nch):
                        emit_qk(u, vb, c, kbs[vb])
            scores = self.ensure(scores, min(d_exp + 2, self.boot.output_level), layer)
            for key in list(scores.src):
                emit_exp(*key, scores)
            pr = self.ensure(probs, 2, layer)
            vv = self.trim(v, pr.level + 1)
            vbts = {vb: babies(vv, "vbaby", vb) for vb in range(nb)}
            for key in list(pr.src):
                emit_av(*key, pr, vbts[key[1]])
        # row sums of each query block, then the inverse times the summed context per tile group
        rows = self.ensure(rows, 1, layer)
        rl = rows.level
        lo, hi = ap.exp_interval
        inv_interval = tuple(ap.inverse_interval) if ap.inverse_interval is not None else \
            (T * math.exp(lo), T * math.exp(hi))
        rowsum_scale = 2.0 ** max(0, math.ceil(math.log2(inv_interval[1])))
        inv_interval = (inv_interval[0] / rowsum_scale, inv_interval[1] / rowsum_scale)
        rsum = Tensor(f"L{layer}.rowsum", rl - 1, {}, {})
        for u in range(nb):
            keys = [key for key in rows.src if key[0] == u]
            w = Tally().add("add", rl, len(keys) - 1).add("pmul", rl).add("rescale", rl)
            rid = self.emit("attn_rowsum", "softmax", layer, u, -1, rl, [(rows, key) for key in keys], w, 1,
                            self.ctb(rl - 1), scratch_bytes=self.ctb(rl, 2),
                            args={**common, "rowsum_scale": rowsum_scale, "interval": list(inv_interval)})
            rsum.src[(u,)], rsum.cts[(u,)] = rid, 1
        need_inv = _poly_depth(ap.inverse_degree, inv_interval)
        rsum = self.ensure(rsum, need_inv + 1, layer)
        iw, inv_level = polynomial_work(ap.inverse_degree, inv_interval, rsum.level)
        partial = self.ensure(partial, 1, layer)
        out_level = min(inv_level, partial.level) - 1
        ctx = Tensor(f"L{layer}.ctx", out_level, {}, {})
        for u in range(nb):
            for g, grp in enumerate(groups):
                keys = [key for key in partial.src if key[0] == u and key[3] == g]
                n = len(grp)
                w = Tally().extend(iw).add("add", partial.level, (len(keys) - 1) * n) \
                    .add("tensor", out_level + 1, n).add("relin", out_level + 1, n).add("rescale", out_level + 1, n)
                if partial.level > out_level + 1:
                    w.add("pmul", out_level + 2, n).add("rescale", out_level + 2, n)
                if inv_level > out_level + 1:
                    w.add("pmul", out_level + 2).add("rescale", out_level + 2)
                nid = self.emit("attn_norm", "softmax", layer, u, g, min(rsum.level, partial.level),
                                [(rsum, (u,))] + [(partial, key) for key in keys], w, n, self.ctb(out_level, n),
                                scratch_bytes=self.ctb(rsum.level, _poly_live(ap.inverse_degree)),
                                args={**common, "degree": ap.inverse_degree, "interval": list(inv_interval),
                                      "rowsum_scale": rowsum_scale, "tiles": list(grp)})
                ctx.src[(u, g)], ctx.cts[(u, g)] = nid, n
        return ctx

    def layernorm(self, x: Tensor, res: Tensor | None, layer: int, name: str) -> Tensor:
        cd, cb = self.cd, self.pk.channel_block
        lgc = int(math.log2(cb))
        x = self.ensure(x, 3, layer)
        if res is not None:
            res = self.ensure(res, 3, layer)
        l0 = min(x.level, res.level) if res is not None else x.level
        st = Tally()
        if res is not None:
            st.add("add", l0, cd)
            if x.level != res.level:             # the higher one brought down before the residual add
                st.add("pmul", l0 + 1, cd).add("rescale", l0 + 1, cd)
        means = 1 + int(self.m.d_model % cb != 0)    # padded channels: the last tile's mean is masked
        st.add("add", l0, cd - 1).add("rot", l0, lgc).add("add", l0, lgc).add("pmul", l0, means) \
            .add("rescale", l0, means)
        st.add("pmul", l0, cd).add("rescale", l0, cd).add("add", l0 - 1, cd)        # centre
        st.add("tensor", l0 - 1, cd).add("relin", l0 - 1, cd).add("rescale", l0 - 1, cd)
        st.add("add", l0 - 2, cd - 1).add("rot", l0 - 2, lgc).add("add", l0 - 2, lgc)
        st.add("pmul", l0 - 2).add("rescale", l0 - 2)
        stats_work = st.freeze()
        sum_rots = tuple(self.pk.token_block << e for e in range(lgc))
        centred = Tensor(f"{name}.centred", l0 - 1, {}, {})
        var = Tensor(f"{name}.var", l0 - 3, {}, {})
        for i in range(self.nb):
            reads = [(x, kk) for kk in x.src if kk[0] == i]
            if res is not None:
                reads += [(res, kk) for kk in res.src if kk[0] == i]
            sid = self.emit("ln_stats", "layernorm", layer, i, -1, l0, reads, stats_work, cd + 1,
                            self.ctb(l0 - 1, cd) + self.ctb(l0 - 3), rotations=sum_rots,
                            scratch_bytes=self.ctb(l0, 2), args={"residual": res is not None, "d_model": self.m.d_model})
            centred.src[(i,)], centred.cts[(i,)] = sid, cd
            var.src[(i,)], var.cts[(i,)] = sid, 1
        inv = self.poly_tile(var, "ln_inv", "layernorm", self.ap.inv_sqrt_degree, self.ap.inv_sqrt_interval, layer,
                             f"{name}.inv")
        centred = self.ensure(centred, 2, layer)
        inv = self.ensure(inv, 2, layer)
        la = min(centred.level, inv.level)
        awt = Tally().add("tensor", la, cd).add("relin", la, cd).add("rescale", la, cd).add("pmul", la - 1, cd) \
            .add("rescale", la - 1, cd).add("add", la - 2, cd)
        if centred.level > la:
            awt.add("pmul", la + 1, cd).add("rescale", la + 1, cd)
        if inv.level > la:
            awt.add("pmul", la + 1).add("rescale", la + 1)
        aw = awt.freeze()
        out = Tensor(name, la - 2, {}, {})
        groups = tile_groups(cd)
        for i in range(self.nb):
            oid = self.emit("ln_apply", "layernorm", layer, i, -1, la, [(centred, (i,)), (inv, (i,))], aw, cd,
                            self.ctb(la - 2, cd), plaintexts=2 * cd, weight=f"{name}.gamma_beta",
                            weight_raw_bytes=2 * self.m.d_model * 8)
            self.share(oid, out, [((i, g), len(grp)) for g, grp in enumerate(groups)])
        return out

    def residual(self, x: Tensor, y: Tensor, layer: int, name: str) -> Tensor:
        lvl = min(x.level, y.level)
        w = Tally().add("add", lvl, self.cd)
        if x.level != y.level:
            w.add("pmul", lvl + 1, self.cd).add("rescale", lvl + 1, self.cd)
        work = w.freeze()
        src, cts = {}, {}
        for i in range(self.nb):
            reads = [(x, kk) for kk in x.src if kk[0] == i] + [(y, kk) for kk in y.src if kk[0] == i]
            oid = self.emit("residual", "layernorm", layer, i, -1, lvl, reads, work, self.cd, self.ctb(lvl, self.cd))
            for g, grp in enumerate(self.hgroups):
                src[(i, g)], cts[(i, g)] = oid, len(grp)
        out = Tensor(name, lvl, src, cts)
        for i in range(self.nb):
            self.share(out.src[(i, 0)], out, [((i, g), len(grp)) for g, grp in enumerate(self.hgroups)])
        return out

    # ---- the model -------------------------------------------------------------------------------
    def layer(self, h: Tensor, n: int) -> Tensor:
        m, cd = self.m, self.cd
        pre = m.pre_norm
        a_in = self.layernorm(h, None, n, f"L{n}.ln1") if pre else h
        # bootstrap the (small) hidden state rather than Q, K, V or the FFN intermediate when a
        # bootstrapped ciphertext holds the whole following segment
        d_exp = self.exp_depth
        if 6 + d_exp <= self.boot.output_level:
            a_in = self.ensure(a_in, 6 + d_exp, n)
            if not pre:
                h = a_in                 # post-norm: the residual branch reads the same (refreshed) tiles
        diag = self.pk.head_major
        # head-major: Q, K, V and the context are head_dim tiles (channel j of every head); else d_model tiles
        nt = self.pk.head_tiles if diag else cd
        groups = tile_groups(nt)
        ng = len(groups)
        qkv_groups = tile_groups(nt) + tile_groups(nt, nt) + tile_groups(nt, 2 * nt)
        qkv = self.linear(a_in, m.d_model, qkv_groups, m.d_model, f"L{n}.wqkv", n, "attention", f"L{n}.qkv")
        q, k, v = (Tensor(f"L{n}.{nm}", qkv.level, {(i, g): qkv.src[(i, g + s * ng)]
                                                     for i in range(self.nb) for g in range(ng)},
                          {(i, g): len(groups[g]) for i in range(self.nb) for g in range(ng)})
                   for s, nm in enumerate("qkv"))
        ctx = self.attention_diagonal(q, k, v, n) if diag else self.attention(q, k, v, n)
        d_ctx = nt * self.pk.channel_block if diag else m.d_model
        att = self.linear(ctx, d_ctx, tile_groups(cd), m.d_model, f"L{n}.wo", n, "attention", f"L{n}.attn_out")
        if pre:
            h = self.residual(h, att, n, f"L{n}.h1")
            f_in = self.layernorm(h, None, n, f"L{n}.ln2")
        else:
            h = self.layernorm(h, att, n, f"L{n}.ln1")
            f_in = h
        need_ffn = 2 + _poly_depth(self.ap.gelu_degree, self.ap.gelu_interval)
        if need_ffn <= self.boot.output_level:
            f_in = self.ensure(f_in, need_ffn, n)
            if not pre:
                h = f_in
        up = self.linear(f_in, m.d_model, tile_groups(self.cf), m.d_ff, f"L{n}.w1", n, "ffn", f"L{n}.ffn_up")
        g = self.poly_tile(up, "gelu", "gelu", self.ap.gelu_degree, self.ap.gelu_interval, n, f"L{n}.gelu")
        down = self.linear(g, m.d_ff, tile_groups(cd), m.d_model, f"L{n}.w2", n, "ffn", f"L{n}.ffn_down")
        if pre:
            return self.residual(h, down, n, f"L{n}.h2")
        return self.layernorm(h, down, n, f"L{n}.ln2")

    def run(self) -> Program:
        h = self.input()
        for n in range(self.m.layers):
            h = self.layer(h, n)
        outputs = sorted(set(h.src.values()))
        return Program(self.wl, self.p, self.pk, self.boot_cfg, self.ops, outputs, self.chunks)


def _poly_depth(degree: int, interval: tuple[float, float]) -> int:
    from fhe.circuits.polynomial import chebyshev_depth
    return chebyshev_depth(degree, interval)


def _poly_live(degree: int) -> int:
    """Ciphertexts alive while a degree-``degree`` polynomial is evaluated (baby powers + giant powers)."""
    m = 1 << max(1, math.ceil(math.log2(math.sqrt(degree + 1))))
    return m + max(1, int(math.log2(max(2, degree // m)))) + 2


def lower(workload: Workload, bootstrap: BootstrapConfig | None = None) -> Program:
    """Lower a workload to its HE program (ops in execution order); ``attention="auto"`` is resolved by
    :func:`choose_attention` (the program's ``workload`` holds the form chosen)."""
    if workload.attention == "auto":
        return choose_attention(workload, bootstrap)
    return _Lowering(workload, bootstrap or BootstrapConfig()).run()


def _diagonal_chain(ap: Any, pad_keys: bool) -> tuple[int, int]:
    """(levels of exp -- polynomial, squarings, padded-key mask --, levels of the diagonal attention's chain from
    Q/K to the context: masked Q/K, product, exp, product, giant rotation)."""
    d_exp = _poly_depth(ap.exp_degree, ap.exp_interval) + ap.exp_squarings + int(pad_keys)
    return d_exp, 4 + d_exp


def diagonal_unsupported(workload: Workload) -> str:
    """What ``--attention diagonal`` cannot lower in ``workload`` ("" when nothing): a causal model, a token block
    set by hand, score shifts."""
    if workload.model.causal:
        return "a causal model"
    if workload.token_block is not None:
        return "a token block set by --token-block"
    if workload.approx.score_shift or workload.approx.score_shift_position:
        return "score shifts (the tile attention adds them to its score tiles)"
    return ""


def diagonal_fits(workload: Workload, bootstrap: BootstrapConfig | None = None) -> str:
    """Why ``--attention diagonal`` does not suit ``workload`` ("" when it does): :func:`diagonal_unsupported`, or
    an attention chain (masked Q/K, product, exp, product, giant rotation) deeper than a bootstrap leaves -- every
    score diagonal would then be bootstrapped."""
    why = diagonal_unsupported(workload)
    if why:
        return why
    p = workload.params()
    pk = Packing.for_model(workload.model, p.slots, workload.seq_len, None, True)
    _, chain = _diagonal_chain(workload.approx, pk.token_blocks > 1 and workload.seq_len % pk.token_block != 0)
    top = BootstrapModel(p, bootstrap or BootstrapConfig()).output_level
    return "" if chain <= top else f"an attention chain of {chain} levels, more than the {top} a refresh leaves"


#: strategies defined on the tile attention: token parallelism splits its token blocks; tensor-cerium is
#: Cerium's published per-tile mapping
TILE_ONLY_STRATEGIES = ("token", "tensor-cerium")


def attention_for(workload: Workload, strategy: str) -> Workload:
    """The workload ``strategy`` lowers: ``auto`` becomes ``tile`` for :data:`TILE_ONLY_STRATEGIES`."""
    if workload.attention == "auto" and strategy in TILE_ONLY_STRATEGIES:
        return replace(workload, attention="tile")
    return workload


def choose_attention(workload: Workload, bootstrap: BootstrapConfig | None = None, rates: Any = None,
                     strategy: str | None = None) -> Program:
    """``attention="auto"``: the program (tile or diagonal attention) with the less single-device work.

    The diagonal form is a candidate only where :func:`diagonal_fits` allows it, and not for ``token`` (token
    parallelism is defined on the tile attention's blocks) or ``tensor-cerium`` (Cerium's published per-tile
    mapping).  Work is :func:`aegis.estimate.work_seconds` of every op on ``rates`` (a profile's
    device rates; default: h100-sxm's)."""
    from .estimate import DeviceRates, work_seconds
    from .hardware import load_hardware

    boot = bootstrap or BootstrapConfig()
    tile = _Lowering(replace(workload, attention="tile"), boot).run()
    if diagonal_fits(workload, boot) or strategy in TILE_ONLY_STRATEGIES:
        return tile
    p = workload.params()
    diag = _Lowering(replace(workload, attention="diagonal"), boot).run()
    if rates is None:
        rates = DeviceRates.from_raw(load_hardware("h100-sxm").raw.get("device", {}))

    def total(prog: Program) -> float:
        return sum(work_seconds(p, rates, o.work) for o in prog.ops)

    return diag if total(diag) < total(tile) else tile
