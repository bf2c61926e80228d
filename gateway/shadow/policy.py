"""How a release's shadows run: defaults from settings, overridden by the flag's metadata.

A release flag keeps its shadow settings as flagd metadata (strings, numbers, booleans), so
the flag stays a valid flagd document:

    "metadata": {"model": "digits", ..., "shadow.timeoutMs": 250,
                 "shadow.keepInputs": true, "shadow.maxInputBytes": 16384}

The sample percentage is not here: each shadow target in a route carries its own `percent`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec

from gateway.flags.errors import InvalidPolicy

PREFIX = "shadow."
META_TIMEOUT_MS = "shadow.timeoutMs"
META_KEEP_INPUTS = "shadow.keepInputs"
META_MAX_INPUT_BYTES = "shadow.maxInputBytes"
SHADOW_KEYS = (META_TIMEOUT_MS, META_KEEP_INPUTS, META_MAX_INPUT_BYTES)

MAX_TIMEOUT_MS = 600_000.0
MAX_INPUT_BYTES = 1024 * 1024


class ShadowPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One release's shadow settings."""

    timeout_s: float = 0.5
    """Each shadow version's run ends as a timeout after this long, queued or running (a
    running call goes on; its answer is discarded)."""
    keep_inputs: bool = False
    """Whether comparison records keep the request's input tensors."""
    max_input_bytes: int = 16 * 1024
    """Inputs larger than this (in tensor bytes) are not kept, even when keep_inputs is on."""


class ShadowConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Process-wide shadow settings (from `Settings.shadow`)."""

    defaults: ShadowPolicy = ShadowPolicy()
    """A release's policy where its metadata says nothing."""
    max_output_values: int = 1024
    """Output elements a record keeps per side; beyond them only shapes and top classes."""
    keep_agreeing_outputs: bool = False
    """Whether agreeing comparisons keep both output tensors too; by default they keep their
    summary (top classes, largest difference) and only disagreements, errors and primary
    failures keep the tensors."""
    max_primaries_in_flight: int = 16
    """Primary requests in flight in the worker above which no shadow run starts (0: no
    limit): shadows use spare capacity only, and a worker with this many primaries has none."""
    buffer_records: int = 10_000
    """Records waiting in memory for the store; more are dropped and counted."""
    flush_interval_s: float = 1.0
    """How often buffered records are written to the store, in one batch."""
    retention_s: float = 7 * 86400.0
    """Records older than this are deleted."""
    max_records: int = 100_000
    """At most this many records are kept (the oldest go first)."""
    prune_interval_s: float = 60.0
    drop_log_interval_s: float = 10.0
    """How often dropped shadow work is logged (as one line with the counts)."""


class ShadowOverrides(msgspec.Struct, frozen=True, kw_only=True):
    """What a release's `shadow.*` metadata sets (None: the gateway's default)."""

    timeout_s: float | None = None
    keep_inputs: bool | None = None
    max_input_bytes: int | None = None

    def resolve(self, defaults: ShadowPolicy) -> ShadowPolicy:
        return ShadowPolicy(
            timeout_s=defaults.timeout_s if self.timeout_s is None else self.timeout_s,
            keep_inputs=defaults.keep_inputs if self.keep_inputs is None else self.keep_inputs,
            max_input_bytes=defaults.max_input_bytes
            if self.max_input_bytes is None
            else self.max_input_bytes,
        )


_ALLOWED = {
    META_TIMEOUT_MS: f"a number of milliseconds above 0 up to {MAX_TIMEOUT_MS:.0f}",
    META_KEEP_INPUTS: "true or false",
    META_MAX_INPUT_BYTES: f"a whole number of bytes from 0 to {MAX_INPUT_BYTES}",
}


def shadow_overrides(metadata: Mapping[str, object]) -> ShadowOverrides:
    """The `shadow.*` entries of a flag's metadata; InvalidPolicy naming the first key that
    is unknown or whose value is not allowed."""
    values: dict[str, object] = {}
    for key, value in metadata.items():
        if not key.startswith(PREFIX):
            continue
        if key not in _ALLOWED:
            raise InvalidPolicy(
                f"metadata {key!r} is not a shadow setting; the shadow settings are "
                + ", ".join(repr(k) for k in _ALLOWED)
            )
        parsed: object
        if key == META_TIMEOUT_MS:
            parsed = _timeout_s(value)
            field = "timeout_s"
        elif key == META_KEEP_INPUTS:
            parsed = value if isinstance(value, bool) else None
            field = "keep_inputs"
        else:
            parsed = _input_bytes(value)
            field = "max_input_bytes"
        if parsed is None:
            raise InvalidPolicy(f"metadata {key!r} is {value!r}; it must be {_ALLOWED[key]}")
        values[field] = parsed
    return ShadowOverrides(**values)  # type: ignore[arg-type]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _integer(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _timeout_s(value: object) -> float | None:
    millis = _number(value)
    return millis / 1000.0 if millis is not None and 0 < millis <= MAX_TIMEOUT_MS else None


def _input_bytes(value: object) -> int | None:
    size = _integer(value)
    return size if size is not None and 0 <= size <= MAX_INPUT_BYTES else None
