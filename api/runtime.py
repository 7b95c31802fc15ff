"""One Ray runtime per process: start it once (or join the application's / a cluster's), then reuse it."""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

_lock = threading.Lock()
_owned = False
_address: str | None = None

# The local default caps the object store: messages travel in small batches, never as huge objects.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024


def _set_runtime_environment() -> None:
    # Every process of the runtime must agree on these; the workers inherit the driver's environment.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _start_or_join(address: str | None) -> None:
    global _owned, _address
    import ray
    with _lock:
        if ray.is_initialized():
            return
        _set_runtime_environment()
        common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False, "namespace": "ffchat"}
        if address is None:
            ray.init(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES, **common)
            _owned = True
            atexit.register(_shutdown_owned)
        else:
            ray.init(address=address, **common)
        _address = address


def _shutdown_owned() -> None:
    import ray
    if _owned and ray.is_initialized():
        ray.shutdown()


async def ensure_ray(address: str | None) -> None:
    """Start a local runtime (address None, no runtime yet), or join `auto` / `host:port`.

    Reuses a runtime this process already has. Starting a local runtime takes seconds and happens
    once per process; it runs on the calling thread because Ray installs signal handlers that only
    the main thread may set.
    """
    import ray
    if ray.is_initialized():
        return
    _start_or_join(address)


def owns_runtime() -> bool:
    return _owned


def cpu_count() -> int:
    import ray
    try:
        return max(1, min(256, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))))
    except Exception:
        return max(1, min(256, os.cpu_count() or 1))
