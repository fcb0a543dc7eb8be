"""Array backends: NumPy on the CPU, CuPy on NVIDIA GPUs.

Every kernel in :mod:`fhe` is written once against an *array module* ``xp``
(``numpy`` or ``cupy``); a :class:`Backend` names which one a context uses and
moves host data onto it.  Arrays stay on their device: nothing in the hot
paths calls :func:`Backend.to_host`.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (e.g. CuPy without a visible GPU)."""


def cupy_available() -> tuple[bool, str]:
    """Return ``(True, "")`` when CuPy imports and sees a GPU, else ``(False, reason)``."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library failing to load
        return False, f"cupy is not importable ({exc.__class__.__name__}: {exc}); install the 'gpu' extra"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"cupy found no CUDA device ({exc})"
    if count < 1:
        return False, "cupy found no CUDA device"
    return True, ""


@dataclass(frozen=True)
class Backend:
    """An array module plus the device it allocates on.

    ``name`` is ``"numpy"`` or ``"cupy"``; ``device`` is the CUDA device id for
    CuPy (ignored for NumPy).
    """

    name: str = "numpy"
    device: int = 0

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise ValueError(f"unknown backend {self.name!r}; valid backends: {', '.join(BACKENDS)}")
        if self.name == "cupy":
            ok, why = cupy_available()
            if not ok:
                raise BackendUnavailable(f"backend 'cupy' cannot run here: {why}")

    @property
    def xp(self) -> ModuleType:
        """The array module (``numpy`` or ``cupy``)."""
        if self.name == "numpy":
            return np
        import cupy

        return cupy

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Copy host data ``a`` onto this backend's device."""
        if self.name == "numpy":
            return np.asarray(a, dtype=dtype)
        import cupy

        with cupy.cuda.Device(self.device):
            return cupy.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """Copy a device array back to a NumPy array (explicit, never in hot paths)."""
        if self.name == "numpy":
            return np.asarray(a)
        return a.get()

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on NumPy)."""
        if self.name == "cupy":
            import cupy

            cupy.cuda.Device(self.device).synchronize()


def get_backend(name: str = "numpy", device: int = 0) -> Backend:
    """Build a :class:`Backend` by name, with a clear error for unknown names."""
    return Backend(name=name, device=device)
