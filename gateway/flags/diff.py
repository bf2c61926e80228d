"""A structural diff of two JSON values, as JSON-pointer paths (for the audit log)."""

from __future__ import annotations

from typing import Any


def pointer_token(token: str | int) -> str:
    """One JSON-pointer reference token (RFC 6901: '~' -> '~0', '/' -> '~1')."""
    return str(token).replace("~", "~0").replace("/", "~1")


def json_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """What changed from `before` to `after`, one entry per changed leaf or subtree:
    `{"op": "add", "path", "after"}`, `{"op": "remove", "path", "before"}` or
    `{"op": "replace", "path", "before", "after"}`. Objects are compared key by key, arrays
    index by index; the path "" is the whole value. Empty when they are equal."""
    changes: list[dict[str, Any]] = []
    _diff(before, after, "", changes)
    return changes


def _diff(before: Any, after: Any, path: str, changes: list[dict[str, Any]]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            here = f"{path}/{pointer_token(key)}"
            if key in after:
                _diff(value, after[key], here, changes)
            else:
                changes.append({"op": "remove", "path": here, "before": value})
        for key, value in after.items():
            if key not in before:
                changes.append(
                    {"op": "add", "path": f"{path}/{pointer_token(key)}", "after": value}
                )
    elif isinstance(before, list) and isinstance(after, list):
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            _diff(old, new, f"{path}/{index}", changes)
        for index in range(len(after), len(before)):
            changes.append({"op": "remove", "path": f"{path}/{index}", "before": before[index]})
        for index in range(len(before), len(after)):
            changes.append({"op": "add", "path": f"{path}/{index}", "after": after[index]})
    elif not _same(before, after):
        changes.append({"op": "replace", "path": path, "before": before, "after": after})


def _same(before: Any, after: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1, and an object is not an array."""
    if isinstance(before, bool) or isinstance(after, bool):
        return before is after
    if isinstance(before, dict | list) or isinstance(after, dict | list):
        return False  # containers of different kinds (same kinds were compared above)
    return bool(before == after)
