"""`FFChatAppBridge`: factories, lifecycle, capabilities, the OS user, and the background upkeep of its
shard snapshot and embeddings (contract §3). The health check itself is in `health.py`."""

from __future__ import annotations

import asyncio
import copy
import importlib
import logging
import time
import warnings
from typing import Any

from engine.errors import BridgeClosed, EngineError, ErrorCode, PathConfigMismatch, RequestTimeout, ShardLocked

from . import runtime
from .backend import PathBackend, data_plane_choice, open_path
from .config import ChatAppStorageConfig, flatten_options
from .config_factory import LEGACY_PRESETS, FFChatConfigFactory
from ._errors import describe_exception, unwrap_ray_error
from .backups import BackupMethods, scheduled_backup
from .errors import ConfigurationError, InitializationError
from .health import bridge_health_check
from .metrics import ShardSnapshot, refresh_snapshot
from .os_user import os_user, os_user_info
from .upkeep import start_upkeep

logger = logging.getLogger(__name__)
_NOT_INITIALIZED = "Bridge not initialized. Call initialize() first."
_STATS_REFRESH_S = 5.0
_EMBED_UPKEEP_S = 5.0


class FFChatAppBridge(BackupMethods):
    """The entry point: one bridge per storage path (or many sharing the same actors).

    Example:
        >>> bridge = await FFChatAppBridge.create_for_chat_app("./chat_data")
        >>> data = bridge.get_data_layer()
        >>> await bridge.close()
    """

    def __init__(self, config: ChatAppStorageConfig, *, in_process: bool = False, data_plane: str | None = None
                 ) -> None:
        """`in_process=True` runs the router and shards inside this process without Ray (tests and
        tools; the path is then served to this process only). `data_plane` is how calls reach the
        shards: "direct" (the default: each shard's own socket, set up through Ray) or "ray" (Ray
        actor calls only); None reads FFCHAT_DATA_PLANE."""
        if not isinstance(config, ChatAppStorageConfig):
            raise ConfigurationError(f"FFChatAppBridge needs a ChatAppStorageConfig, got {type(config).__name__}")
        self.config = config
        self._in_process = in_process
        self.data_plane = "in_process" if in_process else data_plane_choice(data_plane)
        self.start_time = time.time()
        self._initialized = False
        self._closed = False
        self._storage_manager: Any = None
        self._data_layer: Any = None
        self._initialization_error: Exception | None = None
        self._initialization_time = 0.0
        self._shard_count_explicit = config.shard_count is not None
        self._init_task: asyncio.Future[bool] | None = None
        self._settings: ChatAppStorageConfig | None = None
        self._backend: PathBackend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh_task: asyncio.Future[Any] | None = None
        self.shard_snapshot = ShardSnapshot()
        self._namespace = ""
        self._router_pid: int | None = None
        self._embedder: Any = None
        self.last_backup: dict[str, Any] = {"at": time.monotonic(), "error": None}  # scheduled ones
        self.metrics_path: str | None = None  # the path tag of exported metrics (None: not exported)

    # ------------------------------------------------------------------ factories
    @classmethod
    async def _create(cls, config: ChatAppStorageConfig, explicit_shards: bool, prefix: str, step: str,
                      context: dict[str, Any]) -> "FFChatAppBridge":
        bridge = cls(config)
        bridge._shard_count_explicit = explicit_shards
        try:
            await bridge.initialize()
        except InitializationError as exc:
            raise InitializationError(f"{prefix}: {exc.message}", component="FFChatAppBridge",
                                      initialization_step=step,
                                      context={**context, "original_error": exc.message}) from exc
        return bridge

    @classmethod
    async def create_for_chat_app(cls, storage_path: Any, options: dict[str, Any] | None = None) -> "FFChatAppBridge":
        """A bridge on `storage_path` with flat or nested options."""
        flat = flatten_options(options, allow_storage_path=False)
        config = ChatAppStorageConfig(storage_path, **flat)
        return await cls._create(config, "shard_count" in flat and flat["shard_count"] is not None,
                                 "Failed to create chat app bridge", "factory_creation",
                                 {"storage_path": str(storage_path), "options": options})

    @classmethod
    async def create_from_preset(cls, preset_name: str, storage_path: Any,
                                 overrides: dict[str, Any] | None = None) -> "FFChatAppBridge":
        """A bridge from one of the §6 templates, with flat or nested overrides."""
        config = FFChatConfigFactory().create_from_template(preset_name, storage_path, overrides)
        return await cls._create(config, flatten_options(overrides).get("shard_count") is not None,
                                 f"Failed to create bridge from preset '{preset_name}'", "preset_creation",
                                 {"preset_name": preset_name, "storage_path": str(storage_path),
                                  "overrides": overrides})

    @classmethod
    async def create_for_use_case(cls, use_case: str, storage_path: Any, **kwargs: Any) -> "FFChatAppBridge":
        """A bridge tuned for a use case (unknown ones fall back to `development` with a warning)."""
        config = FFChatConfigFactory().create_for_use_case(use_case, storage_path, **kwargs)
        return await cls._create(config, kwargs.get("shard_count") is not None,
                                 f"Failed to create bridge for use case '{use_case}'", "use_case_creation",
                                 {"use_case": use_case, "storage_path": str(storage_path), "options": kwargs})

    @classmethod
    async def create_from_preset_legacy(cls, preset_name: str, storage_path: Any,
                                        overrides: dict[str, Any] | None = None) -> "FFChatAppBridge":
        values = {**cls._get_preset_config(preset_name), **flatten_options(overrides, allow_storage_path=False)}
        config = ChatAppStorageConfig(storage_path, **values)
        return await cls._create(config, values.get("shard_count") is not None,
                                 f"Failed to create bridge from legacy preset '{preset_name}'", "preset_creation",
                                 {"preset_name": preset_name, "storage_path": str(storage_path),
                                  "overrides": overrides})

    @staticmethod
    def _get_preset_config(preset_name: str) -> dict[str, Any]:
        if preset_name not in LEGACY_PRESETS:
            raise ConfigurationError(f"Unknown preset '{preset_name}'", context={"valid_presets": list(LEGACY_PRESETS)},
                                     suggestions=["Use one of: speed, balanced, quality"])
        return dict(LEGACY_PRESETS[preset_name])

    @classmethod
    def _flatten_config_options(cls, options: dict[str, Any] | None) -> dict[str, Any]:
        return flatten_options(options, allow_storage_path=False)

    # ------------------------------------------------------------------ lifecycle
    async def initialize(self) -> bool:
        """Connect to or start Ray, lock the path, start or attach its actors. Idempotent."""
        if self._closed:
            raise InitializationError("Bridge is closed")
        if self._initialized:
            return True
        if self._init_task is None:
            self._init_task = asyncio.ensure_future(self._initialize())
        try:
            return await asyncio.shield(self._init_task)
        finally:
            if self._init_task.done() and not self._initialized:
                self._init_task = None

    async def _initialize(self) -> bool:
        started = time.perf_counter()
        settings = copy.deepcopy(self.config)
        step = "ray_connection"
        try:
            if not self._in_process:
                await runtime.ensure_ray(settings.ray_address)
            # The embedder is checked before the shards start: they load it too, and a bad one must
            # be reported as what it is, not as a shard that failed to open.
            step = "embedder_check"
            if settings.embedder:
                self._embedder = self._check_embedder(settings.embedder)
            step = "storage_lock"
            namespace = settings.resolved_namespace()
            # Ray's CPUs: the default shard count and how many shards share a process (none in-process).
            cpu_count = 0 if self._in_process and settings.shard_count else runtime.cpu_count()
            try:
                self._backend, self._router_pid = await open_path(
                    settings, namespace, settings.shard_count or cpu_count, self._shard_count_explicit,
                    spare=runtime.spare_actor_count(cpu_count), in_process=self._in_process,
                    direct=self.data_plane == "direct", cpu_count=0 if self._in_process else cpu_count)
            except PathConfigMismatch as exc:
                raise ConfigurationError(exc.message, config_field=exc.config_field) from None
            except EngineError as exc:
                if not isinstance(exc, ShardLocked):
                    step = "shard_startup"
                raise
            self._namespace = namespace
        except ConfigurationError as exc:
            self._initialization_error = exc
            await self._abandon_path()
            raise
        except Exception as exc:  # api boundary: every failure becomes InitializationError
            self._initialization_error = exc
            await self._abandon_path()
            message = exc.message if isinstance(exc, EngineError) else describe_exception(unwrap_ray_error(exc))
            logger.warning("bridge initialisation failed at %s: %s", step, message)
            raise InitializationError(
                f"Failed to initialize chat storage bridge: {message}", component="FFChatAppBridge",
                initialization_step=step,
                context={"storage_path": str(settings.storage_path), "performance_mode": settings.performance_mode,
                         "initialization_time": time.perf_counter() - started}) from None
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._initialization_time = time.perf_counter() - started
        self._initialized = True
        from .storage import StorageFacade
        self._storage_manager = StorageFacade(self)
        self._start_background(settings)
        return True

    async def _abandon_path(self) -> None:
        """Detach from a path opened by an initialisation that failed later (e.g. at embedder_check)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            try:
                await backend.detach()
            except Exception as exc:  # best effort: the failure being reported matters more
                logger.warning("could not detach from %s: %s", backend.namespace, exc)

    @staticmethod
    def _check_embedder(spec: str) -> Any:
        module_name, _, attribute = spec.partition(":")
        embed = getattr(importlib.import_module(module_name), attribute)
        vectors = embed(["ping"])
        if not isinstance(vectors, list) or len(vectors) != 1 or not len(vectors[0]):
            raise ValueError(f"embedder {spec} must map ['ping'] to one non-empty vector")
        return embed

    async def embed_query(self, text: str, deadline: float) -> list[float]:
        """The query's vector from the configured embedder, run off the event loop and within the
        call's deadline (monotonic seconds): a slow embedder ends the call with TIMEOUT."""
        embed = self._embedder
        if embed is None:
            raise EngineError("No embedder is configured", ErrorCode.VECTOR_SEARCH_UNAVAILABLE)
        work = asyncio.get_running_loop().run_in_executor(None, embed, [text])
        try:
            vectors = await asyncio.wait_for(work, timeout=max(0.0, deadline - time.monotonic()))
            return [float(value) for value in vectors[0]]
        except asyncio.TimeoutError:
            raise RequestTimeout("The embedder did not embed the query before the request deadline") from None
        except Exception as exc:  # user code: report as a search failure, never raise
            raise EngineError(f"The embedder failed on the query: {type(exc).__name__}: {exc}",
                              ErrorCode.SEARCH_ERROR) from None

    async def refresh_shard_snapshot(self) -> list[dict[str, Any] | None]:
        """Take fresh shard figures into `shard_snapshot` (the sync metrics read it)."""
        if self._backend is not None:
            await refresh_snapshot(self.shard_snapshot, self._backend, [self._router_pid] if self._router_pid else [])
        return self.shard_snapshot.shards

    async def embed_pending(self) -> None:
        """Embed the messages stored since the last pass (vectors are eventually consistent)."""
        if self._embedder is not None and self._backend is not None:
            await self._backend.embed_pending()

    def _start_background(self, settings: ChatAppStorageConfig) -> None:
        """The upkeep loops, and on a Ray runtime the metrics export (actors/exporter.py)."""
        self._refresh_task = self._start_upkeep()
        if not self._in_process and self._backend is not None:
            self.metrics_path = self._backend.export_metrics(settings.storage_path)

    def _start_upkeep(self) -> asyncio.Future[Any]:
        steps = [(_STATS_REFRESH_S, FFChatAppBridge.refresh_shard_snapshot)]
        if self._embedder is not None:
            steps.append((_EMBED_UPKEEP_S, FFChatAppBridge.embed_pending))
        if self.settings.backup_enabled:
            steps.append((min(self.settings.backup_interval_s, _STATS_REFRESH_S), scheduled_backup))
        return start_upkeep(self, steps)

    async def close(self) -> None:
        """Terminal and idempotent; flushes `none` data; the last bridge of the path stops its actors."""
        if self._closed:
            return
        self._closed = True
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            try:
                await self._refresh_task
            except (asyncio.CancelledError, Exception):
                pass
        backend, self._backend = self._backend, None
        if backend is None:
            return
        try:
            await backend.flush_and_detach()
        except Exception as exc:  # close never raises
            logger.warning("bridge close: %s", exc)

    async def __aenter__(self) -> "FFChatAppBridge":
        await self.initialize()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __del__(self) -> None:
        if getattr(self, "_initialized", False) and not getattr(self, "_closed", True):
            warnings.warn(f"FFChatAppBridge on {self.config.storage_path!r} was not closed", ResourceWarning,
                          stacklevel=2)

    # ------------------------------------------------------------------ accessors
    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("Bridge is closed")
        if not self._initialized:
            raise RuntimeError(_NOT_INITIALIZED)

    @property
    def settings(self) -> ChatAppStorageConfig:
        """The configuration the bridge was initialised with (later edits of `config` do not apply)."""
        return self._settings or self.config

    @property
    def backend(self) -> PathBackend | None:
        return self._backend

    def open_backend(self) -> PathBackend:
        """The path's backend for a data call; BridgeClosed once the bridge is closed (the data layer
        and the facade ask this before checking any input: closed means closed)."""
        if self._closed or self._backend is None:
            raise BridgeClosed("Bridge is closed")
        return self._backend

    @property
    def is_closed(self) -> bool:
        return self._closed

    def get_data_layer(self) -> Any:
        self._require_open()
        if self._data_layer is None:
            from .data_layer import FFChatDataLayer
            self._data_layer = FFChatDataLayer(self)
        return self._data_layer

    def get_standardized_config(self) -> dict[str, Any]:
        self._require_open()
        s = self.settings
        return {
            "storage_path": s.storage_path,
            "capabilities": {"vector_search": s.enable_vector_search, "streaming": s.enable_streaming,
                             "analytics": s.enable_analytics, "compression": s.enable_compression},
            "performance": {"mode": s.performance_mode, "cache_size_mb": s.cache_size_mb,
                            "max_session_size_mb": s.max_session_size_mb},
            "features": {"backup": s.backup_enabled, "compression": s.enable_compression,
                         "batch_size": s.message_batch_size, "page_size": s.history_page_size,
                         "search_limit": s.search_result_limit},
            "environment": s.environment, "initialized": True, "initialization_time": self._initialization_time,
            "uptime_seconds": time.time() - self.start_time, "runtime": self.runtime_settings(),
        }

    def runtime_settings(self) -> dict[str, Any]:
        s = self.settings
        return {"shard_count": self._backend.shard_count if self._backend else s.shard_count,
                "durability": s.resolved_durability(), "ray_address": s.ray_address,
                "namespace": self._namespace or s.resolved_namespace(), "embedder": s.embedder,
                "max_message_bytes": s.max_message_bytes, "request_timeout_s": float(s.request_timeout_s)}

    def vector_search_ready(self) -> bool:
        return bool(self.settings.enable_vector_search and self.settings.embedder)

    async def get_capabilities(self) -> dict[str, Any]:
        self._require_open()
        s = self.settings
        return {"vector_search": s.enable_vector_search, "streaming": s.enable_streaming,
                "analytics": s.enable_analytics, "compression": s.enable_compression, "backup": s.backup_enabled,
                "max_file_size_mb": s.max_session_size_mb, "supported_formats": ["json", "jsonl"],
                "search_types": ["text", "vector", "hybrid"] if self.vector_search_ready() else ["text"],
                "storage_features": ["user_profiles", "sessions", "messages", "metadata"],
                "durability": s.resolved_durability(),
                "shard_count": self._backend.shard_count if self._backend else s.shard_count,
                "max_message_bytes": s.max_message_bytes}

    def get_current_user(self) -> str:
        """The OS user, looked up as upstream does: login name, getpass, USER/USERNAME, else 'test123'."""
        return os_user()

    def get_user_info(self) -> dict[str, Any]:
        """Upstream's user context: who the user is and how that was found (there is no override)."""
        return os_user_info()

    # ------------------------------------------------------------------ health and monitoring
    @property
    def is_ready(self) -> bool:
        """Initialised and not closed."""
        return self._initialized and not self._closed

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop that initialised the bridge (the monitor's thread submits its checks there)."""
        return self._loop

    async def health_check(self) -> dict[str, Any]:
        """Probe every shard in parallel (contract §3); never raises, writes nothing."""
        return await bridge_health_check(self)
