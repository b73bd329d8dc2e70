"""Which invocation runs next: the scheduling state of one run, as plain data.

The state (all guarded by ``lock``, which the run shares)
--------------------------------------------------------
``waiting``     invocations whose upstream invocations have not all finished. Each keeps a
                count (``Invocation.waiting``) and sits in its upstreams' ``dependents``.
``ready``       a FIFO of invocations whose inputs exist, waiting for a free slot.
``running``     how many invocations hold one of the ``slots`` (the run's parallelism).
``unfinished``  invocations (and child runs) not finished yet; the run ends at zero.

Policy
------
Ready invocations start in the order they became ready, as many as there are free slots
(:meth:`Scheduler.claim`). When an invocation finishes, its dependents' counts drop and
those reaching zero join ``ready`` (:meth:`Scheduler.finish`); the caller then claims
again, so *every* successor it made ready starts while slots are free. How many slots may
be used adapts to the work (:meth:`Scheduler.concurrency`).

The scheduler knows nothing of stores, executors or events: the run asks it what to start
and tells it what finished.

>>> from types import SimpleNamespace as Inv
>>> a, b, c = (Inv(finished=False, ok=True, upstream=[], dependents=[], waiting=0, start_time=None) for _ in "abc")
>>> b.upstream = c.upstream = [a]
>>> s = Scheduler(slots=2)
>>> [s.schedule(x) for x in (a, b, c)], len(s.ready), a.dependents == [b, c]
([None, None, None], 1, True)
>>> s.claim() == [a], s.running
(True, 1)
>>> a.finished = True; s.finish(a), s.claim() == [b, c], s.running
([], True, 2)
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._invocation import Invocation
    from ._runner import StepResult

_CPUS = os.cpu_count() or 1
# What an invocation without dependents holds (one shared list, never appended to: see
# ``schedule``), instead of an empty list of its own.
NO_DEPENDENTS: list[Invocation] = []


class Scheduler:
    """``ready``/``running``/``unfinished`` of one run and the rules that move them."""

    def __init__(self, slots: int) -> None:
        self.lock = threading.RLock()
        self.all_done = threading.Condition(self.lock)
        self.ready: deque[Invocation] = deque()
        self.running = 0
        self.slots = slots
        self.unfinished = 0
        self.cpu_ratio: float | None = None  # CPU/wall of recent in-process steps

    def schedule(self, inv: Invocation) -> Invocation | None:
        """Make ``inv`` wait for its unfinished upstreams, or put it on ``ready``.

        Returns the upstream invocation that failed or did not run, if any: then ``inv``
        can never run and the caller records it so. Call with ``lock`` held.
        """
        blocked_by = None
        pending = 0
        for up in inv.upstream:
            if not up.finished:
                pending += 1
                if up.dependents:
                    up.dependents.append(inv)
                else:  # never append to an empty list: it may be the shared NO_DEPENDENTS
                    up.dependents = [inv]
            elif not up.ok:
                blocked_by = up
        inv.waiting = pending
        if blocked_by is None and pending == 0:
            self.ready.append(inv)
        return blocked_by

    def claim(self, adaptive: bool = True) -> list[Invocation]:
        """Take ready invocations while slots are free; each now holds a slot. ``adaptive=False``
        uses every slot whatever ``concurrency`` says (steps that run in other processes or on
        Ray do not compete for this process's GIL, and a batch of them needs many in flight)."""
        claimed: list[Invocation] = []
        with self.lock:
            limit = self.concurrency() if adaptive else self.slots
            while self.ready and self.running < limit:
                inv = self.ready.popleft()
                if inv.finished:
                    continue
                self.running += 1
                inv.start_time = time.time()  # claimed: a stop no longer treats it as queued
                claimed.append(inv)
        return claimed

    def finish(self, inv: Invocation) -> list[Invocation]:
        """``inv`` finished (``inv.finished`` is set): free its slot, move its dependents on.

        Returns the dependents that can never run because ``inv`` did not succeed. Call
        with ``lock`` held.
        """
        if inv.start_time is not None:
            self.running -= 1
        unrunnable = []
        for dep in inv.dependents:
            if dep.finished:
                continue
            if inv.ok:
                dep.waiting -= 1
                if dep.waiting == 0:
                    self.ready.append(dep)
            else:
                unrunnable.append(dep)
        inv.dependents = NO_DEPENDENTS
        return unrunnable

    def release(self) -> None:
        """A claimed invocation gives its slot back without finishing (it waits for a retry)."""
        with self.lock:
            self.running -= 1

    # -- the end of the run ------------------------------------------------------------------------
    def add(self, n: int = 1) -> None:
        """``n`` more invocations (or child runs) must finish before the run ends."""
        with self.lock:
            self.unfinished += n

    def done(self) -> None:
        """One of them finished."""
        with self.lock:
            self.unfinished -= 1
            if self.unfinished == 0:
                self.all_done.notify_all()

    def wait_all(self) -> None:
        with self.all_done:
            while self.unfinished:
                self.all_done.wait(0.5)

    # -- adaptive concurrency ----------------------------------------------------------------------
    def concurrency(self) -> int:
        """How many invocations may hold a slot now: all ``slots`` while steps mostly wait
        (I/O, sleeps, remote calls), fewer while they mostly compute in this process, where
        extra threads only fight over the GIL (a 5,000-step fan-out of trivial steps ran
        2x faster on 2 threads than on 16). Learnt from the CPU/wall ratio of in-process steps.

        >>> s = Scheduler(slots=16); s.concurrency()
        16
        >>> s.cpu_ratio = 1.0; s.concurrency() == min(16, _CPUS)
        True
        """
        ratio = self.cpu_ratio
        if ratio is None:
            return self.slots
        return max(min(self.slots, _CPUS), min(self.slots, int(_CPUS / max(ratio, 1e-3))))

    def learn(self, result: StepResult | Any) -> None:
        """Fold the CPU/wall ratio of an in-process step into ``cpu_ratio``."""
        wall = result.end_time - result.start_time
        if result.cpu_time is None or wall <= 0:
            return
        ratio = min(result.cpu_time / wall, 1.0)
        previous = self.cpu_ratio
        self.cpu_ratio = ratio if previous is None else 0.8 * previous + 0.2 * ratio
