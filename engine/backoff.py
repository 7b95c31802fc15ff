"""Exponential backoff for retrying a failed step (the one policy the log and the shard share)."""

from __future__ import annotations

from typing import Callable


class Backoff:
    """After a failure, wait `first_s`, then twice as long after each further one, at most `max_s`.

    Example:
        >>> retry = Backoff(0.05, 5.0, time.monotonic); retry.failed(); retry.waiting()
        True
    """

    def __init__(self, first_s: float, max_s: float, clock: Callable[[], float]) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._clock = clock
        self.delay_s = 0.0
        self.until = 0.0

    def failed(self) -> None:
        self.delay_s = min(self.max_s, max(self.first_s, self.delay_s * 2))
        self.until = self._clock() + self.delay_s

    def succeeded(self) -> None:
        self.delay_s = 0.0
        self.until = 0.0

    def waiting(self) -> bool:
        return self._clock() < self.until
