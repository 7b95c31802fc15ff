"""One Ray runtime per process: start it once (or join the application's / a cluster's), then reuse it.

Security (contract §10.13): the local runtime this module starts accepts no process that lacks Ray's
auth token. With `RAY_AUTH_MODE` unset it runs with token auth on (the token file is
~/.ray/auth_token, created owner-only if missing). If the application explicitly set any other
mode (`disabled`), the runtime binds every listener to 127.0.0.1 instead, so no other machine can
reach it; if Ray cannot do that, the start is refused. Joining a cluster (`auto` / `host:port`)
changes nothing: the environment decides, as for any Ray driver.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from engine.config import MB

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_owned = False
METRICS_PORT_VARIABLE = "FFCHAT_METRICS_PORT"

# The local default caps the object store: messages travel in small batches, never as huge objects.
LOCAL_OBJECT_STORE_BYTES = 256 * MB
# Ray settings of the local runtime this module starts (Ray's `_system_config`). The raylet connects to
# its own object store right after starting it; when the store is not listening yet, the first attempt
# fails and the retry waits raylet_client_connect_timeout_milliseconds, 1 s by default. That stall hit
# 37 of 103 raylet starts on our 2-core machine and made ray.init 1 s slower each time (the driver
# polls for the node once a second). 100 attempts 100 ms apart keep Ray's 10 s budget.
LOCAL_SYSTEM_CONFIG: dict[str, Any] = {"raylet_client_connect_timeout_milliseconds": 100,
                                       "raylet_client_num_connect_attempts": 100}
AUTH_MODE_VAR = "RAY_AUTH_MODE"
LOOPBACK = "127.0.0.1"


class UnprotectedRuntimeError(RuntimeError):
    """The local runtime would accept connections from other machines without a token: not started."""


def default_token_path() -> Path:
    """Where Ray looks for the token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path.home() / ".ray" / "auth_token"


def token_auth_requested() -> bool:
    """What Ray 2.60 reads from RAY_AUTH_MODE: "token" (any case) turns auth on, any other value off."""
    return os.environ.get(AUTH_MODE_VAR, "").strip().lower() == "token"


def ensure_auth_token() -> Path | None:
    """Make sure a new local runtime finds its token; return the file written, if any.

    Does nothing when the token comes from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH or the default file
    exists. Otherwise writes a random 256-bit token to ~/.ray/auth_token, readable by its owner only
    (Ray would generate the same kind of token itself, but world-readable). Never overwrites a token
    another process wrote meanwhile: the file appears whole or not at all.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = default_token_path()
    if path.exists():
        _keep_private(path)
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
        return path
    finally:
        temporary.unlink(missing_ok=True)


def _keep_private(path: Path) -> None:
    """Ray writes its own token file readable by everyone (0644): make ours owner-only."""
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass  # not ours to change; Ray still reads it


def _set_runtime_environment() -> None:
    # Every process of the runtime must agree on these; the workers inherit the driver's environment.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def use_token_auth() -> None:
    """Switch this process (and the Ray processes it starts) to token auth, with a token to use.

    Sets RAY_AUTH_MODE=token, makes this process's Ray config see it and creates the token if
    none exists (see `ensure_auth_token`). For anything that starts Ray processes itself, such as a
    `ray.cluster_utils.Cluster` head, which, unlike ray.init(), does not create a missing token.
    """
    os.environ[AUTH_MODE_VAR] = "token"
    _refresh_auth_mode()
    ensure_auth_token()


def _refresh_auth_mode() -> None:
    """Make this process's Ray config see RAY_AUTH_MODE=token when it was set after Ray read its config.

    Ray reads the mode once (on import); ray.init refreshes it only when it turns token auth on
    itself, not when the variable is already set. Without this the runtime's processes would run
    in token mode and this driver, still in disabled mode, could not join them.
    """
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        Config.initialize("")


def _start_local(ray: Any, options: dict[str, Any]) -> None:
    if AUTH_MODE_VAR not in os.environ or token_auth_requested():
        use_token_auth()
        ray.init(**options)
    else:
        _start_loopback_only(ray, options)


def _start_loopback_only(ray: Any, options: dict[str, Any]) -> None:
    """Token auth explicitly off: run the runtime on 127.0.0.1 only, or refuse to start it.

    On Linux Ray replaces a loopback node address with the machine's address, and its listeners then
    bind to every interface. With `ENABLE_RAY_CLUSTER` off (Ray's local-only mode, the default on
    macOS and Windows) the node keeps 127.0.0.1, and gcs_server, raylet, the agents and every worker
    listen there only. The flag is read while ray.init picks the node address, so it is switched
    off for that call alone.
    """
    mode = os.environ.get(AUTH_MODE_VAR)
    refusal = (f"{AUTH_MODE_VAR}={mode!r} turns Ray's token auth off, and this Ray cannot bind the local "
               f"runtime to {LOOPBACK} only, so it would accept connections from other machines. Unset "
               f"{AUTH_MODE_VAR} (or set it to 'token'), or start Ray yourself with ray.init() before "
               "creating the bridge: the bridge then reuses that runtime.")
    try:
        from ray._private import ray_constants, services
        previous = ray_constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):
        raise UnprotectedRuntimeError(refusal) from None
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        if services.resolve_ip_for_localhost(LOOPBACK) != LOOPBACK:
            raise UnprotectedRuntimeError(refusal)
        ray.init(_node_ip_address=LOOPBACK, **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous
    node_address = ray.util.get_node_ip_address()
    if node_address != LOOPBACK:  # never keep a runtime that is reachable without a token
        ray.shutdown()
        raise UnprotectedRuntimeError(f"{refusal} (the node came up on {node_address})")


def _start_or_join(address: str | None) -> None:
    global _owned
    import ray
    with _lock:
        if ray.is_initialized():
            return
        _set_runtime_environment()
        common: dict[str, Any] = {"log_to_driver": False, "configure_logging": False, "namespace": "ffchat"}
        from_environment = os.environ.get("RAY_ADDRESS", "").strip()
        if address is None and from_environment not in ("", "local"):
            address = from_environment  # ray.init() would join it anyway: treat it as a join
        if address is None:
            # "local": a new runtime even if /tmp/ray names another one (a `ray start` or Cluster head).
            _start_local(ray, {"address": "local", "include_dashboard": False,
                               "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
                               "_system_config": dict(LOCAL_SYSTEM_CONFIG), **metrics_options(), **common})
            _owned = True
            atexit.register(_shutdown_owned)
        else:
            ray.init(address=address, **common)


def metrics_options() -> dict[str, Any]:
    """ray.init options for the local runtime's Prometheus endpoint: `_metrics_export_port` from
    FFCHAT_METRICS_PORT (none when unset). Ray's metrics agent serves it only with `ray[default]`
    installed (the `metrics` extra); without it the port stays closed and recording costs nothing.
    Raises ValueError for a value that is not a port number."""
    value = os.environ.get(METRICS_PORT_VARIABLE, "").strip()
    if not value:
        return {}
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"{METRICS_PORT_VARIABLE} must be a port number 1-65535, got {value!r}")
    if importlib.util.find_spec("prometheus_client") is None:
        logger.warning("%s is set, but Ray's metrics agent needs ray[default] (pip install 'ff-chat-bridge[metrics]'): "
                       "nothing will listen on port %s", METRICS_PORT_VARIABLE, value)
    return {"_metrics_export_port": int(value)}


def _shutdown_owned() -> None:
    import ray
    if _owned and ray.is_initialized():
        ray.shutdown()


async def ensure_ray(address: str | None) -> None:
    """Start a local runtime (address None, no runtime yet), or join `auto` / `host:port`.

    Reuses a runtime this process already has. Starting a local runtime takes seconds and happens
    once per process; it runs on the calling thread because Ray installs signal handlers that only
    the main thread may set. The local runtime runs with token auth, or on 127.0.0.1 only if the
    application set RAY_AUTH_MODE=disabled (see the module docstring).
    """
    import ray
    if ray.is_initialized():
        return
    _start_or_join(address)


def owns_runtime() -> bool:
    return _owned


def spare_actor_count(cpus: int) -> int:
    """Idle shard actors the router starts ahead of need: none in a runtime this process started.

    Each costs a process (~55 MB unique memory here) that only a second storage path opened while the
    first is still open would use; a closed bridge's actors stay pooled for the next bridge anyway. A
    joined runtime (a cluster, or one the application started) keeps one per CPU for the processes
    that come and go on it (`cpus`: the runtime's CPU count, as `cpu_count()` gives it).
    """
    return 0 if _owned else cpus


def cpu_count() -> int:
    import ray
    try:
        return max(1, min(256, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))))
    except Exception:
        return max(1, min(256, os.cpu_count() or 1))
