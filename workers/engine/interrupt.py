"""Cooperative stop and progress for long computations (torch-free: the service catches ``Stopped``).

The engine cannot be interrupted from outside in the middle of a tensor operation, so it asks:
a computation takes ``should_stop`` (a callable answering True once the work is no longer wanted:
the job was cancelled or ran past its deadline) and asks it before each of its steps, a step
being one layer of one memory-bounded block (analytic kernels) or one sampled network (Monte
Carlo). A step is bounded in time by the block sizing and the tile side (``cost.tile_side``), so a
stop lands within about one step. ``should_stop`` is called often (once per layer per block):
make it cheap, e.g. a flag a background thread sets, not a network round trip per call.
"""

from __future__ import annotations

from collections.abc import Callable

ShouldStop = Callable[[], bool]
Progress = Callable[[int, int], None]


class Stopped(Exception):
    """``should_stop()`` answered True: the computation was abandoned between two of its steps."""

    def __init__(self, done: int, total: int):
        self.done, self.total = done, total
        super().__init__(f"stopped after {done} of {total}")


class Steps:
    """The steps of one computation, counted as they are done.

    ``check()`` before a step raises ``Stopped`` if ``should_stop()`` says so; ``advance()`` after
    it counts it and tells ``progress(done, total)``.
    """

    def __init__(self, total: int, should_stop: ShouldStop | None = None, progress: Progress | None = None):
        self.total, self.done = total, 0
        self.should_stop, self.progress = should_stop, progress

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stopped(self.done, self.total)

    def advance(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
