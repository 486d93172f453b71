"""How many CPU threads the models get, chosen by measurement while the run goes.

On a microscope PC the analysis shares the cores with Micro-Manager, a
viewer, a writer and whatever else runs. torch's default (one intra-op
thread per core) is fastest on an idle machine and collapses on a busy one:
its threads spin and wait for each other while another process holds a core
(issue 12 measured 2.6 s a frame with 2 threads against 0.45 s with 1 on 2
busy cores). :class:`ThreadTuner` keeps a running mean of the models' time
per frame for each thread count it tries, uses the fastest, and tries another
count every ``probe_every`` frames, or at once when a frame takes more than
``surge`` times the running mean of the count in use (the machine got busy).
A try replaces the mean of the count tried (its old mean is from another state
of the machine). The decision is made on the frames' own times; nothing is
timed on the side.
"""

from __future__ import annotations

import os

__all__ = ["ThreadTuner", "thread_candidates"]


def thread_candidates(cores: int | None = None) -> tuple[int, ...]:
    """Thread counts worth trying on a machine with ``cores`` CPUs: 1, 2, 4 ...
    up to the cores (at most 8)."""
    n = max(1, min(cores or os.cpu_count() or 1, 8))
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    if out[-1] != n:
        out.append(n)
    return tuple(out)


class ThreadTuner:
    """Picks the thread count for the next frame from the times of the last.

    Parameters
    ----------
    candidates : thread counts to choose from (the largest is tried first)
    probe_every : frames between two tries of another count
    surge : a frame this many times slower than the running mean of its
        count makes the next frame a try of another count
    weight : weight of the newest frame in the running means
    """

    def __init__(
        self,
        candidates: tuple[int, ...],
        *,
        probe_every: int = 50,
        surge: float = 2.0,
        weight: float = 0.3,
    ) -> None:
        if not candidates:
            raise ValueError("ThreadTuner needs at least one thread count")
        self.candidates = tuple(sorted(set(candidates), reverse=True))
        self.probe_every = int(probe_every)
        self.surge = float(surge)
        self.weight = float(weight)
        #: thread count -> running mean of the models' time per frame, ms
        self.mean_ms: dict[int, float] = {}
        self._current = self.candidates[0]
        self._best = self._current
        self._since_probe = 0
        self._next_probe = 1  # index into candidates of the next one to try

    @property
    def best(self) -> int:
        """The thread count with the lowest running mean so far."""
        return self._best

    def threads(self) -> int:
        """The thread count for the next frame."""
        return self._current

    def record(self, threads: int, ms: float) -> None:
        """The models took ``ms`` on a frame with ``threads`` threads."""
        old = self.mean_ms.get(threads)
        surged = old is not None and ms > self.surge * old
        w = self.weight
        if old is None or threads != self._best:
            # a try of another count: its old mean is from another state of
            # the machine, the new time is what it costs now
            self.mean_ms[threads] = ms
        else:
            self.mean_ms[threads] = (1 - w) * old + w * ms
        self._best = min(self.mean_ms, key=self.mean_ms.__getitem__)
        self._since_probe += 1
        untried = [c for c in self.candidates if c not in self.mean_ms]
        if untried:
            self._current = untried[0]
        elif len(self.candidates) > 1 and (
            surged or self._since_probe >= self.probe_every
        ):
            # the best may have changed with this frame: go there; else try
            # another count
            self._current = (
                self._best if self._best != threads else self._probe_target()
            )
            self._since_probe = 0
        else:
            self._current = self._best

    def _probe_target(self) -> int:
        """The next count other than the best, in turn."""
        others = [c for c in self.candidates if c != self._best]
        pick = others[self._next_probe % len(others)]
        self._next_probe += 1
        return pick
