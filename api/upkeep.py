"""A bridge's background upkeep: periodic steps (shard snapshot refresh, embedding) that hold the
bridge weakly, so an unclosed bridge can still be collected, and stop once it is closed."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Awaitable, Callable

logger = logging.getLogger(__name__)
FIRST_RUN_DELAY_S = 0.5

Step = Callable[[Any], Awaitable[Any]]


def start_upkeep(bridge: Any, steps: list[tuple[float, Step]]) -> asyncio.Future[Any]:
    """Run every `(interval_s, step)` as its own loop; one future for all, which close() cancels.

    A step is a plain function of the bridge (e.g. `FFChatAppBridge.refresh_shard_snapshot`), never a
    bound method, which would keep the bridge alive.
    """
    reference = weakref.ref(bridge)
    return asyncio.gather(*(_every(reference, interval_s, step) for interval_s, step in steps))


async def _every(reference: "weakref.ReferenceType[Any]", interval_s: float, step: Step) -> None:
    """`step(bridge)` soon after start-up, then every `interval_s`, until the bridge is closed or
    collected; a failed step is logged and tried again at the next tick."""
    delay = FIRST_RUN_DELAY_S
    while True:
        await asyncio.sleep(delay)
        delay = interval_s
        bridge = reference()
        if bridge is None or bridge.is_closed:
            return
        try:
            await step(bridge)
        except Exception as exc:  # upkeep goes on: the previous snapshot, or the pending vectors, stay
            logger.debug("bridge upkeep %s failed: %s", getattr(step, "__name__", step), exc)
        del bridge
