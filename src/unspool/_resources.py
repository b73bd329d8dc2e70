"""What a step asks for: ``settings={"resources": {...}}`` read into one small value.

The same spelling serves every executor. Locally, isolated steps are admitted while the
CPUs and memory they ask for fit the machine; on Ray the request becomes the task's
``num_cpus``/``num_gpus``/``memory``/``resources``. Accepted keys::

    cpu | cpu_count       CPUs (may be fractional); 1 when not given
    gpu | gpu_count       GPUs; 0 when not given
    memory                bytes as a number, or a string such as "512MB", "4GiB", "2g"
    custom                {name: amount} of custom resources (Ray), e.g. {"accelerator": 1}

>>> StepResources.from_settings({"resources": {"cpu": 2, "memory": "1.5GB"}})
StepResources(cpu=2.0, gpu=0.0, memory=1500000000, custom={})
>>> StepResources.from_settings({}).cpu
1.0
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from ._errors import StepDefinitionError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_KEYS = {"cpu", "cpu_count", "gpu", "gpu_count", "memory", "custom"}


@dataclass(frozen=True)
class StepResources:
    cpu: float = 1.0
    gpu: float = 0.0
    memory: int | None = None  # bytes
    custom: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None, *, step: str = "?") -> StepResources:
        raw = (settings or {}).get("resources") or {}
        if hasattr(raw, "model_dump"):  # a pydantic settings object
            raw = raw.model_dump(exclude_none=True)
        if not isinstance(raw, dict):
            raise StepDefinitionError(
                f"settings['resources'] of step {step!r} must be a dict such as "
                f"{{'cpu': 2, 'memory': '4GB'}}, got {raw!r}"
            )
        unknown = set(raw) - _KEYS
        if unknown:
            raise StepDefinitionError(
                f"settings['resources'] of step {step!r} has unknown key(s) {sorted(unknown)}; "
                f"valid keys are {sorted(_KEYS)} (put custom resources under 'custom')"
            )
        cpu = _number(raw.get("cpu", raw.get("cpu_count", 1)), "cpu", step)
        gpu = _number(raw.get("gpu", raw.get("gpu_count", 0)), "gpu", step)
        memory = raw.get("memory")
        custom = raw.get("custom") or {}
        if not isinstance(custom, dict):
            raise StepDefinitionError(f"settings['resources']['custom'] of step {step!r} must be a dict")
        return cls(
            cpu=cpu,
            gpu=gpu,
            memory=None if memory is None else parse_memory(memory, step),
            custom={str(k): _number(v, f"custom[{k!r}]", step) for k, v in custom.items()},
        )


def _number(value: Any, what: str, step: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number < 0:
        raise StepDefinitionError(
            f"settings['resources'][{what!r}] of step {step!r} must be a number >= 0, got {value!r}"
        )
    return number


def parse_memory(value: Any, step: str = "?") -> int:
    """Bytes from a number or a string with a unit.

    >>> parse_memory("4GiB"), parse_memory("512MB"), parse_memory(1024)
    (4294967296, 512000000, 1024)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise StepDefinitionError(
            f"settings['resources']['memory'] of step {step!r} must be bytes or a size such as "
            f"'512MB' or '4GiB', got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def machine_memory() -> int | None:
    """Physical memory of this machine in bytes (None where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
