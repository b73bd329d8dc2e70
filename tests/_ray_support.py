"""Ray for the tests: imported only by test modules that need it.

Ray is part of the ``test`` extra, so in CI (``CI`` set) a missing Ray is an error, never a
silent skip; on a developer machine without it those modules are skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            raise ImportError(
                "Ray is not installed but CI must run the Ray tests: install the test extra "
                "(pip install -e '.[test]')"
            ) from exc
        pytest.skip("Ray is not installed (pip install 'unspool[ray]')", allow_module_level=True)
    return ray


def local_ray_cluster(num_cpus: int = 2) -> Iterator[Any]:
    """A real local Ray instance with a fixed CPU count, for one test module."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
