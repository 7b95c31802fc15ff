"""engine.storable: what a shard can encode (Unicode, JSON types, depth, integer range), with field paths."""

import pytest

from engine.errors import InvalidInput
from engine.storable import MAX_NESTING, check_json, check_text, text_bytes


def _nested(levels):
    """A dict nested `levels` deep (the outermost dict is level 1)."""
    value = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _error(value, field="meta"):
    with pytest.raises(InvalidInput) as caught:
        check_json(value, field)
    return caught.value


def test_text_bytes_counts_utf8_and_rejects_lone_surrogates():
    """text_bytes is the UTF-8 size, and a lone surrogate is INVALID_MESSAGE naming the field and position."""
    assert text_bytes("abc", "f") == 3 and text_bytes("é€😀", "f") == 9
    with pytest.raises(InvalidInput) as caught:
        text_bytes("ab\ud800", "Message content")
    assert str(caught.value) == "Message content: invalid Unicode (lone surrogate '\\ud800' at position 2)"
    assert caught.value.code == "INVALID_MESSAGE"


def test_check_text_rejects_non_strings_with_the_given_code():
    """check_text names the field and the type, with the caller's code."""
    with pytest.raises(InvalidInput) as caught:
        check_text(5, "title", "INVALID_ARGUMENT")
    assert str(caught.value) == "title must be a string, got int" and caught.value.code == "INVALID_ARGUMENT"


def test_json_values_within_the_rules_pass():
    """JSON types, valid Unicode, the integer range ends and exactly MAX_NESTING levels are storable."""
    check_json({"s": "é", "i": 2**64 - 1, "j": -(2**63), "f": 1.5, "b": True, "n": None, "l": [1, [2]]}, "meta")
    check_json(_nested(MAX_NESTING), "meta")


def test_error_names_the_path_of_the_bad_value():
    """The error names the path: dotted keys, [positions], quoted keys that are not identifiers."""
    assert str(_error({"a": {"b c": [1, {"x": 2**64}]}})) == \
        "meta.a.'b c'[1].x: integer 18446744073709551616 is out of range (-2**63..2**64-1)"
    assert str(_error({"a": ["x", "y\udc00"]})) == "meta.a[1]: invalid Unicode (lone surrogate '\\udc00' at position 1)"
    assert str(_error({"k\ud800": 1})) == \
        "meta key 'k\\ud800': invalid Unicode (lone surrogate '\\ud800' at position 1)"
    assert str(_error({"n": -(2**63) - 1})).startswith("meta.n: integer -9223372036854775809 is out of range")


def test_non_json_types_and_keys_are_rejected():
    """Sets, tuples, bytes and non-str keys are not JSON types."""
    assert str(_error({"s": {1}})) == "meta.s: set is not a JSON type (use dict, list, str, int, float, bool or None)"
    assert str(_error({"t": (1, 2)})).startswith("meta.t: tuple is not a JSON type")
    assert str(_error({"b": b"x"})).startswith("meta.b: bytes is not a JSON type")
    assert str(_error({"a": {1: 2}})) == "meta.a: key 1 is not a string"


def test_depth_is_bounded_without_recursion_error():
    """One level past MAX_NESTING fails, and so do 900 and 100000 levels, cleanly (no RecursionError)."""
    for levels in (MAX_NESTING + 1, 900, 100_000):
        error = _error(_nested(levels))
        assert error.code == "INVALID_MESSAGE" and str(error).endswith(f"nested deeper than {MAX_NESTING} levels")
        assert len(str(error)) < 250
    deep_list = []
    for _ in range(MAX_NESTING):
        deep_list = [deep_list]
    assert str(_error(deep_list)).endswith("nested deeper than 32 levels")


def test_self_referencing_value_fails_on_depth():
    """A dict that contains itself is caught by the depth bound, not by a crash."""
    loop = {}
    loop["me"] = loop
    assert str(_error(loop)).endswith("nested deeper than 32 levels")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_are_not_storable(number):
    """NaN and infinities are refused (INVALID_MESSAGE naming the field): an export must stay valid JSON."""
    with pytest.raises(InvalidInput) as caught:
        check_json({"score": [1.0, number]}, "metadata")
    assert caught.value.code == "INVALID_MESSAGE" and "metadata.score[1]" in caught.value.message
