"""Where the Redis store keeps what: every key name, under one prefix, grouped by hash tag.

Redis Cluster runs a script or a transaction only on keys of one slot, and a hash tag (the
part of a key between `{` and `}`) decides the slot. So each group of keys that one script or
transaction touches together shares a tag: the release state (flags, versions, the change
counter, the audit log, the epoch), the shadow comparison records, and each model's
predictions and each model's guard windows. Groups of different tags spread over the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot name keys (None when it can)."""
    if not prefix:
        return "must not be empty"
    if any(char in prefix for char in "{}") or any(char.isspace() for char in prefix):
        return f"{prefix!r} must not hold braces (they are Redis Cluster hash tags) or spaces"
    return None


@dataclass(frozen=True)
class Keys:
    """The key names of one gateway (one prefix)."""

    prefix: str

    def __post_init__(self) -> None:
        problem = prefix_problem(self.prefix)
        if problem is not None:
            raise ValueError(f"redis prefix {problem}")

    # -- release state: one tag, because put_flag writes all of it in one script ----------

    def _release(self, name: str) -> str:
        return f"{{{self.prefix}:release}}:{name}"

    @property
    def flags(self) -> str:
        return self._release("flags")

    @property
    def versions(self) -> str:
        return self._release("versions")

    @property
    def changes(self) -> str:
        return self._release("changes")

    @property
    def epoch(self) -> str:
        return self._release("epoch")

    @property
    def audit_next(self) -> str:
        return self._release("audit:next")

    @property
    def audit_entries(self) -> str:
        return self._release("audit:entries")

    @property
    def audit_all(self) -> str:
        return self._release("audit:all")

    def audit_model(self, model: str) -> str:
        return self._release(f"audit:model:{model}")

    @property
    def channel(self) -> str:
        """The pub/sub channel of flag writes (channels are not slotted: no tag needed)."""
        return f"{self.prefix}:flag-changes"

    # -- shadow comparison records ----------------------------------------------------------

    def _shadow(self, name: str) -> str:
        return f"{{{self.prefix}:shadow}}:{name}"

    @property
    def shadow_next(self) -> str:
        return self._shadow("next")

    @property
    def shadow_records(self) -> str:
        return self._shadow("records")

    @property
    def shadow_written(self) -> str:
        return self._shadow("written")

    @property
    def shadow_models(self) -> str:
        return self._shadow("models")

    def shadow_at(self, model: str) -> str:
        return self._shadow(f"at:{model}")

    # -- predictions waiting for feedback, per model ------------------------------------------

    def predictions(self, model: str) -> list[str]:
        """data, expires, order, next, claimed, shadows: the keys the prediction scripts take."""
        tag = f"{{{self.prefix}:feedback:{model}}}"
        return [f"{tag}:{name}" for name in PREDICTION_KEYS]

    # -- guard windows ------------------------------------------------------------------------

    def window(self, model: str, flag_version: int) -> str:
        return f"{{{self.prefix}:guard:{model}}}:window:{flag_version}"


PREDICTION_KEYS = ("data", "expires", "order", "next", "claimed", "shadows")


def raw(value: bytes | str) -> bytes:
    """A reply as bytes (the client answers bytes; redis-py's types allow str too)."""
    return value if isinstance(value, bytes) else value.encode()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest.partition("/")[0]:
        rest = "***@" + rest.partition("@")[2]
    return f"{scheme}{sep}{rest}"
