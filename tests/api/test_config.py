"""ChatAppStorageConfig, option flattening, templates, scoring and migration (no Ray needed)."""

import ast
import os
import pathlib
import pickle

import pytest
from pydantic import Field

import api.config as config_module
from api import (ChatAppStorageConfig, ConfigurationError, FFChatConfigFactory, create_chat_config_for_development,
                 create_chat_config_for_production, create_chat_config_for_testing, get_chat_app_presets,
                 get_recommended_config_for_use_case, optimize_chat_config, validate_chat_app_config)
from api.config import (DEFAULTS, FIELD_ORDER, RANGES, defaults_of, flatten_options, groups_of,
                        ranges_of)


def test_defaults_and_positional_path():
    """The path may be positional; defaults match the contract."""
    config = ChatAppStorageConfig("./data")
    assert config.storage_path == "./data" and config.cache_size_mb == 100 and config.request_timeout_s == 30.0
    assert config.validate() == [] and config.resolved_durability() == "flush"
    assert ChatAppStorageConfig("./d", performance_mode="quality").resolved_durability() == "fsync"
    assert ChatAppStorageConfig(storage_path=os.curdir).storage_path == "."


def test_all_errors_collected_in_contract_order():
    """Validation collects every error in the fixed order, as ConfigurationError with validation_errors."""
    with pytest.raises(ConfigurationError) as caught:
        ChatAppStorageConfig("", performance_mode="turbo", cache_size_mb=5, max_session_size_mb=501,
                             message_batch_size=0, history_page_size=501, search_result_limit=0,
                             environment="moon", shard_count=300, durability="maybe", ray_address="nowhere",
                             namespace="bad ns", embedder="not-a-path", max_message_bytes=10,
                             request_timeout_s=0.01)
    errors = caught.value.context["validation_errors"]
    assert errors == ["Storage path must not be empty",
                      "Performance mode must be one of: ['speed', 'balanced', 'quality']",
                      "Cache size should be at least 10MB", "Max session size should not exceed 500MB",
                      "Message batch size must be at least 1", "History page size should not exceed 500",
                      "Search result limit must be at least 1",
                      "Environment must be one of: ['development', 'production', 'test', 'staging']",
                      "Shard count should not exceed 256", "Durability must be one of: ['fsync', 'flush', 'none']",
                      "Ray address must be None, 'auto' or 'host:port'",
                      "Namespace must be 1-64 characters of [A-Za-z0-9_.-]",
                      "Embedder must be None or an importable 'module:callable' path",
                      "Max message bytes must be at least 1024", "Request timeout must be at least 0.1 seconds"]
    assert caught.value.message == "Configuration validation failed: " + "; ".join(errors)


def test_types_are_strict():
    """Ints take only int (not bool/float/str) and bools only bool."""
    for field, value, text in [("cache_size_mb", "100", "cache_size_mb must be int, got str"),
                               ("cache_size_mb", True, "cache_size_mb must be int, got bool"),
                               ("history_page_size", 5.0, "history_page_size must be int, got float"),
                               ("enable_streaming", 1, "enable_streaming must be bool, got int"),
                               ("request_timeout_s", "5", "request_timeout_s must be float, got str")]:
        with pytest.raises(ConfigurationError) as caught:
            ChatAppStorageConfig("./d", **{field: value})
        assert caught.value.context["validation_errors"] == [text]
    assert ChatAppStorageConfig("./d", request_timeout_s=5).request_timeout_s == 5


def test_unknown_option_and_assignment():
    """Unknown keys raise with valid options; a failing assignment keeps the old value."""
    with pytest.raises(ConfigurationError) as caught:
        ChatAppStorageConfig("./d", foo=1)
    assert caught.value.message.startswith("Unknown configuration option 'foo'. Valid options: [")
    assert caught.value.context["unknown_options"] == ["foo"]
    config = ChatAppStorageConfig("./d")
    with pytest.raises(ConfigurationError):
        config.cache_size_mb = 1
    assert config.cache_size_mb == 100
    config.cache_size_mb = 300
    assert config.cache_size_mb == 300


def test_production_absolute_path_needs_existing_parent(tmp_path):
    """In production an absolute path's parent must exist."""
    missing = tmp_path / "nope" / "data"
    with pytest.raises(ConfigurationError) as caught:
        ChatAppStorageConfig(str(missing), environment="production")
    assert caught.value.context["validation_errors"] == [
        f"Storage path parent directory does not exist: {missing.parent}"]
    assert ChatAppStorageConfig(str(tmp_path / "data"), environment="production").validate() == []


def test_dict_round_trip_equality_and_pickle():
    """from_dict(to_dict()) == config; flat and nested forms mix; configs pickle."""
    config = ChatAppStorageConfig("./d", cache_size_mb=123, shard_count=3, durability="fsync")
    nested = config.to_dict()
    assert set(nested) == {"storage_path", "features", "performance", "chat_settings", "environment", "runtime"}
    assert ChatAppStorageConfig.from_dict(nested) == config
    assert ChatAppStorageConfig.from_dict(config.model_dump()) == config
    assert pickle.loads(pickle.dumps(config)) == config


def test_flattening_rules():
    """Nested groups map to fields; unknown sub-keys, non-dict groups and conflicts raise."""
    assert flatten_options({"features": {"backup": True}, "performance": {"mode": "speed"}, "shard_count": 2}) == {
        "backup_enabled": True, "performance_mode": "speed", "shard_count": 2}
    for bad in ({"features": {"foo": 1}}, {"features": 5},
                {"performance": {"mode": "speed"}, "performance_mode": "quality"}, {"nope": 1}):
        with pytest.raises(ConfigurationError):
            flatten_options(bad)


def test_templates_and_scores():
    """Templates build the documented configs and score as the contract says."""
    factory = FFChatConfigFactory()
    assert set(factory.list_templates()) == {"development", "production", "high_performance", "feature_rich",
                                             "lightweight", "testing"}
    assert factory.validate_and_optimize(ChatAppStorageConfig("./d"))["optimization_score"] == 95
    assert factory.validate_and_optimize(factory.create_from_template("development", "./d"))["optimization_score"] == 95
    production = factory.create_from_template("production", "/tmp/prod")
    assert factory.validate_and_optimize(production)["optimization_score"] == 95
    lightweight = factory.validate_and_optimize(factory.create_from_template("lightweight", "./d"))
    assert lightweight["optimization_score"] == 80 and lightweight["estimated_performance"] == "high"
    testing = factory.create_from_template("testing", "./t")
    assert (testing.shard_count, testing.durability, testing.message_batch_size) == (2, "none", 25)
    with pytest.raises(ConfigurationError) as caught:
        factory.create_from_template("nope", "./d")
    assert caught.value.message == "Template 'nope' not found"
    with pytest.raises(ConfigurationError) as caught:
        factory.create_from_template("development", "./d", {"cache_size_mb": 1})
    assert caught.value.message.startswith("Failed to create configuration from template 'development': ")


def test_environment_and_use_case_factories():
    """Environment and use-case factories apply their settings, overrides last."""
    dev = create_chat_config_for_development("./d", cache_size_mb=70)
    assert dev.cache_size_mb == 70 and dev.environment == "development"
    prod = create_chat_config_for_production("/tmp/p", "speed")
    assert prod.performance_mode == "speed" and prod.cache_size_mb == 200 and prod.max_session_size_mb == 100
    test = create_chat_config_for_testing()
    assert test.environment == "test" and test.max_session_size_mb == 5
    gaming = FFChatConfigFactory().create_for_use_case("gaming_chat", "./g")
    assert gaming.performance_mode == "speed" and gaming.enable_analytics is False
    fallback = get_recommended_config_for_use_case("weird")
    assert fallback["recommended_template"] == "development" and fallback["fallback"] is True
    presets = get_chat_app_presets()
    assert all(config.storage_path == "./data" for config in presets.values())
    assert validate_chat_app_config(ChatAppStorageConfig("./d", cache_size_mb=20)) == [
        "Cache size is quite small - may impact performance"]
    assert optimize_chat_config(ChatAppStorageConfig("./d"))["valid"] is True


def test_export_load_template_round_trip(tmp_path):
    """load(export(t)) equals t in all six attributes; a loaded template can be registered."""
    factory = FFChatConfigFactory()
    path = tmp_path / "sub" / "t.json"
    assert factory.export_template("feature_rich", path) is True
    loaded = factory.load_template_from_file(path)
    assert loaded == factory.get_template("feature_rich")
    loaded.name = "mine"
    factory.register_template(loaded)
    assert factory.create_from_template("mine", "./x").performance_mode == "quality"
    with pytest.raises(ConfigurationError):
        factory.load_template_from_file(tmp_path / "missing.json")


def test_migration_and_validation_of_migration():
    """Wrapper configs migrate by name; a direct migration scores 1.0."""
    factory = FFChatConfigFactory()
    wrapper = {"base_path": "./w", "cache_size_limit": 120, "performance_mode": "speed", "legacy": True}
    config = factory.migrate_from_wrapper_config(wrapper)
    assert config.storage_path == "./w" and config.cache_size_mb == 120
    report = factory.validate_migration(wrapper, config)
    assert report["compatibility_score"] == 1.0 and report["ignored_keys"] == ["legacy"] and report["valid"]
    with pytest.raises(ConfigurationError) as caught:
        factory.migrate_from_wrapper_config({"cache_size_limit": 1})
    assert caught.value.message.startswith("Failed to migrate wrapper configuration: ")


def test_ranges_defaults_and_messages_come_from_the_field_declarations():
    """Each bound is declared once, in Field(ge=, le=): the ranges, the JSON schema and the error texts read it."""
    schema = ChatAppStorageConfig.model_json_schema()["properties"]
    for name, info in ChatAppStorageConfig.model_fields.items():
        bounds = [getattr(m, "ge", None) for m in info.metadata] + [getattr(m, "le", None) for m in info.metadata]
        if name in RANGES:
            low, high = RANGES[name]
            assert low in bounds and high in bounds
            shown = schema[name]["anyOf"][0] if "anyOf" in schema[name] else schema[name]
            assert (shown["minimum"], shown["maximum"]) == (low, high)
        else:
            assert bounds == [None] * len(bounds), name
        assert DEFAULTS.get(name) == (None if info.is_required() else info.default)
    assert RANGES["cache_size_mb"] == (10, 2000) and RANGES["request_timeout_s"] == (0.1, 600)
    assert FIELD_ORDER == list(ChatAppStorageConfig.model_fields) and "storage_path" not in DEFAULTS


def test_config_module_names_no_field_outside_its_declaration():
    """api/config.py never re-lists fields by name (only the path and the production rule name theirs)."""
    source = pathlib.Path(config_module.__file__).read_text()
    strings = {node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)}
    assert strings & set(FIELD_ORDER) == {"storage_path", "environment"}


class _Extended(ChatAppStorageConfig):
    """The config with one more field and a narrower cache bound (upstream's "should" wording dropped)."""

    cache_size_mb: int = Field(100, ge=20, le=300, description="narrower", json_schema_extra={"group": "performance"})
    reply_limit: int = Field(5, ge=2, le=9, description="new", json_schema_extra={"group": "chat_settings"})


def test_a_field_declared_once_reaches_every_derived_list():
    """A new or changed field needs only its declaration: ranges, groups, to_dict, flattening and texts follow."""
    assert ranges_of(_Extended)["reply_limit"] == (2, 9) and ranges_of(_Extended)["cache_size_mb"] == (20, 300)
    assert groups_of(_Extended)["chat_settings"]["reply_limit"] == "reply_limit"
    assert defaults_of(_Extended)["reply_limit"] == 5
    config = _Extended("./d", reply_limit=7)
    assert config.to_dict()["chat_settings"] == {"message_batch_size": 100, "history_page_size": 50,
                                                 "search_result_limit": 20, "reply_limit": 7}
    assert flatten_options({"chat_settings": {"reply_limit": 3}}, model=_Extended) == {"reply_limit": 3}
    assert _Extended.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigurationError) as caught:
        _Extended("./d", reply_limit=1, cache_size_mb=15)
    assert caught.value.context["validation_errors"] == ["Cache size must be at least 20MB",
                                                         "Reply limit must be at least 2"]
    with pytest.raises(ConfigurationError) as caught:
        _Extended("./d", reply_limit="9")
    assert caught.value.context["validation_errors"] == ["reply_limit must be int, got str"]
