"""Fast unique ids: 128 random bits as 32 hex characters.

Drawn from a generator seeded from the OS once per process (and again after ``fork``):
``uuid4()`` costs a system call per id, which shows at 10,000 steps. Ids are random from
their first character, so a short prefix (as the CLI shows) tells them apart.
"""

from __future__ import annotations

import os
import random

_random = random.Random(os.urandom(32))


def new_id() -> str:
    return f"{_random.getrandbits(128):032x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
