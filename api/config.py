"""`ChatAppStorageConfig`: the typed, validated bridge configuration (contract §2)."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import ConfigurationError

MODES = ["speed", "balanced", "quality"]
ENVIRONMENTS = ["development", "production", "test", "staging"]
DURABILITIES = ["fsync", "flush", "none"]
_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EMBEDDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9_.\-\[\]:]+):(?P<port>\d{1,5})")

FIELD_ORDER = ["storage_path", "enable_vector_search", "enable_streaming", "enable_analytics", "enable_compression",
               "backup_enabled", "cache_size_mb", "performance_mode", "max_session_size_mb", "message_batch_size",
               "history_page_size", "search_result_limit", "environment", "shard_count", "durability",
               "ray_address", "namespace", "embedder", "max_message_bytes", "request_timeout_s"]
RUNTIME_FIELDS = ["shard_count", "durability", "ray_address", "namespace", "embedder", "max_message_bytes",
                  "request_timeout_s"]
BOOL_FIELDS = ["enable_vector_search", "enable_streaming", "enable_analytics", "enable_compression", "backup_enabled"]
DEFAULTS: dict[str, Any] = {
    "enable_vector_search": True, "enable_streaming": True, "enable_analytics": True, "enable_compression": False,
    "backup_enabled": False, "cache_size_mb": 100, "performance_mode": "balanced", "max_session_size_mb": 50,
    "message_batch_size": 100, "history_page_size": 50, "search_result_limit": 20, "environment": "development",
    "shard_count": None, "durability": None, "ray_address": None, "namespace": None, "embedder": None,
    "max_message_bytes": 1_048_576, "request_timeout_s": 30.0,
}
# (field, low, high, low message, high message)
_INT_RANGES = {
    "cache_size_mb": (10, 2000, "Cache size should be at least 10MB", "Cache size should not exceed 2000MB"),
    "max_session_size_mb": (1, 500, "Max session size should be at least 1MB", "Max session size should not exceed 500MB"),
    "message_batch_size": (1, 1000, "Message batch size must be at least 1", "Message batch size should not exceed 1000"),
    "history_page_size": (1, 500, "History page size must be at least 1", "History page size should not exceed 500"),
    "search_result_limit": (1, 1000, "Search result limit must be at least 1", "Search result limit should not exceed 1000"),
    "shard_count": (1, 256, "Shard count must be at least 1", "Shard count should not exceed 256"),
    "max_message_bytes": (1024, 16_777_216, "Max message bytes must be at least 1024",
                          "Max message bytes should not exceed 16777216"),
}
# Nested groups of to_dict(): group -> {sub-key: field}
GROUPS: dict[str, dict[str, str]] = {
    "features": {"vector_search": "enable_vector_search", "streaming": "enable_streaming",
                 "analytics": "enable_analytics", "compression": "enable_compression", "backup": "backup_enabled"},
    "performance": {"mode": "performance_mode", "cache_size_mb": "cache_size_mb",
                    "max_session_size_mb": "max_session_size_mb"},
    "chat_settings": {"message_batch_size": "message_batch_size", "history_page_size": "history_page_size",
                      "search_result_limit": "search_result_limit"},
    "runtime": {name: name for name in RUNTIME_FIELDS},
}


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_int(errors: list[str], values: dict[str, Any], name: str, optional: bool = False) -> None:
    value = values[name]
    if value is None and optional:
        return
    if type(value) is not int:
        errors.append(f"{name} must be int, got {_type_name(value)}")
        return
    low, high, low_text, high_text = _INT_RANGES[name]
    if value < low:
        errors.append(low_text)
    elif value > high:
        errors.append(high_text)


def _check_choice(errors: list[str], values: dict[str, Any], name: str, choices: list[str], text: str,
                  optional: bool = False) -> None:
    value = values[name]
    if value is None and optional:
        return
    if not isinstance(value, str):
        errors.append(f"{name} must be str, got {_type_name(value)}")
    elif value not in choices:
        errors.append(text)


def _check_path(errors: list[str], values: dict[str, Any]) -> None:
    path = values["storage_path"]
    if not isinstance(path, str):
        errors.append(f"storage_path must be str, got {_type_name(path)}")
        return
    if not path.strip():
        errors.append("Storage path must not be empty")
        return
    try:
        if "\x00" in path:
            raise ValueError("embedded null byte")
        normalised = os.path.normpath(path)
    except (TypeError, ValueError) as exc:
        errors.append(f"Invalid storage path format: {exc}")
        return
    if values.get("environment") == "production" and os.path.isabs(normalised):
        parent = os.path.dirname(normalised.rstrip(os.sep)) or os.sep
        if not os.path.isdir(parent):
            errors.append(f"Storage path parent directory does not exist: {parent}")


def _check_runtime(errors: list[str], values: dict[str, Any]) -> None:
    _check_int(errors, values, "shard_count", optional=True)
    _check_choice(errors, values, "durability", DURABILITIES, "Durability must be one of: ['fsync', 'flush', 'none']",
                  optional=True)
    address = values["ray_address"]
    if address is not None:
        match = _HOST_PORT.fullmatch(address) if isinstance(address, str) else None
        if not isinstance(address, str):
            errors.append(f"ray_address must be str, got {_type_name(address)}")
        elif address != "auto" and (match is None or not 1 <= int(match["port"]) <= 65535):
            errors.append("Ray address must be None, 'auto' or 'host:port'")
    namespace = values["namespace"]
    if namespace is not None and (not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace)):
        errors.append("Namespace must be 1-64 characters of [A-Za-z0-9_.-]")
    embedder = values["embedder"]
    if embedder is not None and (not isinstance(embedder, str) or not _EMBEDDER.fullmatch(embedder)):
        errors.append("Embedder must be None or an importable 'module:callable' path")
    _check_int(errors, values, "max_message_bytes")
    timeout = values["request_timeout_s"]
    if type(timeout) not in (int, float):
        errors.append(f"request_timeout_s must be float, got {_type_name(timeout)}")
    elif not timeout >= 0.1:
        errors.append("Request timeout must be at least 0.1 seconds")
    elif timeout > 600:
        errors.append("Request timeout should not exceed 600 seconds")


def validate_values(values: dict[str, Any]) -> list[str]:
    """Every rule of §2, errors in the contract's order."""
    errors: list[str] = []
    _check_path(errors, values)
    _check_choice(errors, values, "performance_mode", MODES,
                  "Performance mode must be one of: ['speed', 'balanced', 'quality']")
    for name in ("cache_size_mb", "max_session_size_mb", "message_batch_size", "history_page_size",
                 "search_result_limit"):
        _check_int(errors, values, name)
    _check_choice(errors, values, "environment", ENVIRONMENTS,
                  "Environment must be one of: ['development', 'production', 'test', 'staging']")
    for name in BOOL_FIELDS:
        if type(values[name]) is not bool:
            errors.append(f"{name} must be bool, got {_type_name(values[name])}")
    _check_runtime(errors, values)
    return errors


def _unknown_option(name: str) -> ConfigurationError:
    return ConfigurationError(f"Unknown configuration option '{name}'. Valid options: {FIELD_ORDER}",
                              config_field=name, context={"unknown_options": [name], "valid_options": FIELD_ORDER})


def flatten_options(options: dict[str, Any] | None, allow_storage_path: bool = True) -> dict[str, Any]:
    """Flat or nested (to_dict) options to flat field names; raises ConfigurationError on conflicts."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigurationError(f"Options must be a dict, got {_type_name(options)}")
    flat: dict[str, Any] = {}

    def put(field: str, value: Any) -> None:
        if field in flat and flat[field] != value:
            raise ConfigurationError(f"Configuration field '{field}' given twice with different values",
                                     config_field=field)
        flat[field] = value

    for key, value in options.items():
        if key in GROUPS:
            if not isinstance(value, dict):
                raise ConfigurationError(f"Configuration group '{key}' must be a dict", config_field=key)
            for sub_key, sub_value in value.items():
                if sub_key not in GROUPS[key]:
                    raise ConfigurationError(f"Unknown configuration option '{key}.{sub_key}'. "
                                             f"Valid options: {sorted(GROUPS[key])}", config_field=f"{key}.{sub_key}")
                put(GROUPS[key][sub_key], sub_value)
        elif key == "storage_path":
            if allow_storage_path:
                put(key, value)
        elif key in DEFAULTS:
            put(key, value)
        else:
            raise _unknown_option(key)
    return flat


class ChatAppStorageConfig(BaseModel):
    """Bridge configuration; invalid values raise ConfigurationError (never pydantic's ValidationError).

    Example:
        >>> config = ChatAppStorageConfig("./chat_data", cache_size_mb=200)
        >>> config.to_dict()["performance"]["cache_size_mb"]
        200
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    storage_path: Any
    enable_vector_search: Any = True
    enable_streaming: Any = True
    enable_analytics: Any = True
    enable_compression: Any = False
    backup_enabled: Any = False
    cache_size_mb: Any = 100
    performance_mode: Any = "balanced"
    max_session_size_mb: Any = 50
    message_batch_size: Any = 100
    history_page_size: Any = 50
    search_result_limit: Any = 20
    environment: Any = "development"
    shard_count: Any = None
    durability: Any = None
    ray_address: Any = None
    namespace: Any = None
    embedder: Any = None
    max_message_bytes: Any = 1_048_576
    request_timeout_s: Any = 30.0

    def __init__(self, storage_path: Any = None, /, **fields: Any) -> None:
        if "storage_path" in fields:
            if storage_path is not None:
                raise ConfigurationError("storage_path given twice", config_field="storage_path")
            storage_path = fields.pop("storage_path")
        for name in fields:
            if name not in DEFAULTS:
                raise _unknown_option(name)
        if isinstance(storage_path, os.PathLike):
            storage_path = os.fspath(storage_path)
        values = {**DEFAULTS, **fields, "storage_path": "" if storage_path is None else storage_path}
        errors = validate_values(values)
        if errors:
            raise ConfigurationError("Configuration validation failed: " + "; ".join(errors),
                                     context={"validation_errors": errors})
        super().__init__(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in DEFAULTS and name != "storage_path":
            raise _unknown_option(name)
        if name == "storage_path" and isinstance(value, os.PathLike):
            value = os.fspath(value)
        values = {**self.model_dump(), name: value}
        errors = validate_values(values)
        if errors:
            raise ConfigurationError("Configuration validation failed: " + "; ".join(errors),
                                     context={"validation_errors": errors}, config_field=name)
        super().__setattr__(name, value)

    def validate(self) -> list[str]:  # type: ignore[override]
        """Re-run every rule; [] when valid."""
        return validate_values(self.model_dump())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"storage_path": self.storage_path}
        for group, mapping in GROUPS.items():
            out[group] = {sub_key: getattr(self, field) for sub_key, field in mapping.items()}
        out["environment"] = self.environment
        return {key: out[key] for key in ("storage_path", "features", "performance", "chat_settings", "environment",
                                          "runtime")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatAppStorageConfig":
        flat = flatten_options(data)
        path = flat.pop("storage_path", None)
        return cls(path, **flat)

    # ------------------------------------------------------------------ resolution helpers
    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        absolute = os.path.normpath(os.path.abspath(self.storage_path))
        return "ffchat_" + hashlib.sha256(absolute.encode()).hexdigest()[:16]

    def resolved_durability(self) -> str:
        if self.durability:
            return self.durability
        return "fsync" if self.performance_mode == "quality" else "flush"
