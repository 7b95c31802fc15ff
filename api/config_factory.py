"""Configuration templates, presets, scoring and migration (contract §6). Writes no files unless asked."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.models import iso, utc_now

from .config import DEFAULTS, UPSTREAM_FIELDS, ChatAppStorageConfig, flatten_options
from .errors import ConfigurationError

logger = logging.getLogger(__name__)

TEMPLATE_NAMES = ["development", "production", "high_performance", "feature_rich", "lightweight", "testing"]
USE_CASE_TEMPLATES = {
    "simple_chat": "lightweight", "ai_assistant": "feature_rich", "high_volume_chat": "high_performance",
    "enterprise_chat": "production", "development_chat": "development", "research_chat": "feature_rich",
    "gaming_chat": "high_performance", "support_chat": "production", "testing_chat": "testing",
}
_ENVIRONMENT_TEMPLATES = {"development": "development", "staging": "production", "production": "production",
                          "test": "testing"}
_ENVIRONMENT_SETTINGS: dict[str, dict[str, Any]] = {
    "development": {"cache_size_mb": 50, "enable_compression": False, "backup_enabled": False},
    "staging": {"cache_size_mb": 100, "enable_compression": True, "backup_enabled": True},
    "production": {"cache_size_mb": 200, "enable_compression": True, "backup_enabled": True,
                   "max_session_size_mb": 100},
    "test": {"cache_size_mb": 30, "enable_compression": False, "backup_enabled": False, "max_session_size_mb": 5},
}
# Upstream's wrapper config names two fields differently and the other 11 upstream fields alike.
_WRAPPER_RENAMES = {"base_path": "storage_path", "cache_size_limit": "cache_size_mb"}
_WRAPPER_FIELDS = [name for name in UPSTREAM_FIELDS if name not in _WRAPPER_RENAMES.values()]
_WRAPPER_MAPPING = {**_WRAPPER_RENAMES, **{name: name for name in _WRAPPER_FIELDS}}


@dataclass
class ChatConfigTemplate:
    """A named configuration with its informational lists; all six are required, as upstream."""

    name: str
    description: str
    base_config: ChatAppStorageConfig
    performance_optimizations: dict[str, Any]
    use_cases: list[str]
    recommended_for: list[str]


def _builtin_templates() -> dict[str, ChatConfigTemplate]:
    def template(name, description, path, optimizations, use_cases, recommended, **fields):
        return ChatConfigTemplate(name, description, ChatAppStorageConfig(path, **fields), optimizations, use_cases,
                                  recommended)
    return {t.name: t for t in [
        template("development", "Optimized for development with debugging features", "./dev_data",
                 {"enable_file_locking": False, "validation_enabled": True, "debug_logging": True, "cache_ttl": 60},
                 ["basic_chat", "testing", "development"], ["local_development", "debugging", "testing"],
                 enable_streaming=False, cache_size_mb=50, shard_count=2),
        template("production", "Production-ready with full features and optimization", "./prod_data",
                 {"enable_file_locking": True, "validation_enabled": False, "cache_ttl": 300,
                  "batch_write_enabled": True},
                 ["all_chat_types", "high_volume", "enterprise"],
                 ["production_deployment", "high_traffic", "enterprise"],
                 enable_compression=True, backup_enabled=True, cache_size_mb=200, max_session_size_mb=100,
                 environment="production", durability="fsync"),
        template("high_performance", "Maximum performance with minimal features", "./data",
                 {"enable_file_locking": False, "validation_enabled": False, "cache_ttl": 600,
                  "memory_optimization": True},
                 ["high_throughput", "real_time_chat", "gaming"],
                 ["high_volume_chat", "real_time_applications", "performance_critical"],
                 enable_vector_search=False, enable_analytics=False, cache_size_mb=500, performance_mode="speed",
                 message_batch_size=200, history_page_size=100, environment="production", request_timeout_s=10.0),
        template("feature_rich", "All features enabled for full functionality", "./data",
                 {"enable_file_locking": True, "validation_enabled": True, "advanced_search": True,
                  "full_indexing": True},
                 ["ai_assistant", "knowledge_base", "research_chat"],
                 ["ai_applications", "research_tools", "advanced_chat_features"],
                 enable_compression=True, backup_enabled=True, cache_size_mb=150, performance_mode="quality",
                 environment="production"),
        template("lightweight", "Minimal resource usage for simple applications", "./data",
                 {"enable_file_locking": False, "minimal_metadata": True, "reduced_logging": True},
                 ["simple_chat", "embedded_systems", "low_resource"],
                 ["simple_applications", "resource_constrained", "embedded_systems"],
                 enable_vector_search=False, enable_streaming=False, enable_analytics=False, cache_size_mb=25,
                 performance_mode="speed", max_session_size_mb=10, message_batch_size=50, shard_count=1),
        template("testing", "Optimized for test environments with fast cleanup", "./test_data",
                 {"enable_file_locking": False, "validation_enabled": True, "fast_cleanup": True, "cache_ttl": 30},
                 ["unit_testing", "integration_testing", "ci_cd"],
                 ["test_environments", "automated_testing", "development_ci"],
                 enable_streaming=False, enable_analytics=False, cache_size_mb=30, max_session_size_mb=5,
                 message_batch_size=25, environment="test", shard_count=2, durability="none",
                 request_timeout_s=10.0),
    ]}


LEGACY_PRESETS: dict[str, dict[str, Any]] = {
    "speed": {"performance_mode": "speed", "cache_size_mb": 200, "enable_compression": False,
              "backup_enabled": False, "message_batch_size": 50, "history_page_size": 25},
    "balanced": {"performance_mode": "balanced", "cache_size_mb": 100, "enable_compression": False,
                 "backup_enabled": True, "message_batch_size": 100, "history_page_size": 50},
    "quality": {"performance_mode": "quality", "cache_size_mb": 150, "enable_compression": True,
                "backup_enabled": True, "message_batch_size": 200, "history_page_size": 100,
                "enable_analytics": True},
}


def _template_fields(config: ChatAppStorageConfig) -> dict[str, Any]:
    values = config.model_dump()
    values.pop("storage_path")
    return values


class FFChatConfigFactory:
    """Templates held in memory; builds, scores and migrates configurations.

    Example:
        >>> config = FFChatConfigFactory().create_from_template("development", "./chat_data")
    """

    def __init__(self) -> None:
        self._templates = _builtin_templates()

    def list_templates(self) -> dict[str, dict[str, Any]]:
        def features(config: ChatAppStorageConfig) -> dict[str, bool]:
            shown = config.to_dict()["features"]
            shown.pop("backup")  # upstream lists the four search and storage features only
            return shown
        return {name: {"description": t.description, "performance_mode": t.base_config.performance_mode,
                       "features": features(t.base_config),
                       "use_cases": list(t.use_cases), "recommended_for": list(t.recommended_for),
                       "performance_optimizations": dict(t.performance_optimizations)}
                for name, t in self._templates.items()}

    def get_template(self, name: str) -> ChatConfigTemplate:
        if name not in self._templates:
            raise ConfigurationError(f"Template '{name}' not found",
                                     context={"available_templates": list(self._templates)},
                                     suggestions=[f"Use one of: {', '.join(TEMPLATE_NAMES)}"])
        return self._templates[name]

    def register_template(self, template: ChatConfigTemplate) -> None:
        self._templates[template.name] = template

    def template_values(self, template_name: str, storage_path: Any,
                        overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(template field values with the path, flattened overrides) without building the config."""
        template = self.get_template(template_name)
        values = {**_template_fields(template.base_config), "storage_path": storage_path}
        return values, flatten_options(overrides)

    def create_from_template(self, template_name: str, storage_path: Any,
                             overrides: dict[str, Any] | None = None) -> ChatAppStorageConfig:
        values, flat = self.template_values(template_name, storage_path, overrides)
        values.update(flat)
        try:
            path = values.pop("storage_path")
            return ChatAppStorageConfig(path, **values)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"Failed to create configuration from template '{template_name}': {exc.message}",
                context={"template": template_name, "overrides": overrides,
                         "validation_errors": exc.context.get("validation_errors", [exc.message])}) from None

    def create_for_environment(self, environment: str, storage_path: Any, performance_level: str = "balanced",
                               **overrides: Any) -> ChatAppStorageConfig:
        template = _ENVIRONMENT_TEMPLATES.get(environment, "development")
        settings = {**_ENVIRONMENT_SETTINGS.get(environment, {}), "environment": environment,
                    "performance_mode": performance_level, **overrides}
        return self.create_from_template(template, storage_path, settings)

    def use_case_settings(self, use_case: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(template name, overrides) for a use case; unknown falls back to development with a warning."""
        if use_case not in USE_CASE_TEMPLATES:
            logger.warning("Unknown use case '%s'; falling back to the development template", use_case)
        template = USE_CASE_TEMPLATES.get(use_case, "development")
        overrides = dict(kwargs)
        if use_case in ("ai_assistant", "research_chat"):
            overrides.setdefault("enable_vector_search", True)
            overrides.setdefault("enable_analytics", True)
        elif use_case in ("high_volume_chat", "gaming_chat"):
            overrides.setdefault("performance_mode", "speed")
            overrides.setdefault("enable_analytics", False)
        elif use_case == "simple_chat":
            overrides.setdefault("enable_vector_search", False)
            overrides.setdefault("enable_streaming", False)
        elif use_case == "testing_chat":
            overrides.setdefault("environment", "test")
            overrides.setdefault("cache_size_mb", 30)
        return template, overrides

    def create_for_use_case(self, use_case: str, storage_path: Any, **kwargs: Any) -> ChatAppStorageConfig:
        template, overrides = self.use_case_settings(use_case, kwargs)
        return self.create_from_template(template, storage_path, overrides)

    def validate_and_optimize(self, config: ChatAppStorageConfig) -> dict[str, Any]:
        return score_config(config)

    def migrate_from_wrapper_config(self, wrapper_config: dict[str, Any]) -> ChatAppStorageConfig:
        try:
            values = {name: wrapper_config.get(name, DEFAULTS[name]) for name in _WRAPPER_FIELDS}
            return ChatAppStorageConfig(wrapper_config.get("base_path", "./data"),
                                        cache_size_mb=wrapper_config.get("cache_size_limit", DEFAULTS["cache_size_mb"]),
                                        **values)
        except Exception as exc:
            message = exc.message if isinstance(exc, ConfigurationError) else str(exc)
            raise ConfigurationError(f"Failed to migrate wrapper configuration: {message}") from None

    def validate_migration(self, old_config: Any, new_config: ChatAppStorageConfig) -> dict[str, Any]:
        if isinstance(old_config, ChatAppStorageConfig):
            old = {**old_config.model_dump(), "base_path": old_config.storage_path,
                   "cache_size_limit": old_config.cache_size_mb}
            old.pop("storage_path")
            old.pop("cache_size_mb")
        else:
            old = dict(old_config or {})
        mapped = {key: _WRAPPER_MAPPING[key] for key in old if key in _WRAPPER_MAPPING}
        ignored = [key for key in old if key not in _WRAPPER_MAPPING]
        warnings = [f"Ignored key '{key}'" for key in ignored]
        carried = 0
        for key, field_name in mapped.items():
            if old[key] == getattr(new_config, field_name):
                carried += 1
            else:
                warnings.append(f"Value of '{key}' changed: {old[key]!r} -> {getattr(new_config, field_name)!r}")
        errors = new_config.validate()
        return {"valid": not errors, "compatibility_score": carried / len(mapped) if mapped else 1.0,
                "warnings": warnings, "errors": errors, "mapped_fields": mapped, "ignored_keys": ignored}

    def export_template(self, template_name: str, output_path: Any) -> bool:
        template = self.get_template(template_name)
        try:
            output = Path(output_path)
            output.parent.mkdir(parents=True, exist_ok=True)
            data = {"name": template.name, "description": template.description,
                    "configuration": template.base_config.to_dict(),
                    "performance_optimizations": template.performance_optimizations,
                    "use_cases": template.use_cases, "recommended_for": template.recommended_for,
                    "exported_at": iso(utc_now()), "version": "1.1"}
            output.write_text(json.dumps(data, indent=2))
            return True
        except OSError as exc:
            raise ConfigurationError(f"Failed to export template '{template_name}': {exc}",
                                     context={"template_name": template_name, "output_path": str(output_path)})

    def load_template_from_file(self, file_path: Any) -> ChatConfigTemplate:
        try:
            data = json.loads(Path(file_path).read_text())
            if data.get("version", "1.0") not in ("1.0", "1.1"):
                raise ValueError(f"unsupported version {data.get('version')!r}")
            config = ChatAppStorageConfig.from_dict(data["configuration"])
            return ChatConfigTemplate(data["name"], data["description"], config,
                                      data.get("performance_optimizations", {}), data.get("use_cases", []),
                                      data.get("recommended_for", []))
        except Exception as exc:
            message = exc.message if isinstance(exc, ConfigurationError) else str(exc)
            raise ConfigurationError(f"Failed to load template from file {file_path}: {message}",
                                     context={"file_path": str(file_path)}) from None


def score_config(config: ChatAppStorageConfig) -> dict[str, Any]:
    """validate_and_optimize: findings with upstream's texts and the contract's scoring."""
    errors = config.validate()
    warnings: list[str] = []
    recommendations: list[str] = []
    if config.cache_size_mb < 50:
        warnings.append("Cache size is quite small - may impact performance")
        recommendations.append("Consider increasing cache_size_mb to at least 50MB")
    elif config.cache_size_mb > 500:
        warnings.append("Cache size is very large - may use excessive memory")
        recommendations.append("Consider reducing cache_size_mb unless you have high memory availability")
    if config.performance_mode == "speed" and config.enable_vector_search:
        warnings.append("Vector search enabled in speed mode - may reduce performance")
        recommendations.append("Consider disabling vector search for maximum speed")
    if config.performance_mode == "quality" and not config.enable_vector_search:
        recommendations.append("Consider enabling vector search for better quality results")
    if config.enable_compression and config.performance_mode == "speed":
        warnings.append("Compression enabled in speed mode - adds processing overhead")
        recommendations.append("Consider disabling compression for maximum speed")
    if config.enable_vector_search and not config.embedder:
        recommendations.append("Configure an embedder to enable vector and hybrid search, or disable "
                               "enable_vector_search")
    if config.environment == "production":
        if not config.enable_analytics:
            recommendations.append("Consider enabling analytics for production monitoring")
        if not os.path.isabs(str(config.storage_path)):
            warnings.append("Relative storage path in production environment")
            recommendations.append("Use absolute paths for production deployments")
        if not config.backup_enabled:
            recommendations.append("Enable backups for production environment")
        if config.cache_size_mb < 100:
            recommendations.append("Increase cache size for production workloads")
        if config.resolved_durability() == "none":
            warnings.append("Durability 'none' can lose acknowledged messages")
            recommendations.append("Use durability 'fsync' or 'flush' in production")
    if config.environment == "test":
        if config.cache_size_mb > 50:
            recommendations.append("Consider smaller cache size for test environment")
        if config.enable_compression:
            recommendations.append("Disable compression for faster test execution")
    score = 0 if errors else max(0, 100 - 15 * len(warnings) - 5 * len(recommendations))
    level = "high" if score >= 80 else "good" if score >= 60 else "moderate" if score >= 40 else "needs_optimization"
    return {"valid": not errors, "errors": errors, "warnings": warnings, "recommendations": recommendations,
            "optimization_score": score, "estimated_performance": level}


def create_chat_config_for_development(storage_path: Any = "./dev_data", performance_level: str = "balanced",
                                       **overrides: Any) -> ChatAppStorageConfig:
    return FFChatConfigFactory().create_for_environment("development", storage_path, performance_level, **overrides)


def create_chat_config_for_production(storage_path: Any, performance_level: str = "balanced",
                                      **overrides: Any) -> ChatAppStorageConfig:
    return FFChatConfigFactory().create_for_environment("production", storage_path, performance_level, **overrides)


def create_chat_config_for_testing(storage_path: Any = "./test_data", performance_level: str = "balanced",
                                   **overrides: Any) -> ChatAppStorageConfig:
    return FFChatConfigFactory().create_for_environment("test", storage_path, performance_level, **overrides)


def get_chat_app_presets() -> dict[str, ChatAppStorageConfig]:
    factory = FFChatConfigFactory()
    return {name: factory.create_from_template(name, "./data") for name in TEMPLATE_NAMES}


def validate_chat_app_config(config: ChatAppStorageConfig) -> list[str]:
    result = score_config(config)
    return result["errors"] + result["warnings"]


def optimize_chat_config(config: ChatAppStorageConfig) -> dict[str, Any]:
    return score_config(config)


def get_recommended_config_for_use_case(use_case: str) -> dict[str, Any]:
    factory = FFChatConfigFactory()
    template = USE_CASE_TEMPLATES.get(use_case, "development")
    return {"use_case": use_case, "recommended_template": template,
            "template_info": factory.list_templates()[template],
            "setup_example": (f"# Recommended setup for {use_case}:\nfrom api import FFChatAppBridge\n\n"
                              f"bridge = await FFChatAppBridge.create_for_use_case(\n    \"{use_case}\",\n"
                              f"    \"./your_data_path\"\n)\n"),
            "fallback": use_case not in USE_CASE_TEMPLATES}


