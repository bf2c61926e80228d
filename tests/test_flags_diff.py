"""The audit diff: JSON-pointer paths with the values before and after."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.flags.diff import json_diff
from gateway.flags.operations import set_rollout
from tests.flags_support import demo_flag


def test_equal_values_have_no_diff() -> None:
    """Two equal documents give an empty diff (1 and 1.0 are the same JSON number)."""
    assert json_diff(demo_flag(), demo_flag()) == []
    assert json_diff({"a": 1}, {"a": 1.0}) == []


def test_diff_names_replaced_added_and_removed_values() -> None:
    """A changed leaf is a replace, a new key an add, a dropped key a remove."""
    before = {"state": "ENABLED", "metadata": {"owner": "ml", "model": "digits"}}
    after = {"state": "DISABLED", "metadata": {"model": "digits", "guard.window_s": 60}}
    assert json_diff(before, after) == [
        {"op": "replace", "path": "/state", "before": "ENABLED", "after": "DISABLED"},
        {"op": "remove", "path": "/metadata/owner", "before": "ml"},
        {"op": "add", "path": "/metadata/guard.window_s", "after": 60},
    ]


def test_diff_walks_arrays_by_index() -> None:
    """Arrays are compared index by index; extra items are adds or removes at the end."""
    assert json_diff({"s": [1, 2]}, {"s": [1, 3, 4]}) == [
        {"op": "replace", "path": "/s/1", "before": 2, "after": 3},
        {"op": "add", "path": "/s/2", "after": 4},
    ]
    assert json_diff([1, 2, 3], [1]) == [
        {"op": "remove", "path": "/1", "before": 2},
        {"op": "remove", "path": "/2", "before": 3},
    ]


def test_diff_escapes_pointer_tokens() -> None:
    """Keys with '/' or '~' are escaped as RFC 6901 says ('~1', '~0')."""
    assert json_diff({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 2}) == [
        {"op": "replace", "path": "/a~1b", "before": 1, "after": 2},
        {"op": "replace", "path": "/c~0d", "before": 1, "after": 2},
    ]


def test_diff_tells_types_apart() -> None:
    """true is not 1, and an object replacing an array (or a scalar) is one replace."""
    assert json_diff({"x": True}, {"x": 1}) == [
        {"op": "replace", "path": "/x", "before": True, "after": 1}
    ]
    assert json_diff({"x": [1]}, {"x": {"0": 1}}) == [
        {"op": "replace", "path": "/x", "before": [1], "after": {"0": 1}}
    ]
    assert json_diff(1, "1") == [{"op": "replace", "path": "", "before": 1, "after": "1"}]


def test_diff_of_a_rollout() -> None:
    """A rollout to version 4 at 25 % shows exactly the serve version and the two weights."""
    before = demo_flag()
    assert json_diff(before, set_rollout(before, "4", 25)) == [
        {"op": "replace", "path": "/variants/candidate/serve", "before": "2", "after": "4"},
        {"op": "replace", "path": "/targeting/if/2/fractional/0/1", "before": 90, "after": 75},
        {"op": "replace", "path": "/targeting/if/2/fractional/1/1", "before": 10, "after": 25},
    ]


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _patch(document: Any, changes: list[dict[str, Any]]) -> Any:
    """Apply a diff (replaces, then removes from the back, then adds) to a copy."""
    document = copy.deepcopy(document)
    root = {"": document}

    def parent(path: str) -> tuple[Any, Any]:
        tokens = [""] + [_unescape(t) for t in path.split("/")[1:]]
        node: Any = root
        for token in tokens[:-1]:
            node = node[int(token) if isinstance(node, list) else token]
        last = tokens[-1]
        return node, int(last) if isinstance(node, list) else last

    for change in changes:
        if change["op"] == "replace":
            node, key = parent(change["path"])
            node[key] = change["after"]
    for change in reversed([c for c in changes if c["op"] == "remove"]):
        node, key = parent(change["path"])
        del node[key]
    for change in changes:
        if change["op"] == "add":
            node, key = parent(change["path"])
            if isinstance(node, list):
                node.insert(key, change["after"])
            else:
                node[key] = change["after"]
    return root[""]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab/~", max_size=2),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("ab/~", max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, derandomize=True)
@given(before=JSON, after=JSON)
def test_applying_the_diff_to_before_gives_after(before: Any, after: Any) -> None:
    """The diff is complete: patching `before` with it reproduces `after`."""
    assert _patch(before, json_diff(before, after)) == after
