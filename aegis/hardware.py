"""Hardware profiles: the minimal shared definition the planner and the simulator both read.

A profile is a JSON file ``data/hardware/<name>.json`` (DESIGN §3).  The planner needs
only the device memory capacity; the simulator (sim/) reads the rest (bandwidths,
topology, launch overhead, calibrated kernel tables).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARDWARE_DIR = Path(__file__).resolve().parents[1] / "data" / "hardware"


class HardwareError(ValueError):
    """An unknown or malformed hardware profile; the message names the field or the valid names."""


@dataclass(frozen=True)
class HardwareProfile:
    """A named profile: ``memory_bytes`` is one device's capacity (bytes); ``raw`` is the whole file.

    ``source`` is what it was loaded from (a profile name, or the path of a custom file) and
    is what plans record, so a plan made for a custom file is simulated on that file.
    """

    name: str
    memory_bytes: int
    raw: dict[str, Any]
    source: str = ""


def hardware_names() -> list[str]:
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.json"))


def read_profile(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """The file and parsed JSON of a profile given by name (``h100-sxm``) or by path."""
    path = Path(name_or_path)
    if not (path.suffix == ".json" and path.exists()):
        path = HARDWARE_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise HardwareError(f"unknown hardware {name_or_path!r}; valid: {', '.join(hardware_names())} "
                                "(or a path to a profile .json)")
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HardwareError(f"{path}: not valid JSON ({exc})") from exc


def load_hardware(name_or_path: str) -> HardwareProfile:
    """Load a profile by name (``h100-sxm``) or by path to a JSON file."""
    path, raw = read_profile(name_or_path)
    try:
        mem = raw["device"]["memory_bytes"]
    except (KeyError, TypeError) as exc:
        raise HardwareError(f"{path}: missing field device.memory_bytes (device memory capacity in bytes)") from exc
    if not isinstance(mem, (int, float)) or mem <= 0:
        raise HardwareError(f"{path}: device.memory_bytes must be a positive number of bytes, got {mem!r}")
    custom = path.parent.resolve() != HARDWARE_DIR.resolve()
    return HardwareProfile(name=raw.get("name", path.stem), memory_bytes=int(mem), raw=raw,
                           source=str(path) if custom else path.stem)
