"""How many CPU threads the models get, chosen by measurement while the run goes.

On a microscope PC the analysis shares the cores with Micro-Manager, a
viewer, a writer and whatever else runs. torch's default (one intra-op
thread per core) is fastest on an idle machine and collapses on a busy one:
its threads spin and wait for each other while another process holds a core
(issue 12 measured 2.6 s a frame with 2 threads against 0.45 s with 1 on 2
busy cores). :class:`ThreadTuner` keeps a running mean of the models' time
per frame for each thread count it tries, uses the fastest (or fewer threads
within ``near`` of it), and tries another
count every ``probe_every`` frames, or at once when a frame takes more than
``surge`` times the running mean of the count in use (the machine got busy)
or less than that mean divided by ``surge`` (it got quiet). A try replaces the
mean of the count tried (its old mean is from another state of the machine).
A try that loses doubles the wait before the next (up to
``max_probe_every`` frames): under contention a try of two threads costs a
slow frame, and the frames queued behind it wait too (issue 12 measured the
periodic tries as most of the frame→result p99 beside two busy processes);
a try that wins, or a change of the machine's state, brings the wait back to
``probe_every``. The decision is made on the frames' own times; nothing is
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
    probe_every : frames between two tries of another count (at first, and
        after a try that won or a change of the machine's state)
    max_probe_every : the longest wait between tries, frames (tries that
        lose double the wait up to this)
    surge : a frame this many times slower (or faster) than the running mean
        of its count makes the next frame a try of another count
    weight : weight of the newest frame in the running means
    near : a count within this fraction of the fastest mean counts as fast;
        of those, the fewest threads are used
    """

    def __init__(
        self,
        candidates: tuple[int, ...],
        *,
        probe_every: int = 50,
        max_probe_every: int = 800,
        surge: float = 2.0,
        weight: float = 0.3,
        near: float = 0.1,
    ) -> None:
        if not candidates:
            raise ValueError("ThreadTuner needs at least one thread count")
        self.candidates = tuple(sorted(set(candidates), reverse=True))
        self.probe_every = int(probe_every)
        self.max_probe_every = max(self.probe_every, int(max_probe_every))
        #: frames to wait before the next periodic try (grows while tries lose)
        self.wait = self.probe_every
        self.surge = float(surge)
        self.weight = float(weight)
        self.near = float(near)
        #: thread count -> running mean of the models' time per frame, ms
        self.mean_ms: dict[int, float] = {}
        self._current = self.candidates[0]
        self._best = self._current
        self._since_probe = 0
        self._next_probe = 1  # index into candidates of the next one to try

    @property
    def best(self) -> int:
        """The thread count in use between tries: the fewest threads whose
        running mean is within ``near`` of the lowest."""
        return self._best

    def threads(self) -> int:
        """The thread count for the next frame."""
        return self._current

    def record(self, threads: int, ms: float) -> None:
        """The models took ``ms`` on a frame with ``threads`` threads."""
        old = self.mean_ms.get(threads)
        tried = old is not None and threads != self._best
        # the machine got busier or quieter: the means no longer hold
        # (a try's time against its own old mean says nothing: that mean is
        # from another state of the machine)
        changed = (
            old is not None
            and not tried
            and (ms > self.surge * old or ms * self.surge < old)
        )
        w = self.weight
        if old is None or threads != self._best:
            # a try of another count: its old mean is from another state of
            # the machine, the new time is what it costs now
            self.mean_ms[threads] = ms
        else:
            self.mean_ms[threads] = (1 - w) * old + w * ms
        self._best = self._fewest_near_fastest()
        if changed or (tried and threads == self._best):
            self.wait = self.probe_every
        elif tried:  # a try that lost: wait longer before the next
            self.wait = min(2 * self.wait, self.max_probe_every)
        self._since_probe += 1
        untried = [c for c in self.candidates if c not in self.mean_ms]
        if untried:
            self._current = untried[0]
        elif len(self.candidates) > 1 and (changed or self._since_probe >= self.wait):
            # the best may have changed with this frame: go there; else try
            # another count
            self._current = (
                self._best if self._best != threads else self._probe_target()
            )
            self._since_probe = 0
        else:
            self._current = self._best

    def _fewest_near_fastest(self) -> int:
        """The fewest threads whose mean is within ``near`` of the fastest
        count's: a thread that buys little leaves its core to the
        acquisition, the writer and the rest of the microscope's software,
        and fewer threads suffer less when the machine gets busy."""
        fastest = min(self.mean_ms.values())
        return min(c for c, m in self.mean_ms.items() if m <= fastest * (1 + self.near))

    def _probe_target(self) -> int:
        """The next count other than the best, in turn."""
        others = [c for c in self.candidates if c != self._best]
        pick = others[self._next_probe % len(others)]
        self._next_probe += 1
        return pick
