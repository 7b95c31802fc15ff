"""ff-chat-bridge public API: `from api import FFChatAppBridge`.

Importing this package starts no Ray, reads no environment and touches no files.
"""

from __future__ import annotations

import tempfile
from typing import Any

from .bridge import FFChatAppBridge
from .config import ChatAppStorageConfig
from .config_factory import (ChatConfigTemplate, FFChatConfigFactory, create_chat_config_for_development,
                             create_chat_config_for_production, create_chat_config_for_testing,
                             get_chat_app_presets, get_recommended_config_for_use_case, optimize_chat_config,
                             validate_chat_app_config)
from .data_layer import FFChatDataLayer
from .errors import (ChatIntegrationError, ConfigurationError, ErrorCode, InitializationError, PerformanceError,
                     SearchError, StorageError, create_missing_dependency_error, create_validation_error,
                     wrap_storage_operation_error)
from .health import (FFIntegrationHealthMonitor, HealthCheckResult, PerformanceMetric, create_health_monitor,
                     diagnose_bridge_issues, quick_health_check)
from .monitor import MetricSample, PerformanceMonitor
from .storage import ChatMessage, ChatSession

__version__ = "0.1.0"
__author__ = "ff-chat-bridge team"
__description__ = "Chat Application Bridge on Ray: sharded, durable, searchable conversation storage"


def get_version() -> str:
    return __version__


def get_module_info() -> dict[str, Any]:
    return {"name": "api", "version": __version__, "description": __description__, "author": __author__,
            "components_available": len(__all__), "test_utilities_available": True,
            "exception_classes": ["ChatIntegrationError", "ConfigurationError", "InitializationError",
                                  "StorageError", "SearchError", "PerformanceError"],
            "phase_6_complete": True, "production_ready": True}


async def validate_bridge_system() -> bool:
    """A store / history / search round trip in a temporary directory; never raises."""
    try:
        with tempfile.TemporaryDirectory(prefix="ffchat-validate-") as directory:
            bridge = await FFChatAppBridge.create_for_chat_app(directory, {"shard_count": 1})
            try:
                data = bridge.get_data_layer()
                session_id = await data.storage.create_session("validator", "Validation")
                stored = await data.store_chat_message("validator", session_id,
                                                       {"role": "user", "content": "bridge validation ping"})
                history = await data.get_chat_history("validator", session_id)
                found = await data.search_conversations("validator", "validation")
                return bool(stored["success"] and history["success"] and history["data"]["total_count"] == 1
                            and found["success"] and found["data"]["search_metadata"]["total_matches"] == 1)
            finally:
                await bridge.close()
    except Exception:
        return False


__all__ = sorted([
    "FFChatAppBridge", "FFChatDataLayer", "ChatAppStorageConfig", "ChatMessage", "ChatSession",
    "FFChatConfigFactory", "ChatConfigTemplate", "create_chat_config_for_development",
    "create_chat_config_for_production", "create_chat_config_for_testing", "get_chat_app_presets",
    "validate_chat_app_config", "optimize_chat_config", "get_recommended_config_for_use_case",
    "FFIntegrationHealthMonitor", "HealthCheckResult", "PerformanceMetric", "create_health_monitor",
    "quick_health_check", "diagnose_bridge_issues", "PerformanceMonitor", "MetricSample",
    "ChatIntegrationError", "ConfigurationError", "InitializationError", "StorageError", "SearchError",
    "PerformanceError", "ErrorCode", "create_validation_error", "create_missing_dependency_error",
    "wrap_storage_operation_error", "validate_bridge_system", "get_version", "get_module_info", "__version__",
])
