"""argparse value types for the `aegis` command line: every number in a stated range, every comma list parsed
and checked, every name checked against what exists; each refusal says what would be right."""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import NoReturn
from pathlib import Path

#: the longest sequence a plan is built for: 4x the study's longest (16384 tokens, which takes ~40 s and 1.5 GiB
#: to plan on 2 cores); beyond it planning takes many minutes and tens of GiB of host memory
MAX_SEQ = 2 ** 16
#: the most devices a plan is built for (the profiles here describe at most 8 per node)
MAX_DEVICES = 1024
#: the largest model dimension (d_model, d_ff, heads, layers) of the configurable tiny model
MAX_DIM = 2 ** 16


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``aegis: error: <prog>: <message>``) raised as
    :class:`~aegis.safeio.UsageError` for the caller's error boundary, not usage text and ``SystemExit``."""

    def error(self, message: str) -> NoReturn:
        from .safeio import UsageError

        where = self.prog.removeprefix("aegis").strip()
        raise UsageError(f"{where + ': ' if where else ''}{message} (see `{self.prog} --help`)")


def int_in(lo: int, hi: int | None = None, why: str = "") -> Callable[[str], int]:
    """argparse type: a whole number in [lo, hi]."""
    rng = f"at least {lo}" + (f" and at most {hi}" if hi is not None else "")

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {rng}, got {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"expected a whole number {rng}{why}, got {n}")
        return n

    parse.__name__ = "int"
    return parse


def float_in(lo: float = 0.0, hi: float | None = None) -> Callable[[str], float]:
    """argparse type: a finite number in [lo, hi]."""
    rng = f">= {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a finite number {rng}, got {text!r}") from None
        if not (math.isfinite(x) and x >= lo and (hi is None or x <= hi)):
            raise argparse.ArgumentTypeError(f"expected a finite number {rng}, got {text!r}")
        return x

    parse.__name__ = "float"
    return parse


def _items(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got an empty one ({text!r})")
    return items


def int_list(lo: int, hi: int | None = None) -> Callable[[str], list[int]]:
    """argparse type: a non-empty comma list of whole numbers, each in [lo, hi]."""
    one = int_in(lo, hi)

    def parse(text: str) -> list[int]:
        return [one(x) for x in _items(text)]

    parse.__name__ = "list of whole numbers"
    return parse


def name_list(valid: Callable[[], Iterable[str]], what: str, paths: bool = False) -> Callable[[str], list[str]]:
    """argparse type: a non-empty comma list of names from ``valid()`` (``paths``: or existing .json files)."""

    def parse(text: str) -> list[str]:
        names = _items(text)
        ok = list(valid())
        bad = [n for n in names if n not in ok and not (paths and n.endswith(".json") and Path(n).is_file())]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(map(repr, bad))}; valid: {', '.join(ok)}"
                                             + (" (or a profile .json path)" if paths else ""))
        return names

    parse.__name__ = f"list of {what}"
    return parse


def text(what: str = "text") -> Callable[[str], str]:
    """argparse type: a string with something in it."""

    def parse(s: str) -> str:
        if not s.strip():
            raise argparse.ArgumentTypeError(f"expected a non-empty {what}, got {s!r}")
        return s

    parse.__name__ = what
    return parse


def models() -> list[str]:
    from .workloads import MODELS

    return list(MODELS)


def strategies() -> list[str]:
    from .placement import STRATEGIES

    return list(STRATEGIES)


def hardware() -> list[str]:
    from .hardware import hardware_names

    return hardware_names()


positive = int_in(1)
seed = int_in(0)
seq = int_in(1, MAX_SEQ, why=" (longer sequences take too long and too much memory to plan)")
devices = int_in(1, MAX_DEVICES)
dim = int_in(1, MAX_DIM)
nonneg = float_in(0.0)


def scheduler(text: str) -> str:
    """argparse type: where a sweep runs -- ``local``, ``dask-local`` or ``dask://HOST:PORT`` (normalised)."""
    from sim.executors import parse_scheduler

    try:
        return parse_scheduler(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


scheduler.__name__ = "scheduler"
