"""Where evaluation keys live: replicated, seed-compressed, or sharded by rotation with a fetch cache.

Keys dominate a device's memory in encrypted Transformer inference (BERT-base on ``n16-boot``:
181 switching keys, 12.7 GiB, against 2.5 GiB of live ciphertexts per device under token
parallelism), and every device of a token-parallel placement uses every key.  A
:class:`KeyPolicy` says how they are stored:

* ``where = "replicated"`` -- every device holds every key it uses (at the highest level it uses it);
* ``where = "sharded"`` -- each key has one *owner* (keys dealt over the devices, largest first, to
  the device with the fewest owned bytes); any other device that runs an op needing the key fetches
  it into a per-device *key buffer* of ``budget`` bytes.  The schedule is static, so the buffer is
  managed by Belady's rule (on a miss, evict the resident key whose next use is farthest): the fewest
  fetches any buffer of that size can do.  A fetch is a ``send`` :class:`~aegis.comm.CommOp` from the
  owner (``args["key"]``) that may start as soon as the ops using the keys it displaces have finished
  (its ``after``), so it overlaps the compute in between, and that its first consumer waits for;
  ``args["until"]`` is the last op of the run it serves, after which the executor drops the copy;
* ``seeded`` -- keys are seed-compressed: the uniform half ``a`` of every digit is regenerated from a
  32-byte public seed where the key is used (:func:`fhe.rlwe.sampling.uniform_mod_from_seed`), so a
  key stores and moves half the bytes; every key switch then pays a ``keyexp`` primitive
  (:func:`fhe.costs.key_expand`) and the expanded half is scratch while it runs.

Only ops that run whole on one device take part: a limb-split op holds its own limbs of its keys
(:mod:`aegis.memory`).  Sizes come from :func:`fhe.costs.switching_key_bytes_at` (the one formula
the planner, the simulator and the executor share).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from typing import Any

from fhe.costs import switching_key_bytes_at

from .comm import CommOp
from .prims import KEY_PRIMS, Work
from .program import BOOT_KINDS, Op, Program

WHERE = ("replicated", "sharded")



@dataclass(frozen=True)
class KeyPolicy:
    """How evaluation keys are stored.

    Attributes:
        where: ``replicated`` or ``sharded`` (one owner per key, fetched elsewhere).
        seeded: keys kept seed-compressed (half the bytes; expanded before each key switch).
        budget_factor: the fetched-key buffer of a device, in multiples of the most bytes of fetched keys
            one of its ops needs at once (at least 1: an op's keys must all be resident while it runs).
    """

    where: str = "replicated"
    seeded: bool = False
    budget_factor: float = 2.0
    #: sharded: ``all`` keys, or ``app`` (the application's keys; bootstrapping's stay on every device that
    #: uses them -- each bootstrap stage needs its own large top-level key set, which a fetch buffer would
    #: refetch for every tile it refreshes)
    scope: str = "all"

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"key placement must be one of {', '.join(WHERE)}, got {self.where!r}")
        if self.scope not in ("all", "app"):
            raise ValueError(f"sharded key scope must be all or app, got {self.scope!r}")
        if self.budget_factor < 1:
            raise ValueError(f"key buffer factor must be >= 1, got {self.budget_factor}")

    @property
    def plain(self) -> bool:
        """Replicated and not seed-compressed: every device holds its keys whole (no key plan needed)."""
        return self.where == "replicated" and not self.seeded

    @property
    def label(self) -> str:
        s = self.where + ("(app)" if self.where == "sharded" and self.scope == "app" else "")
        s += "+seeded" if self.seeded else ""
        return s + (f" (buffer x{self.budget_factor:g})" if self.where == "sharded" else "")


@dataclass
class KeyPlan:
    """The keys of a placed, ordered program (bytes per device; lists indexed by device).

    Attributes:
        policy: how keys are stored.
        level: key name -> the level it is stored and sent at (the highest level any op uses it).
        owner: key name -> owning device (sharded only).
        stored: bytes every device holds for the whole run (owned or replicated keys).
        budget: bytes of the fetched-key buffer per device (0 when replicated).
        expand: scratch bytes for one expanded uniform half (seeded only), per device.
        counts: keys held permanently, per device.
        runs: per device, ``(after op or -1, until op, bytes)`` of every fetched copy's residency.
        fetches: the ``send`` ops that move keys (also in the plan's comm list).
    """

    policy: KeyPolicy
    level: dict[str, int]
    owner: dict[str, int] = field(default_factory=dict)
    stored: list[int] = field(default_factory=list)
    budget: list[int] = field(default_factory=list)
    expand: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    runs: list[list[tuple[int, int, int]]] = field(default_factory=list)
    fetches: list[CommOp] = field(default_factory=list)
    #: sharded with scope ``app``: keys held on every device that uses them (no owner, never fetched)
    local: list[str] = field(default_factory=list)
    #: copies evicted to make room (0: the buffer held every key it fetched until its last use)
    evictions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"policy": asdict(self.policy), "level": self.level, "owner": self.owner, "stored": self.stored,
                "budget": self.budget, "expand": self.expand, "counts": self.counts,
                "runs": [[list(r) for r in rs] for rs in self.runs], "local": self.local}

    @classmethod
    def from_dict(cls, d: dict[str, Any], fetches: list[CommOp]) -> "KeyPlan":
        return cls(KeyPolicy(**d["policy"]), {str(k): int(v) for k, v in d["level"].items()},
                   {str(k): int(v) for k, v in d["owner"].items()}, list(d["stored"]), list(d["budget"]),
                   list(d["expand"]), list(d["counts"]), [[tuple(r) for r in rs] for rs in d["runs"]], fetches,
                   list(d.get("local", [])))


def key_name(rotation: int | str, slots: int) -> str:
    """The name of a key: ``rot:<step mod slots>`` (one Galois element however the step is written; step 0
    is conjugation) or ``relin``."""
    return "relin" if rotation == "relin" else f"rot:{int(rotation) % slots}"


def op_keys(op: Op, slots: int) -> tuple[int, list[str]]:
    """(level its keys must cover or -1, names of the keys it needs).  The level is the highest of its key
    switches and of its inputs: an op may key-switch an input before bringing it down to its own level."""
    kl = op.key_level
    if kl < 0:
        return -1, []
    kl = max([kl, op.level] + [r[2] for r in op.reads])
    names = [key_name(r, slots) for r in op.rotations]
    if any(p == "relin" for p, _, _ in op.work):
        names.append("relin")
    return kl, sorted(set(names))


def with_key_expansion(work: Work) -> Work:
    """``work`` plus one ``keyexp`` per key switch (seed-compressed keys), at the key switch's level."""
    from .prims import merged

    extra = tuple(("keyexp", lvl, n) for p, lvl, n in work if p in KEY_PRIMS)
    return merged(work, extra) if extra else work


def key_table(program: Program) -> list[tuple[int, tuple[str, ...]]]:
    """Per op, (level its keys must cover or -1, key names): computed once per program (cached on it)."""
    cached = getattr(program, "_key_table", None)
    if cached is not None and len(cached) == len(program.ops):
        return cached
    slots = program.params.slots
    memo: dict[tuple, tuple[int, tuple[str, ...]]] = {}
    out = []
    for o in program.ops:
        if o.key_level < 0:
            out.append((-1, ()))
            continue
        sig = (o.work, o.rotations, o.level, tuple(r[2] for r in o.reads))
        v = memo.get(sig)
        if v is None:
            kl, names = op_keys(o, slots)
            v = memo[sig] = (kl, tuple(names))
        out.append(v)
    program._key_table = out          # type: ignore[attr-defined]
    return out


class Thrashing(Exception):
    """A key plan needs more fetches than the caller allows (its buffer thrashes)."""

    def __init__(self, fetches: int) -> None:
        super().__init__(f"more than {fetches} key fetches")
        self.fetches = fetches


def plan_keys(program: Program, assign: list[tuple[int, ...]], mode: list[str], orders: list[list[int]],
              policy: KeyPolicy, first_comm_id: int = 0, max_fetches: int | None = None) -> KeyPlan:
    """Owners, stored bytes, the fetch buffer and the fetches of ``policy`` on a placed, ordered program;
    :class:`Thrashing` as soon as the fetches exceed ``max_fetches``."""
    p = program.params
    G = len(orders)
    ops = program.ops
    seeded = policy.seeded
    table = key_table(program)
    use: list[list[tuple[int, int, tuple[str, ...], int]]] = [[] for _ in range(G)]  # (pos, op, names, level)
    level: dict[str, int] = {}
    level_on: list[dict[str, int]] = [dict() for _ in range(G)]
    for d in range(G):
        lv = level_on[d]
        for pos, i in enumerate(orders[d]):
            kl, names = table[i]
            if not names or (mode[i] == "limb" and len(assign[i]) > 1):
                continue
            use[d].append((pos, i, names, kl))
            for n in names:
                if lv.get(n, -1) < kl:
                    lv[n] = kl
        for n, kl in lv.items():
            if level.get(n, -1) < kl:
                level[n] = kl
    size = {n: switching_key_bytes_at(p, lvl, seeded) for n, lvl in level.items()}
    half = {n: switching_key_bytes_at(p, lvl, False) // 2 for n, lvl in level.items()}
    expand = [max((half[n] for n in level_on[d]), default=0) if seeded else 0 for d in range(G)]
    kp = KeyPlan(policy, dict(sorted(level.items())), expand=expand, runs=[[] for _ in range(G)])
    if policy.where == "replicated" or G == 1:
        kp.stored = [sum(switching_key_bytes_at(p, lvl, seeded) for lvl in level_on[d].values()) for d in range(G)]
        kp.counts = [len(level_on[d]) for d in range(G)]
        kp.budget = [0] * G
        return kp
    owned = [0] * G
    local: set[str] = set()                      # keys kept on every device that uses them
    if policy.scope == "app":
        local = {n for i, (kl, names) in enumerate(table) if names and ops[i].kind in BOOT_KINDS for n in names}
        for d in range(G):
            owned[d] += sum(switching_key_bytes_at(p, lvl, seeded) for n, lvl in level_on[d].items() if n in local)
    kp.local = sorted(local)
    for n in sorted((n for n in level if n not in local), key=lambda n: (-size[n], n)):   # largest first
        d = min(range(G), key=lambda d: (owned[d], d))
        kp.owner[n] = d
        owned[d] += size[n]
    kp.stored = owned
    kp.counts = [sum(1 for d2 in kp.owner.values() if d2 == d) + sum(1 for n in level_on[d] if n in local)
                 for d in range(G)]
    kp.budget = [0] * G
    size_at = [switching_key_bytes_at(p, lvl, seeded) for lvl in range(p.max_level + 1)]
    for d in range(G):
        need = max((size_at[kl] * sum(1 for n in names if kp.owner.get(n, d) != d)
                    for _, _, names, kl in use[d]), default=0)
        kp.budget[d] = int(need * policy.budget_factor)
        _belady(kp, d, use[d], size_at.__getitem__, ops,
                first_comm_id + len(kp.fetches), None if max_fetches is None else max_fetches - len(kp.fetches))
    return kp


def _belady(kp: KeyPlan, d: int, use: list[tuple[int, int, tuple[str, ...], int]], size_at, ops: list[Op],
            start_id: int, limit: int | None = None) -> None:
    """Fetches of device ``d`` under a buffer of ``kp.budget[d]`` bytes: on a miss, evict the resident copy whose
    next use is farthest (a max-heap of next uses, stale entries skipped).  A copy is fetched cut to the level
    its use needs; a later use at a higher level fetches the key again at that level."""
    import heapq

    never = 1 << 60
    # consecutive ops needing the same keys at the same level form one use (the same decisions, fewer steps)
    segs: list[tuple[int, int, tuple[str, ...], int]] = []          # (first op, last op, names, level)
    for _, i, names, kl in use:
        if segs and segs[-1][3] == kl and (segs[-1][2] is names or segs[-1][2] == names):
            segs[-1] = (segs[-1][0], i, names, kl)
        else:
            segs.append((i, i, names, kl))
    when: dict[str, list[int]] = {}
    for k, (_, _, names, _) in enumerate(segs):
        for n in names:
            if kp.owner.get(n, d) != d:
                when.setdefault(n, []).append(k)
    cursor = {n: 0 for n in when}          # index into when[n] of the next use after the current step
    resident: dict[str, list] = {}         # name -> [after op, last op, bytes, fetch index, last use index, level]
    nxt: dict[str, int] = {}               # resident name -> its next use index
    heap: list[tuple[int, str]] = []       # (-next use, name), possibly stale
    used = 0
    free = (-1, -1)                        # (use index, op) after which the latest evicted copy's space is free
    fetched: list[list] = []               # [name, op, after, bytes, level, until] (CommOps made at the end)

    def close(n: str) -> None:
        nonlocal used, free
        after, last, b, f, k_last, _ = resident.pop(n)
        nxt.pop(n, None)
        used -= b
        free = max(free, (k_last, last))
        kp.runs[d].append((after, last, b))
        fetched[f][5] = last

    for k, (i, last_i, names, kl) in enumerate(segs):
        mine = [n for n in names if kp.owner.get(n, d) != d]
        mine_set = set(mine)
        for n in mine:
            if n in resident and resident[n][5] >= kl:
                continue
            if n in resident:                  # held at a lower level than this use needs: fetch it again
                close(n)
            b = size_at(kl)
            held: list[tuple[int, str]] = []
            while used + b > kp.budget[d] and heap:
                negu, m = heapq.heappop(heap)
                if m not in resident or nxt.get(m) != -negu:
                    continue                                   # stale entry
                if m in mine_set:
                    held.append((negu, m))
                    continue
                close(m)
                kp.evictions += 1
            for h in held:
                heapq.heappush(heap, h)
            after = free[1]
            resident[n] = [after, i, b, len(fetched), k, kl]
            fetched.append([n, i, after, b, kl, i])
            if limit is not None and len(fetched) > limit:
                raise Thrashing(limit)
            used += b
        for n in mine:
            r = resident[n]
            r[1], r[4] = last_i, k
            w = when[n]
            j = cursor[n]
            while j < len(w) and w[j] <= k:
                j += 1
            cursor[n] = j
            nxt[n] = w[j] if j < len(w) else never
            heapq.heappush(heap, (-nxt[n], n))
    for n in list(resident):
        close(n)
    for j, (n, i, after, b, kl, until) in enumerate(fetched):
        op = ops[i]
        c = CommOp(start_id + j, "send", op.phase, op.layer, (kp.owner[n], d), root=kp.owner[n], nbytes=b,
                   after=(after,) if after >= 0 else (), before=(i,),
                   args={"key": n, "level": kl, "seeded": kp.policy.seeded, "until": until})
        c.total_bytes = b
        kp.fetches.append(c)
