"""The RNS polynomial ring Z_Q[X]/(X^N + 1) and its kernels on limb subsets.

A polynomial is a ``uint64`` array of shape ``(limbs, N)``; which primes its
rows belong to is given by a tuple of prime indices ``idx`` into
:attr:`RNSRing.primes` (Q primes first, then the special primes P).  Every
kernel takes ``idx`` explicitly, so a caller can run one device's slice of
limbs -- the executor relies on this to run a placement exactly as planned.

NTT order: forward NTT outputs the evaluations in bit-reversed order
(Longa-Naehrig Cooley-Tukey); the inverse takes that order back.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Backend
from . import cpu_kernels as ck
from . import lazy_kernels as lk
from . import modarith as ma
from .threads import run_split
from .counters import counted

Array = Any
Idx = tuple[int, ...]


def bit_reverse(x: int, bits: int) -> int:
    return int(f"{x:0{bits}b}"[::-1], 2) if bits else 0


@dataclass
class LimbTables:
    """Per-limb constants for one limb subset, on the backend's device."""

    p: Array        # (k, 1) uint64 moduli
    pinv: Array     # (k, 1) float64, 1/p
    psi: Array      # (k, N) uint64, psi^{bitrev(i)}
    psi_f: Array    # (k, N) float64, psi / p
    ipsi: Array     # (k, N) uint64, psi^{-bitrev(i)}
    ipsi_f: Array
    ninv: Array     # (k, 1) uint64, N^{-1} mod p
    ninv_f: Array


class RNSRing:
    """Tables and kernels for Z_q[X]/(X^N+1) over a list of NTT-friendly primes.

    Args:
        n: ring degree N (power of two).
        primes: every prime the ring may use (Q chain then P), each < 2**51 and 1 mod 2N.
        backend: where arrays live.
    """

    def __init__(self, n: int, primes: Sequence[int], backend: Backend) -> None:
        from ..primes import primitive_root_2n

        self.n = n
        self.log_n = n.bit_length() - 1
        self.primes = tuple(int(p) for p in primes)
        self.backend = backend
        self.xp = backend.xp
        t = len(self.primes)
        brv = np.array([bit_reverse(i, self.log_n) for i in range(n)], dtype=np.int64)
        self._brv = brv
        psi = np.empty((t, n), dtype=np.uint64)
        ipsi = np.empty((t, n), dtype=np.uint64)
        for r, q in enumerate(self.primes):
            root = primitive_root_2n(q, n)
            psi[r] = _powers(root, n, q)[brv]
            ipsi[r] = _powers(pow(root, -1, q), n, q)[brv]
        p_col = np.array(self.primes, dtype=np.uint64).reshape(t, 1)
        pinv = 1.0 / np.array(self.primes, dtype=np.float64).reshape(t, 1)
        ninv = np.array([pow(n, -1, q) for q in self.primes], dtype=np.uint64).reshape(t, 1)
        self._host = dict(p=p_col, pinv=pinv, psi=psi, psi_f=psi.astype(np.float64) * pinv,
                          ipsi=ipsi, ipsi_f=ipsi.astype(np.float64) * pinv,
                          ninv=ninv, ninv_f=ninv.astype(np.float64) * pinv)
        self._full = LimbTables(**{k: backend.asarray(v) for k, v in self._host.items()})
        self._cache: dict[Idx, LimbTables] = {}
        #: use the compiled CPU kernels (numba: lazy_kernels, cpu_kernels) on NumPy; False forces the array reference
        self.compiled = backend.name == "numpy" and ck.AVAILABLE
        #: the lazy-reduction NTT/INTT (lazy_kernels) need every prime below 2^50; else cpu_kernels' exact ones
        self.lazy_ntt = max(self.primes, default=0) < lk.LAZY_PRIME_LIMIT
        self._perm_cache: dict[int, Array] = {}

    # ---- tables -----------------------------------------------------------------
    def tables(self, idx: Idx) -> LimbTables:
        """Tables of the limb subset ``idx`` (cached; gathered on the device)."""
        idx = tuple(idx)
        tab = self._cache.get(idx)
        if tab is None:
            if idx == tuple(range(len(self.primes))):
                tab = self._full
            else:
                sel = self.xp.asarray(np.array(idx, dtype=np.int64))
                tab = LimbTables(**{k: getattr(self._full, k)[sel] for k in self._host})
            self._cache[idx] = tab
        return tab

    def moduli(self, idx: Idx) -> tuple[Array, Array]:
        t = self.tables(idx)
        return t.p, t.pinv

    # ---- element-wise kernels ------------------------------------------------------
    def _flat(self, *arrays: Array) -> bool:
        """True when the compiled element-wise kernels apply: NumPy, 2-D uint64 operands of one shape."""
        if not self.compiled:
            return False
        shape = arrays[0].shape
        return len(shape) == 2 and all(x.shape == shape and x.dtype == np.uint64 for x in arrays)

    @staticmethod
    def _rows(kernel: Any, args: tuple[Any, ...], like: Array) -> Array:
        """Run an element-wise row kernel into a fresh array shaped like ``like`` (threads split rows)."""
        out = np.empty(like.shape, dtype=np.uint64)
        run_split(kernel, args + (out,), like.shape[0], like.shape[1])
        return out

    @counted("add")
    def add(self, a: Array, b: Array, idx: Idx) -> Array:
        """(a + b) mod q_i per limb."""
        t = self.tables(idx)
        if self._flat(a, b):
            return self._rows(lk.add_rows, (a, b, t.p[:, 0]), a)
        return ma.addmod(a, b, t.p, self.xp)

    @counted("sub")
    def sub(self, a: Array, b: Array, idx: Idx) -> Array:
        """(a - b) mod q_i per limb."""
        t = self.tables(idx)
        if self._flat(a, b):
            return self._rows(lk.sub_rows, (a, b, t.p[:, 0]), a)
        return ma.submod(a, b, t.p, self.xp)

    @counted("neg")
    def neg(self, a: Array, idx: Idx) -> Array:
        """-a mod q_i per limb."""
        return ma.negmod(a, self.tables(idx).p, self.xp)

    @counted("mul")
    def mul(self, a: Array, b: Array, idx: Idx) -> Array:
        """a * b mod q_i per limb (in NTT form this is the ring product)."""
        t = self.tables(idx)
        if self._flat(a, b):
            return self._rows(lk.mul_rows, (a, b, t.p[:, 0], t.pinv[:, 0]), a)
        return ma.mulmod(a, b, t.p, t.pinv, self.xp)

    @counted("mac")
    def mac(self, acc: Array, a: Array, b: Array, idx: Idx) -> Array:
        """acc + a * b mod q_i per limb (multiply-accumulate)."""
        t = self.tables(idx)
        if self._flat(acc, a, b):
            return self._rows(lk.mac_rows, (acc, a, b, t.p[:, 0], t.pinv[:, 0]), a)
        return ma.addmod(acc, ma.mulmod(a, b, t.p, t.pinv, self.xp), t.p, self.xp)

    @counted("mul_scalar")
    def mul_scalar(self, a: Array, scalars: Sequence[int], idx: Idx) -> Array:
        """a * c_i mod q_i, with one integer ``c_i`` per limb (already reduced or not)."""
        t = self.tables(idx)
        c_host = np.array([int(s) % self.primes[i] for s, i in zip(scalars, idx)], dtype=np.uint64)
        if self.compiled and a.ndim == 2 and a.dtype == np.uint64:
            cf = c_host.astype(np.float64) / np.array([self.primes[i] for i in idx], dtype=np.float64)
            return self._rows(lk.mul_scalar_rows, (a, c_host, cf, t.p[:, 0]), a)
        c = self.backend.asarray(c_host.reshape(-1, 1))
        return ma.mulmod(a, c, t.p, t.pinv, self.xp)

    # ---- NTT ---------------------------------------------------------------------
    @counted("ntt")
    def ntt(self, a: Array, idx: Idx) -> Array:
        """Forward negacyclic NTT of each limb; returns a new array (bit-reversed order)."""
        t = self.tables(idx)
        if self.compiled and self.lazy_ntt and a.ndim == 2 and a.dtype == np.uint64:
            out = np.empty(a.shape, dtype=np.uint64)
            run_split(lk.ntt_rows, (np.ascontiguousarray(a), out, t.psi, t.psi_f, t.p[:, 0]), a.shape[0], self.n)
            return out
        a = self.xp.array(a, dtype=self.xp.uint64, copy=True, order="C")
        if self.compiled:
            ck.ntt_inplace_wide(a, t.psi, t.psi_f, t.p[:, 0])
            return a
        return self._ntt_reference(a, t)

    def _ntt_reference(self, a: Array, t: LimbTables) -> Array:
        """Array-module NTT (any backend), in place on ``a``."""
        xp, n = self.xp, self.n
        k = a.shape[0]
        p3 = t.p.reshape(k, 1, 1)
        m, half = 1, n
        while m < n:
            half //= 2
            v = a.reshape(k, m, 2, half)
            u, w = v[:, :, 0, :], v[:, :, 1, :]
            s = t.psi[:, m: 2 * m].reshape(k, m, 1)
            sf = t.psi_f[:, m: 2 * m].reshape(k, m, 1)
            w = ma.mulmod_shoup(w, s, sf, p3, xp)
            lo = ma.addmod(u, w, p3, xp)
            v[:, :, 1, :] = ma.submod(u, w, p3, xp)
            v[:, :, 0, :] = lo
            m *= 2
        return a

    @counted("intt")
    def intt(self, a: Array, idx: Idx) -> Array:
        """Inverse negacyclic NTT of each limb (input in bit-reversed order); returns a new array."""
        t = self.tables(idx)
        if self.compiled and self.lazy_ntt and a.ndim == 2 and a.dtype == np.uint64:
            out = np.empty(a.shape, dtype=np.uint64)
            run_split(lk.intt_rows, (np.ascontiguousarray(a), out, t.ipsi, t.ipsi_f, t.p[:, 0], t.ninv[:, 0],
                                     t.ninv_f[:, 0]), a.shape[0], self.n)
            return out
        a = self.xp.array(a, dtype=self.xp.uint64, copy=True, order="C")
        if self.compiled:
            ck.intt_inplace_wide(a, t.ipsi, t.ipsi_f, t.p[:, 0], t.ninv[:, 0], t.ninv_f[:, 0])
            return a
        return self._intt_reference(a, t)

    def _intt_reference(self, a: Array, t: LimbTables) -> Array:
        """Array-module inverse NTT (any backend), in place on ``a``."""
        xp, n = self.xp, self.n
        k = a.shape[0]
        p3 = t.p.reshape(k, 1, 1)
        m, half = n, 1
        while m > 1:
            h = m // 2
            v = a.reshape(k, h, 2, half)
            u, w = v[:, :, 0, :], v[:, :, 1, :]
            s = t.ipsi[:, h: 2 * h].reshape(k, h, 1)
            sf = t.ipsi_f[:, h: 2 * h].reshape(k, h, 1)
            hi = ma.mulmod_shoup(ma.submod(u, w, p3, xp), s, sf, p3, xp)
            v[:, :, 0, :] = ma.addmod(u, w, p3, xp)
            v[:, :, 1, :] = hi
            half *= 2
            m = h
        return ma.mulmod_shoup(a, t.ninv, t.ninv_f, t.p, xp)

    # ---- automorphisms --------------------------------------------------------------
    def galois_permutation(self, g: int) -> Array:
        """Index map ``perm`` with ``automorphism_ntt(a, g) = a[:, perm]`` for NTT-form ``a``."""
        g %= 2 * self.n
        perm = self._perm_cache.get(g)
        if perm is None:
            n, brv = self.n, self._brv
            e = 2 * brv + 1                       # exponent evaluated at NTT slot j
            src = ((e * g) % (2 * n) - 1) // 2     # natural index of the source slot
            inv_brv = np.empty(n, dtype=np.int64)
            inv_brv[brv] = np.arange(n)
            perm = self.xp.asarray(inv_brv[src])
            self._perm_cache[g] = perm
        return perm

    @counted("automorphism")
    def automorphism_ntt(self, a: Array, g: int) -> Array:
        """a(X) -> a(X^g) on NTT-form limbs (a permutation of slots; limb-local)."""
        perm = self.galois_permutation(g)
        if self.compiled and a.ndim == 2 and a.dtype == np.uint64:
            out = np.empty(a.shape, dtype=np.uint64)
            run_split(lk.permute_rows, (np.ascontiguousarray(a), perm, out), a.shape[0], self.n)
            return out
        return a[..., perm]

    def automorphism_coeff(self, a: Array, g: int, idx: Idx) -> Array:
        """a(X) -> a(X^g) on coefficient-form limbs (reference for tests)."""
        xp, n = self.xp, self.n
        g %= 2 * n
        i = np.arange(n, dtype=np.int64) * g % (2 * n)
        dst = self.xp.asarray(i % n)
        negate = self.xp.asarray(i >= n)
        out = xp.empty_like(a)
        vals = xp.where(negate[None, :], ma.negmod(a, self.tables(idx).p, xp), a)
        out[:, dst] = vals
        return out

    # ---- RNS base conversion -----------------------------------------------------------
    def _conv_consts(self, src: Idx, dst: Idx) -> tuple[Array, Array, Array, Array, Array]:
        key = ("conv", src, dst)
        hit = self._cache.get(key)  # type: ignore[arg-type]
        if hit is None:
            qs = [self.primes[i] for i in src]
            big = 1
            for q in qs:
                big *= q
            hats = [big // q for q in qs]
            hat_inv = np.array([pow(h % q, -1, q) for h, q in zip(hats, qs)], dtype=np.uint64).reshape(-1, 1)
            hat_inv_f = hat_inv.astype(np.float64) / np.array(qs, dtype=np.float64).reshape(-1, 1)
            # hat_mod[j, i] = (Q/q_i) mod p_j
            hat_mod = np.array([[h % self.primes[j] for h in hats] for j in dst], dtype=np.uint64)
            hat_mod_f = hat_mod.astype(np.float64) / np.array([self.primes[j] for j in dst],
                                                              dtype=np.float64).reshape(-1, 1)
            neg_q = np.array([(-big) % self.primes[j] for j in dst], dtype=np.uint64)
            hit = tuple(self.backend.asarray(x) for x in (hat_inv, hat_inv_f, hat_mod, hat_mod_f, neg_q))
            self._cache[key] = hit  # type: ignore[index]
        return hit  # type: ignore[return-value]

    @counted("base_convert")
    def base_convert(self, a: Array, src: Idx, dst: Idx) -> Array:
        """Fast (approximate) base conversion of coefficient-form limbs from ``src`` to ``dst``.

        Returns ``sum_i [a_i * (Q/q_i)^{-1}]_{q_i} * (Q/q_i) mod p_j`` for each target p_j, with
        the digits ``[.]_{q_i}`` taken centred in (-q_i/2, q_i/2]: the result is the centred value
        of ``a`` plus ``u * Q`` with ``|u| <= len(src)/2`` and u of mean ~0.  Centring matters in
        ModDown, where u becomes noise: uncentred digits bias it by ~len(src)/2 per coefficient,
        which the canonical embedding piles onto the slots near X = 1.
        """
        xp = self.xp
        hat_inv, hat_inv_f, hat_mod, hat_mod_f, neg_q = self._conv_consts(tuple(src), tuple(dst))
        ts = self.tables(src)
        td = self.tables(dst)
        if self.compiled:
            a = np.ascontiguousarray(a)
            out = np.empty((len(dst), a.shape[1]), dtype=np.uint64)
            run_split(lk.base_convert_cols, (a, ts.p[:, 0], hat_inv[:, 0], hat_inv_f[:, 0], td.p[:, 0], td.pinv[:, 0],
                                             hat_mod, hat_mod_f, neg_q, out), a.shape[1], len(src) + len(dst))
            return out
        return self._base_convert_reference(a, ts, td, hat_inv, hat_inv_f, hat_mod, hat_mod_f, neg_q)

    def _base_convert_reference(self, a: Array, ts: LimbTables, td: LimbTables, hat_inv: Array, hat_inv_f: Array,
                                hat_mod: Array, hat_mod_f: Array, neg_q: Array) -> Array:
        xp = self.xp
        y = ma.mulmod_shoup(a, hat_inv, hat_inv_f, ts.p, xp)
        high = xp.sum(y > (ts.p >> np.uint64(1)), axis=0, dtype=xp.uint64)   # digits taken as y - q_i
        acc = high[None, :] * neg_q.reshape(-1, 1)
        for i in range(a.shape[0]):
            term = ma.mulmod_shoup(y[i: i + 1], hat_mod[:, i: i + 1], hat_mod_f[:, i: i + 1], td.p, xp)
            acc = acc + term
        return ma.reduce_wide(acc, td.p, td.pinv, xp)


    # ---- rescale ---------------------------------------------------------------------
    @counted("rescale")
    def rescale(self, a: Array, idx: Idx) -> Array:
        """Divide by the last prime of ``idx`` with rounding: NTT-form limbs ``idx`` -> ``idx[:-1]``.

        The dropped limb is brought to coefficient form, centred, reduced into each
        remaining prime, brought back to NTT form and subtracted; then each limb is
        multiplied by q_last^{-1}.  :meth:`rescale_tail` and :meth:`rescale_keep` are the two
        halves, for a placement where the dropped limb lives on another device.
        """
        keep, last = tuple(idx[:-1]), idx[-1]
        return self.rescale_keep(a[:-1], self.rescale_tail(a[-1:], last), keep, last)

    def rescale_many(self, a: Array, idx: Idx, count: int) -> Array:
        """Divide by the product of the last ``count`` primes of ``idx`` with rounding (composite scaling).

        The dropped limbs are brought to coefficient form and base-converted (centred digits) to
        the kept primes -- a ModDown with those primes in the role of P: one NTT per kept limb
        instead of one per kept limb and dropped prime.  The result is within one unit of the
        exact rounded quotient, like a key switch's ModDown.
        """
        if count == 1:
            return self.rescale(a, idx)
        idx = tuple(idx)
        keep, tail = idx[:-count], idx[-count:]
        conv = self.ntt(self.base_convert(self.intt(a[-count:], tail), tail, keep), keep)
        q_tail = math.prod(self.primes[i] for i in tail)
        inv = [pow(q_tail % self.primes[i], -1, self.primes[i]) for i in keep]
        return self.mul_scalar(self.sub(a[: len(keep)], conv, keep), inv, keep)

    def rescale_tail(self, a_last: Array, last: int) -> Array:
        """The dropped limb (shape (1, N), NTT form) in coefficient form: what its owner shares."""
        return self.intt(a_last, (last,))

    def rescale_keep(self, a_keep: Array, tail: Array, keep: Idx, last: int) -> Array:
        """Rescale the limbs ``keep`` (NTT form) given the dropped limb ``last`` in coefficient form."""
        xp = self.xp
        keep = tuple(keep)
        if not keep:
            return a_keep
        q_last = self.primes[last]
        tk = self.tables(keep)
        shift_host = np.array([(-q_last) % self.primes[i] for i in keep], dtype=np.uint64)
        if self.compiled and tail.dtype == np.uint64:
            tail_row = np.ascontiguousarray(tail.reshape(-1))
            low = np.empty((len(keep), self.n), dtype=np.uint64)
            run_split(lk.rescale_lift_cols, (tail_row, np.uint64(q_last), tk.p[:, 0], tk.pinv[:, 0], shift_host, low),
                      self.n, len(keep) + 1)
        else:
            low = ma.reduce_wide(tail, tk.p, tk.pinv, xp)          # (k, N): tail mod q_i
            # centre: values above q_last/2 stand for tail - q_last
            shift = self.backend.asarray(shift_host.reshape(-1, 1))
            low = xp.where(tail > np.uint64(q_last // 2), ma.addmod(low, shift, tk.p, xp), low)
        low = self.ntt(low, keep)
        inv = [pow(q_last, -1, self.primes[i]) for i in keep]
        return self.mul_scalar(self.sub(a_keep, low, keep), inv, keep)

    # ---- exact CRT reconstruction ------------------------------------------------------
    def to_float(self, a: Array, idx: Idx) -> Array:
        """Centred integer values of coefficient-form limbs as float64, shape ``(N,)``.

        Uses as few leading limbs as hold the value: Garner's mixed-radix digits on
        ``k`` limbs, checked against limb ``k``; on mismatch ``k`` doubles.  Exact up to
        float64 rounding of the final value (relative 2**-53).
        """
        k = 1
        while True:
            k = min(k, len(idx))
            pos, neg = self._garner(a[:k], idx[:k]), self._garner(self.neg(a[:k], idx[:k]), idx[:k])
            if k == len(idx) or self._matches(pos, neg, a[k], idx[:k], idx[k]):
                break
            k *= 2
        return self.xp.where(pos[0] <= neg[0], pos[0], -neg[0])

    def _garner(self, a: Array, idx: Idx) -> tuple[Array, list[Array]]:
        """Mixed-radix digits of each column and their float value."""
        xp = self.xp
        digits: list[Array] = []
        for i, qi in enumerate(idx):
            t = a[i: i + 1]
            ti = self.tables((qi,))
            for j, qj in enumerate(idx[:i]):
                vj = ma.reduce_wide(digits[j], ti.p, ti.pinv, xp)
                inv = pow(self.primes[qj], -1, self.primes[qi])
                t = ma.submod(t, vj, ti.p, xp)
                t = ma.mulmod(t, xp.full_like(t, inv), ti.p, ti.pinv, xp)
            digits.append(t)
        val = xp.zeros(a.shape[1], dtype=xp.float64)
        for i in range(len(idx) - 1, -1, -1):
            val = val * float(self.primes[idx[i]]) + digits[i][0].astype(xp.float64)
        return val, digits

    def _matches(self, pos: tuple[Array, list[Array]], neg: tuple[Array, list[Array]], check: Array,
                 idx: Idx, extra: int) -> bool:
        """Does the reconstruction from ``idx`` agree with the residue mod ``extra``?"""
        xp = self.xp
        te = self.tables((extra,))

        def residue(digits: list[Array]) -> Array:
            acc = xp.zeros_like(check[None])
            radix = 1
            for d, qi in zip(digits, idx):
                term = ma.mulmod(ma.reduce_wide(d, te.p, te.pinv, xp), xp.full_like(d, radix % self.primes[extra]),
                                 te.p, te.pinv, xp)
                acc = ma.addmod(acc, term, te.p, xp)
                radix *= self.primes[qi]
            return acc[0]

        use_pos = pos[0] <= neg[0]
        want = xp.where(use_pos, check, ma.negmod(check, te.p[0], xp))
        got = xp.where(use_pos, residue(pos[1]), residue(neg[1]))
        return bool(xp.all(got == want))


def _powers(root: int, n: int, q: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    x = 1
    for i in range(n):
        out[i] = x
        x = x * root % q
    return out
