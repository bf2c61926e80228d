"""How one version executes, declared in one place: its manifest's `execution` object.

Like Triton's model configuration, everything about running a version (instances, dynamic
batching, queue bounds, its deadline) is read once, at load, into a typed `ExecutionConfig`;
keys the manifest leaves out take the gateway's defaults (settings `GATEWAY_EXECUTION_*` and
`GATEWAY_INFERENCE_TIMEOUT_MS`). An unknown key or a bad value fails the version's load with
a message naming the key, the value and what is allowed; the other versions still load.

    "execution": {"instances": 1, "max_batch_size": 32, "max_queue_delay_ms": 2,
                  "timeout_ms": 1000, "max_queue": 256, "max_shadow_queue": 512}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from gateway.errors import ManifestError


class ExecutionConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One version's executor (see the module docstring for the manifest keys)."""

    instances: int = 1
    """Threads that run the version's primaries at once."""
    max_batch_size: int = 32
    """Rows one call may hold; requests queued together are run as one call up to it (1: no
    batching). A single request with more rows runs alone."""
    max_queue_delay_ms: float = 2.0
    """How long a call may wait after its first request for more to join it, while requests
    arrive together (the previous call held more than one, or more than one is queued); a
    request that arrives alone never waits (0: a call takes what is queued when an instance
    is free)."""
    timeout_ms: float = 1000.0
    """Deadline of every request from its arrival; past it the request is abandoned."""
    max_queue: int = 256
    """Primary requests waiting for an instance; more are refused at once (overloaded)."""
    max_shadow_queue: int = 512
    """Shadow runs waiting; more are dropped (0: the version never runs as a shadow)."""

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1000.0


_Check = Callable[[Any], bool]


def _integer(low: int, high: int) -> tuple[_Check, str]:
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return check, f"an integer from {low} to {high}"


def _milliseconds(low: float, high: float, *, zero: bool) -> tuple[_Check, str]:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        number = float(value)
        return (
            math.isfinite(number)
            and (low < number or (zero and number == low))
            and (number <= high)
        )

    span = "from" if zero else "above"
    return check, f"a number of milliseconds {span} {low:g} up to {high:g}"


RULES: Final[dict[str, tuple[_Check, str]]] = {
    "instances": _integer(1, 64),
    "max_batch_size": _integer(1, 4096),
    "max_queue_delay_ms": _milliseconds(0.0, 10_000.0, zero=True),
    "timeout_ms": _milliseconds(0.0, 600_000.0, zero=False),
    "max_queue": _integer(1, 1_000_000),
    "max_shadow_queue": _integer(0, 1_000_000),
}
"""What each key accepts, with the words that say so."""


def execution_problem(key: str, value: Any) -> str | None:
    """Why `value` is not allowed for `key`, or None when it is."""
    rule = RULES.get(key)
    if rule is None:
        return f"execution key {key!r} is unknown; the keys are {', '.join(RULES)}"
    check, allowed = rule
    if not check(value):
        return f"execution key {key!r} is {value!r}; it must be {allowed}"
    return None


def execution_config(
    declared: Mapping[str, Any] | None, defaults: ExecutionConfig, *, where: str
) -> ExecutionConfig:
    """`defaults` with every key `declared` sets; ManifestError naming `where` (the version)
    and the first bad key otherwise."""
    if declared is None:
        return defaults
    if not isinstance(declared, Mapping):
        raise ManifestError(
            f"{where}: 'execution' must be an object of the keys {', '.join(RULES)}"
        )
    for key, value in declared.items():
        problem = execution_problem(str(key), value)
        if problem is not None:
            raise ManifestError(f"{where}: {problem}")
    values = {key: float(v) if key.endswith("_ms") else v for key, v in declared.items()}
    return msgspec.structs.replace(defaults, **values)
