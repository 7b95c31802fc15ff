"""The public exceptions of the bridge (contract §9), all picklable. Error codes and the engine's own
error tree live in engine/errors.py (`ErrorCode` is re-exported here)."""

from __future__ import annotations

import copy
from typing import Any

from engine.errors import ErrorCode


def _merge_suggestions(given: list[str] | None, defaults: list[str]) -> list[str]:
    merged: list[str] = []
    for item in list(given or []) + defaults:
        if item not in merged:
            merged.append(item)
    return merged


class ChatIntegrationError(Exception):
    """Root of the bridge's exceptions: message, context, suggestions, error_code."""

    def __init__(self, message: str, context: dict[str, Any] | None = None, suggestions: list[str] | None = None,
                 error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context = copy.deepcopy(dict(context)) if context else {}
        self.suggestions = list(suggestions) if suggestions else []
        self.error_code = error_code

    def __str__(self) -> str:
        if self.context:
            return f"{self.message} (Context: {', '.join(f'{k}={v}' for k, v in self.context.items())})"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "error_code": self.error_code, "context": copy.deepcopy(self.context),
                "suggestions": list(self.suggestions)}

    def __reduce__(self):
        # Rebuild through the root constructor with the final attributes, so subclasses do not
        # re-add their context keys or default suggestions on unpickling.
        return (_rebuild, (type(self), self.message, self.context, self.suggestions, self.error_code))

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other) and self.to_dict() == other.to_dict())  # type: ignore[union-attr]

    __hash__ = Exception.__hash__


def _rebuild(cls, message, context, suggestions, error_code):
    error = cls.__new__(cls)
    ChatIntegrationError.__init__(error, message, context, suggestions, error_code)
    return error


class ConfigurationError(ChatIntegrationError):
    def __init__(self, message: str, config_field: str | None = None, config_value: Any = None,
                 context: dict[str, Any] | None = None, suggestions: list[str] | None = None,
                 error_code: str | None = None) -> None:
        context = dict(context or {})
        if config_field:
            context["config_field"] = config_field
        if config_value is not None:
            context["config_value"] = str(config_value)
        super().__init__(message, context, suggestions, error_code or ErrorCode.CONFIG_ERROR)


class InitializationError(ChatIntegrationError):
    DEFAULT_SUGGESTIONS = ["Verify storage path exists and is writable",
                           "Check that all required dependencies are available",
                           "Ensure configuration values are valid"]

    def __init__(self, message: str, component: str | None = None, initialization_step: str | None = None,
                 context: dict[str, Any] | None = None, suggestions: list[str] | None = None,
                 error_code: str | None = None) -> None:
        context = dict(context or {})
        if component:
            context["component"] = component
        if initialization_step:
            context["initialization_step"] = initialization_step
        super().__init__(message, context, _merge_suggestions(suggestions, self.DEFAULT_SUGGESTIONS),
                         error_code or ErrorCode.INIT_ERROR)


class StorageError(ChatIntegrationError):
    DEFAULT_SUGGESTIONS = ["Check disk space availability", "Verify file system permissions",
                           "Ensure storage path is accessible"]

    def __init__(self, message: str, operation: str | None = None, storage_path: str | None = None,
                 context: dict[str, Any] | None = None, suggestions: list[str] | None = None,
                 error_code: str | None = None) -> None:
        context = dict(context or {})
        if operation:
            context["operation"] = operation
        if storage_path:
            context["storage_path"] = storage_path
        super().__init__(message, context, _merge_suggestions(suggestions, self.DEFAULT_SUGGESTIONS),
                         error_code or ErrorCode.STORAGE_ERROR)


class SearchError(ChatIntegrationError):
    DEFAULT_SUGGESTIONS = ["Verify search indices are built and accessible", "Check if search service is running",
                           "Validate search query format"]

    def __init__(self, message: str, search_type: str | None = None, query: str | None = None,
                 context: dict[str, Any] | None = None, suggestions: list[str] | None = None,
                 error_code: str | None = None) -> None:
        context = dict(context or {})
        if search_type:
            context["search_type"] = search_type
        if query:
            context["query"] = query[:100] + "..." if len(query) > 100 else query
        super().__init__(message, context, _merge_suggestions(suggestions, self.DEFAULT_SUGGESTIONS),
                         error_code or ErrorCode.SEARCH_ERROR)


class PerformanceError(ChatIntegrationError):
    DEFAULT_SUGGESTIONS = ["Consider enabling caching for frequently accessed data",
                           "Review system resource usage (CPU, memory, disk)",
                           "Optimize configuration for better performance"]

    def __init__(self, message: str, operation: str | None = None, response_time_ms: float | None = None,
                 threshold_ms: float | None = None, context: dict[str, Any] | None = None,
                 suggestions: list[str] | None = None, error_code: str | None = None) -> None:
        context = dict(context or {})
        if operation:
            context["operation"] = operation
        if response_time_ms is not None:
            context["response_time_ms"] = response_time_ms
        if threshold_ms is not None:
            context["threshold_ms"] = threshold_ms
        super().__init__(message, context, _merge_suggestions(suggestions, self.DEFAULT_SUGGESTIONS),
                         error_code or ErrorCode.PERFORMANCE_ERROR)


def create_validation_error(field_name: str, field_value: Any, expected: str) -> ConfigurationError:
    return ConfigurationError(
        f"Invalid value for {field_name}: expected {expected}", config_field=field_name, config_value=field_value,
        suggestions=[f"Update {field_name} to match expected format: {expected}",
                     "Review configuration documentation for correct values"])


def create_missing_dependency_error(dependency: str, component: str) -> InitializationError:
    return InitializationError(
        f"Missing required dependency '{dependency}' for {component}", component=component,
        initialization_step="dependency_check",
        suggestions=[f"Install required dependency: {dependency}", "Check system requirements documentation",
                     "Verify all optional components are properly configured"])


def wrap_storage_operation_error(original_error: Exception, operation: str, storage_path: str) -> StorageError:
    return StorageError(
        f"Storage operation '{operation}' failed: {original_error}", operation=operation, storage_path=storage_path,
        context={"original_error_type": type(original_error).__name__,
                 "original_error_message": str(original_error)})
