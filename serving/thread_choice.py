"""How many torch threads the chat engine's next decoding step runs with: the count measured fastest lately.

Neither one thread nor all the cores is right everywhere. A decoding step is a few hundred parallel regions
whose threads meet at a barrier. On an idle machine more threads read the weights faster than one; when other
runnable threads hold the cores (the event loop, the HTTP server, other processes), every region waits for its
descheduled worker, and a step on more threads can take several times as long as on one. So the engine measures
instead of guessing: it times its steps per thread count and batch size, runs the count with the lowest moving
average, and now and then runs another count once to see whether the machine has changed. A count that keeps
losing is tried less and less often.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def thread_counts(cores: int | None = None) -> tuple[int, ...]:
    """1, 2, 4, ... up to the cores this process may run on (at most 8: beyond that a step's regions are too
    small to share)."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    counts, count = [], 1
    while count <= min(cores, 8):
        counts.append(count)
        count *= 2
    return tuple(counts)


class ThreadChoice:
    """next(rows) says which count to run a step of rows sequences with; observe() is told how long it took.

    counts: the thread counts to choose among. explore_every: steps between two tries of a count that is not
    the best; each try it loses doubles its own interval, up to max_explore_every, and a win resets it. A try
    replaces the count's average (a single fast try is then run again at once, and a wrong one soon loses).
    smoothing: the weight of a new step time in the moving average.
    """

    def __init__(self, counts: Sequence[int], *, explore_every: int = 32, max_explore_every: int = 1024,
                 smoothing: float = 0.25) -> None:
        if not counts:
            raise ValueError("ThreadChoice needs at least one thread count")
        self.counts = tuple(counts)
        self._explore_every = explore_every
        self._max_explore_every = max_explore_every
        self._smoothing = smoothing
        self._average: dict[tuple[int, int], float] = {}  # (threads, rows) -> seconds per step
        self._interval = {count: explore_every for count in self.counts}
        self._due = dict(self._interval)  # steps until each count is tried again
        self._exploring: int | None = None

    def next(self, rows: int) -> int:
        untried = [count for count in self.counts if (count, rows) not in self._average]
        if untried:
            return untried[0]
        best = self.best(rows)
        for count in self.counts:
            if count != best:
                self._due[count] -= 1
                if self._due[count] <= 0:
                    self._exploring = count
                    return count
        return best

    def best(self, rows: int) -> int:
        """The count with the lowest average for this batch size (the largest count when none is measured)."""
        measured = [(self._average[count, rows], count) for count in self.counts if (count, rows) in self._average]
        return min(measured)[1] if measured else self.counts[-1]

    def observe(self, threads: int, rows: int, seconds: float) -> None:
        key = (threads, rows)
        before = self._average.get(key)
        if threads == self._exploring:  # the average it had is stale: the try is what the machine does now
            self._exploring = None
            self._average[key] = seconds
            won = self.best(rows) == threads
            self._interval[threads] = (self._explore_every if won
                                       else min(2 * self._interval[threads], self._max_explore_every))
            self._due[threads] = self._interval[threads]
        else:
            self._average[key] = seconds if before is None else before + self._smoothing * (seconds - before)
