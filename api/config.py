"""`ChatAppStorageConfig`: the typed, validated bridge configuration (contract §2).

The model is the one declaration of every field: type, default, bounds, description and `to_dict()`
group. Field order, defaults, ranges, groups and the contract's error texts are read off
`model_fields`, so a field is added or changed in one place.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from engine.config import MB, Durability

from .errors import ConfigurationError

PerformanceMode = Literal["speed", "balanced", "quality"]
Environment = Literal["development", "production", "test", "staging"]
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9_.\-\[\]:]+):(?P<port>\d{1,5})")
# A bound's message names the field without its unit suffix and puts the unit after the number:
# cache_size_mb -> "Cache size should not exceed 2000MB".
_UNIT_SUFFIXES = {"_mb": "MB", "_s": " seconds"}


# --------------------------------------------------------------------------- value rules
# Each raises ValueError with the contract's text; pydantic reports it as a `value_error`.
def _path_format(path: str) -> str:
    if not path.strip():
        raise ValueError("Storage path must not be empty")
    if "\x00" in path:
        raise ValueError("Invalid storage path format: embedded null byte")
    return path


def _optional_path(path: str | None) -> str | None:
    return None if path is None else _path_format(path)


def _ray_address(address: str | None) -> str | None:
    match = _HOST_PORT.fullmatch(address) if address not in (None, "auto") else None
    if address not in (None, "auto") and (match is None or not 1 <= int(match["port"]) <= 65535):
        raise ValueError("Ray address must be None, 'auto' or 'host:port'")
    return address


def _matching(pattern: str, text: str) -> AfterValidator:
    """A rule for an optional str: None, or a full match of `pattern`; otherwise ValueError(text)."""
    regex = re.compile(pattern)

    def check(value: str | None) -> str | None:
        if value is not None and not regex.fullmatch(value):
            raise ValueError(text)
        return value
    return AfterValidator(check)


_NAMESPACE_RULE = _matching(r"[A-Za-z0-9_.-]{1,64}", "Namespace must be 1-64 characters of [A-Za-z0-9_.-]")
_EMBEDDER_RULE = _matching(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*",
                           "Embedder must be None or an importable 'module:callable' path")


def _group(name: str, key: str | None = None, **extra: str) -> dict[str, Any]:
    """Field(json_schema_extra=...) placing the field in `to_dict()[name][key or field name]`."""
    return {"group": name, **({"key": key} if key else {}), **extra}


class ChatAppStorageConfig(BaseModel):
    """Bridge configuration; invalid values raise ConfigurationError (never pydantic's ValidationError).

    Fields are declared in `to_dict()` order, which is also the order validation errors are
    reported in (contract §2: path, mode, cache, max session, batch, page, search limit,
    environment, then the runtime fields, then the backup schedule fields).

    Example:
        >>> config = ChatAppStorageConfig("./chat_data", cache_size_mb=200)
        >>> config.to_dict()["performance"]["cache_size_mb"]
        200
    """

    # strict: ints take only int (not bool, float or str), bools only bool; a float field takes int.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    storage_path: Annotated[str, AfterValidator(_path_format)] = Field(
        description="root of the durable data; one Ray runtime serves a path at a time")
    enable_vector_search: bool = Field(True, description="with `embedder` set, enables vector and hybrid search",
                                       json_schema_extra=_group("features", "vector_search"))
    enable_streaming: bool = Field(True, description="reported only", json_schema_extra=_group("features", "streaming"))
    enable_analytics: bool = Field(True, description="reported only", json_schema_extra=_group("features", "analytics"))
    enable_compression: bool = Field(False, description="shard logs compress their records",
                                     json_schema_extra=_group("features", "compression"))
    backup_enabled: bool = Field(False, description="take scheduled online backups",
                                 json_schema_extra=_group("features", "backup"))
    performance_mode: PerformanceMode = Field("balanced", description="default durability; scoring",
                                              json_schema_extra=_group("performance", "mode"))
    # "should be at least": upstream's wording for its two size limits (the others say "must").
    cache_size_mb: int = Field(100, ge=10, le=2000, description="byte budget of all shard result caches, split evenly",
                               json_schema_extra=_group("performance", low_verb="should"))
    max_session_size_mb: int = Field(50, ge=1, le=500, description="soft limit: a store beyond it warns",
                                     json_schema_extra=_group("performance", low_verb="should"))
    message_batch_size: int = Field(100, ge=1, le=1000, description="most messages per batch store or import batch",
                                    json_schema_extra=_group("chat_settings"))
    history_page_size: int = Field(50, ge=1, le=500, description="default limit of history and list_sessions",
                                   json_schema_extra=_group("chat_settings"))
    search_result_limit: int = Field(20, ge=1, le=1000, description="default search limit",
                                     json_schema_extra=_group("chat_settings"))
    environment: Environment = Field("development", description="production path rule; scoring")
    shard_count: int | None = Field(None, ge=1, le=256, json_schema_extra=_group("runtime"),
                                    description="shards of a new path (None: the CPUs Ray reports); fixed once stored")
    durability: Durability | None = Field(None, json_schema_extra=_group("runtime"),
                                          description="acknowledgement rule (None: fsync in quality mode, else flush)")
    ray_address: Annotated[str | None, AfterValidator(_ray_address)] = Field(
        None, description="None: reuse or start a local runtime; 'auto' or 'host:port': join a cluster",
        json_schema_extra=_group("runtime"))
    namespace: Annotated[str | None, _NAMESPACE_RULE] = Field(
        None, description="Ray namespace (None: derived from the absolute path)", json_schema_extra=_group("runtime"))
    embedder: Annotated[str | None, _EMBEDDER_RULE] = Field(
        None, description="'pkg.module:callable' that embeds texts", json_schema_extra=_group("runtime"))
    max_message_bytes: int = Field(MB, ge=1024, le=16 * MB, description="content limit in UTF-8 bytes",
                                   json_schema_extra=_group("runtime"))
    request_timeout_s: float = Field(30.0, ge=0.1, le=600, description="deadline of every call, retries included",
                                     json_schema_extra=_group("runtime"))
    backup_destination: Annotated[str | None, AfterValidator(_optional_path)] = Field(
        None, description="folder of scheduled backups (None: '<storage_path>-backups' beside the path)",
        json_schema_extra=_group("backup", "destination", shown="when_set"))
    backup_interval_s: float = Field(3600.0, ge=1, le=7 * 86400, description="seconds between scheduled backups",
                                     json_schema_extra=_group("backup", "interval_s", shown="when_set"))
    backup_keep: int = Field(7, ge=1, le=1000, description="scheduled backups kept (older ones are removed)",
                             json_schema_extra=_group("backup", "keep", shown="when_set"))

    def __init__(self, storage_path: Any = None, /, **fields: Any) -> None:
        if "storage_path" in fields:
            if storage_path is not None:
                raise ConfigurationError("storage_path given twice", config_field="storage_path")
            storage_path = fields.pop("storage_path")
        for name in fields:
            if name not in type(self).model_fields:
                raise _unknown_option(type(self), name)
        values = {**defaults_of(type(self)), **fields, "storage_path": _path_value(storage_path)}
        errors = validate_values(values, type(self))
        if errors:
            raise ConfigurationError("Configuration validation failed: " + "; ".join(errors),
                                     context={"validation_errors": errors})
        super().__init__(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in type(self).model_fields:
            raise _unknown_option(type(self), name)
        if name == "storage_path":
            value = _path_value(value)
        errors = validate_values({**self.model_dump(), name: value}, type(self))
        if errors:
            raise ConfigurationError("Configuration validation failed: " + "; ".join(errors),
                                     context={"validation_errors": errors}, config_field=name)
        super().__setattr__(name, value)

    def validate(self) -> list[str]:  # type: ignore[override]
        """Re-run every rule; [] when valid."""
        return validate_values(self.model_dump(), type(self))

    def to_dict(self) -> dict[str, Any]:
        """The nested form: grouped fields under their group, the others at the top, in field order. The
        backup schedule's fields (newer than the contract's nested form) appear only when set."""
        out: dict[str, Any] = {}
        for name, group, key in _layout(type(self)):
            info = type(self).model_fields[name]
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if extra.get("shown") == "when_set" and getattr(self, name) == info.default:
                continue
            target = out.setdefault(group, {}) if group else out
            target[key] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChatAppStorageConfig":
        flat = flatten_options(data, model=cls)
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


# --------------------------------------------------------------------------- read off the model
Model = type[ChatAppStorageConfig]


@functools.cache
def _layout(model: Model) -> tuple[tuple[str, str | None, str], ...]:
    """(field, to_dict group or None, key in the group) for every field, in declaration order."""
    rows = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        group = extra.get("group")
        rows.append((name, str(group) if group else None, str(extra.get("key", name))))
    return tuple(rows)


@functools.cache
def defaults_of(model: Model) -> dict[str, Any]:
    """{field: default} for every field that has one (all but storage_path)."""
    return {name: info.default for name, info in model.model_fields.items() if not info.is_required()}


@functools.cache
def ranges_of(model: Model) -> dict[str, tuple[Any, Any]]:
    """{field: (low, high)} for every field declared with Field(ge=..., le=...)."""
    ranges = {}
    for name, info in model.model_fields.items():
        low = next((m.ge for m in info.metadata if hasattr(m, "ge")), None)
        high = next((m.le for m in info.metadata if hasattr(m, "le")), None)
        if low is not None or high is not None:
            ranges[name] = (low, high)
    return ranges


@functools.cache
def groups_of(model: Model) -> dict[str, dict[str, str]]:
    """The nested groups of to_dict(): {group: {sub-key: field}}."""
    groups: dict[str, dict[str, str]] = {}
    for name, group, key in _layout(model):
        if group:
            groups.setdefault(group, {})[key] = name
    return groups


FIELD_ORDER = list(ChatAppStorageConfig.model_fields)
DEFAULTS = defaults_of(ChatAppStorageConfig)
RANGES = ranges_of(ChatAppStorageConfig)
GROUPS = groups_of(ChatAppStorageConfig)
RUNTIME_FIELDS = list(GROUPS["runtime"].values())
# Fields 1-13 of the contract: the ones upstream's config has (the runtime group is new).
UPSTREAM_FIELDS = [name for name in FIELD_ORDER if name not in RUNTIME_FIELDS]


# --------------------------------------------------------------------------- validation
@functools.cache
def _validators(model: Model) -> dict[str, TypeAdapter[Any]]:
    """One strict validator per field, built from its declaration (type, bounds, rules).

    Fields are checked one by one rather than through `model_validate`: the model's own __init__
    (positional path, ConfigurationError) is what pydantic would call, and it calls this.
    """
    strict = ConfigDict(strict=True)
    return {name: TypeAdapter(info.rebuild_annotation(), config=strict) for name, info in model.model_fields.items()}


def validate_values(values: dict[str, Any], model: Model = ChatAppStorageConfig) -> list[str]:
    """Every rule of §2 over flat `values`, at most one error per field, in field order."""
    found: dict[str, str] = {}
    for name, adapter in _validators(model).items():
        try:
            adapter.validate_python(values[name])
        except ValidationError as exc:
            found[name] = _message(model, name, exc.errors()[0])
    if "storage_path" not in found and values.get("environment") == "production":
        problem = _missing_parent(values["storage_path"])
        if problem:
            found["storage_path"] = problem
    return [found[name] for name in model.model_fields if name in found]


def _missing_parent(path: str) -> str | None:
    """In production an absolute path's parent must exist (a cross-field rule, so not a field rule)."""
    normalised = os.path.normpath(path)
    if not os.path.isabs(normalised):
        return None
    parent = os.path.dirname(normalised.rstrip(os.sep)) or os.sep
    return None if os.path.isdir(parent) else f"Storage path parent directory does not exist: {parent}"


def _message(model: Model, name: str, error: Any) -> str:
    """The contract's text for one pydantic error of field `name`."""
    value = error["input"]
    kind = error["type"]
    base = _base_type(model.model_fields[name].annotation)
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in ("greater_than_equal", "less_than_equal"):
        return _range_message(model, name, value)
    if kind == "literal_error" and isinstance(value, str):
        return f"{_label(name)[0]} must be one of: {list(get_args(base))}"
    if kind.endswith("_type") or kind == "literal_error":
        expected = type(get_args(base)[0]).__name__ if get_origin(base) is Literal else base.__name__
        return f"{name} must be {expected}, got {type(value).__name__}"
    return f"{name}: {error['msg']}"


def _range_message(model: Model, name: str, value: Any) -> str:
    low, high = ranges_of(model)[name]
    label, unit = _label(name)
    if not value >= low:  # NaN is not at least the minimum either
        extra = model.model_fields[name].json_schema_extra
        verb = extra.get("low_verb", "must") if isinstance(extra, dict) else "must"
        return f"{label} {verb} be at least {low}{unit}"
    return f"{label} should not exceed {high}{unit}"


def _label(name: str) -> tuple[str, str]:
    """("Cache size", "MB") for cache_size_mb: the field in words, and its unit."""
    for suffix, unit in _UNIT_SUFFIXES.items():
        if name.endswith(suffix):
            return name[:-len(suffix)].replace("_", " ").capitalize(), unit
    return name.replace("_", " ").capitalize(), ""


def _base_type(annotation: Any) -> Any:
    """`int` for `int | None`; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [arg for arg in get_args(annotation) if arg is not type(None)]
    return annotation


def _path_value(path: Any) -> Any:
    """A path-like storage path becomes its str; None (not given) becomes "" (the empty-path error)."""
    if isinstance(path, os.PathLike):
        return os.fspath(path)
    return "" if path is None else path


def _unknown_option(model: Model, name: str) -> ConfigurationError:
    valid = list(model.model_fields)
    return ConfigurationError(f"Unknown configuration option '{name}'. Valid options: {valid}",
                              config_field=name, context={"unknown_options": [name], "valid_options": valid})


def flatten_options(options: dict[str, Any] | None, allow_storage_path: bool = True,
                    model: Model = ChatAppStorageConfig) -> dict[str, Any]:
    """Flat or nested (to_dict) options to flat field names; raises ConfigurationError on conflicts."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigurationError(f"Options must be a dict, got {type(options).__name__}")
    groups = groups_of(model)
    flat: dict[str, Any] = {}

    def put(field: str, value: Any) -> None:
        if field in flat and flat[field] != value:
            raise ConfigurationError(f"Configuration field '{field}' given twice with different values",
                                     config_field=field)
        flat[field] = value

    for key, value in options.items():
        if key in groups:
            if not isinstance(value, dict):
                raise ConfigurationError(f"Configuration group '{key}' must be a dict", config_field=key)
            for sub_key, sub_value in value.items():
                if sub_key not in groups[key]:
                    raise ConfigurationError(f"Unknown configuration option '{key}.{sub_key}'. "
                                             f"Valid options: {sorted(groups[key])}", config_field=f"{key}.{sub_key}")
                put(groups[key][sub_key], sub_value)
        elif key == "storage_path":
            if allow_storage_path:
                put(key, value)
        elif key in model.model_fields:
            put(key, value)
        else:
            raise _unknown_option(model, key)
    return flat
