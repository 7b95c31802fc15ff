"""Public exceptions: formats, suggestion order, codes and pickling (Ray transports them)."""

import pickle

import pytest

from api import (ChatIntegrationError, ConfigurationError, ErrorCode, InitializationError, PerformanceError,
                 SearchError, StorageError, create_missing_dependency_error, create_validation_error,
                 wrap_storage_operation_error)

ALL = [ChatIntegrationError("Test error", context={"test": True}, suggestions=["x"], error_code="E"),
       ConfigurationError("bad", config_field="cache_size_mb", config_value=5),
       InitializationError("init", component="c", initialization_step="s", suggestions=["mine"]),
       StorageError("disk", operation="write", storage_path="/p", error_code=ErrorCode.SESSION_NOT_FOUND),
       SearchError("search", search_type="text", query="q" * 150), PerformanceError("slow", "op", 5.0, 1.0),
       create_validation_error("f", 1, "int"), create_missing_dependency_error("dep", "comp"),
       wrap_storage_operation_error(OSError("boom"), "write", "/p")]


def test_str_and_to_dict():
    """str(e) appends the context; to_dict has error, error_code, context, suggestions."""
    error = ChatIntegrationError("Test error", context={"test": True})
    assert str(error) == "Test error (Context: test=True)" and error.message == "Test error"
    assert error.to_dict() == {"error": "Test error (Context: test=True)", "error_code": None,
                               "context": {"test": True}, "suggestions": []}


def test_default_suggestions_follow_callers_without_duplicates():
    """Subclass defaults come after the caller's suggestions, de-duplicated, in a fixed order."""
    error = InitializationError("x", suggestions=["mine", "Ensure configuration values are valid"])
    assert error.suggestions == ["mine", "Ensure configuration values are valid",
                                 "Verify storage path exists and is writable",
                                 "Check that all required dependencies are available"]
    assert StorageError("x").error_code == "STORAGE_ERROR" and SearchError("x").error_code == "SEARCH_ERROR"
    assert SearchError("x", query="q" * 150).context["query"] == "q" * 100 + "..."


def test_caller_objects_are_not_mutated():
    """Context and suggestion arguments are copied."""
    context, suggestions = {"a": 1}, ["s"]
    StorageError("x", operation="op", context=context, suggestions=suggestions)
    assert context == {"a": 1} and suggestions == ["s"]


@pytest.mark.parametrize("error", ALL, ids=lambda e: type(e).__name__)
def test_every_error_pickles_round_trip(error):
    """Every public exception survives pickling with equal str, to_dict and attributes."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.to_dict() == error.to_dict()
    assert copy.message == error.message and copy.suggestions == error.suggestions
