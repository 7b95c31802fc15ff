"""Retrying inside a call's deadline: exponential backoff with jitter (one policy for every retry loop in api)."""

from __future__ import annotations

import asyncio
import random
import time


class Retry:
    """Backoff for one call: 20 ms doubling to 200 ms, jittered, never past the call's deadline.

    Example:
        >>> retry = Retry(deadline)
        >>> while True:
        ...     try: return await attempt()
        ...     except Unavailable:
        ...         if not await retry.pause(): raise
    """

    FIRST_S = 0.02
    CAP_S = 0.2

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.delay = self.FIRST_S
        self.attempts = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def pause(self) -> bool:
        """Sleep the next backoff interval; False (without sleeping) if the deadline would pass first."""
        pause = self.delay * (0.5 + random.random())
        if self.remaining() <= pause:
            return False
        self.attempts += 1
        await asyncio.sleep(pause)
        self.delay = min(self.delay * 2, self.CAP_S)
        return True
