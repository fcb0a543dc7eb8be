"""Placement strategies behind one interface: ``place(PlacementContext) -> Placement``."""
from __future__ import annotations

from collections.abc import Callable

from . import aegis, limb, single, tensor, tensor_cerium, token
from .base import MODES, Placement, PlacementContext, PlacementError, edge_comm, limb_internal_comm

STRATEGIES: dict[str, Callable[[PlacementContext], Placement]] = {
    "single": single.place,
    "limb": limb.place,
    "tensor": tensor.place,
    "tensor-cerium": tensor_cerium.place,
    "token": token.place,
    "aegis": aegis.place,
}


def get_strategy(name: str) -> Callable[[PlacementContext], Placement]:
    """The placement function of a strategy name (error lists the valid names)."""
    if name not in STRATEGIES:
        raise PlacementError(f"unknown strategy {name!r}; valid strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


__all__ = ["MODES", "STRATEGIES", "Placement", "PlacementContext", "PlacementError", "edge_comm",
           "get_strategy", "limb_internal_comm"]
