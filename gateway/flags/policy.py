"""A release's policy: every setting its flag's metadata holds, parsed once into a typed object.

The metadata of a release flag (flagd metadata: strings, numbers, booleans) carries the
release's roles (`model`, `baseline`, `candidate`), `fallback`, the guard's policy
(`guard.*`), its shadows' settings (`shadow.*`), a staged ramp in progress (`ramp.*`), its
named cohorts (`cohort.<name>`), and free text (`description`, `owner`). `parse_policy` reads
all of it into a `ReleasePolicy`, and every way into a release calls it (admin operations,
whole-flag PUT, flag files, `gateway flags validate`, through `validate_flag`): a key nothing
reads, or a value its setting does not allow, is refused with InvalidPolicy naming the key,
the value and what is allowed, so a typo can never silently fall back to a default.

A policy already stored that no longer parses (written by another version of the gateway)
is read by `stored_policy` instead: the release keeps serving its routes, with the default
policy and `problem` saying why its automation (the guard's rollbacks and ramp steps) is off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from gateway.errors import InvalidName
from gateway.flags.document import COHORT_PREFIX, RELEASE_KEYS, MetadataValue
from gateway.flags.errors import InvalidPolicy
from gateway.guard.errors import InvalidRamp
from gateway.guard.policy import GUARD_PREFIX, GuardPolicy
from gateway.guard.ramp import RAMP_PREFIX, RampState, ramp_state
from gateway.repository.names import validate_name
from gateway.shadow.policy import PREFIX as SHADOW_PREFIX
from gateway.shadow.policy import ShadowOverrides, shadow_overrides

FREE_TEXT: Final = ("description", "owner")
FALLBACK: Final = "fallback"
PREFIXES: Final = (GUARD_PREFIX, SHADOW_PREFIX, RAMP_PREFIX, COHORT_PREFIX)
ALLOWED_KEYS: Final = (
    f"{', '.join(RELEASE_KEYS)}, {FALLBACK}, {', '.join(FREE_TEXT)}, and the settings under "
    f"{', '.join(repr(prefix) for prefix in PREFIXES)} (cohort.<name> for named cohorts)"
)


class ReleasePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a release's metadata decides, beyond its roles (see the module docstring)."""

    guard: GuardPolicy = GuardPolicy()
    shadow: ShadowOverrides = ShadowOverrides()
    ramp: RampState | None = None
    cohorts: tuple[tuple[str, Any], ...] = ()
    """(name, JsonLogic rule) of each named cohort, in metadata order."""
    problem: str = ""
    """Why the stored policy did not parse ("" when it did): the release's automation is off."""

    @property
    def fallback(self) -> bool:
        """Whether a failing candidate is answered by the baseline."""
        return self.guard.fallback

    @property
    def automated(self) -> bool:
        """Whether the guard may roll the release back and advance its ramp."""
        return not self.problem


def parse_policy(metadata: Mapping[str, MetadataValue]) -> ReleasePolicy:
    """The policy `metadata` declares; InvalidPolicy naming the first key that is unknown or
    whose value is not allowed."""
    cohorts: list[tuple[str, Any]] = []
    for key, value in metadata.items():
        if key in RELEASE_KEYS or key == FALLBACK:
            continue
        if key in FREE_TEXT:
            if not isinstance(value, str):
                raise InvalidPolicy(f"metadata {key!r} is {value!r}; it must be a string")
        elif key.startswith(COHORT_PREFIX):
            cohorts.append(_cohort(key, value))
        elif not key.startswith(PREFIXES):
            raise InvalidPolicy(
                f"metadata {key!r} is not a release setting; a release's metadata holds "
                f"{ALLOWED_KEYS}"
            )
    try:
        ramp = ramp_state({"metadata": metadata})
    except InvalidRamp as exc:
        raise InvalidPolicy(str(exc)) from None
    return ReleasePolicy(
        guard=GuardPolicy.from_metadata(metadata),
        shadow=shadow_overrides(metadata),
        ramp=ramp,
        cohorts=tuple(cohorts),
    )


def stored_policy(metadata: Mapping[str, MetadataValue]) -> ReleasePolicy:
    """`parse_policy`, or, for a stored policy that no longer parses, the defaults with its
    automation off and the reason in `problem`."""
    try:
        return parse_policy(metadata)
    except InvalidPolicy as exc:
        return ReleasePolicy(problem=str(exc))


def _cohort(key: str, value: MetadataValue) -> tuple[str, Any]:
    name = key.removeprefix(COHORT_PREFIX)
    try:
        validate_name("cohort", name)
    except InvalidName as exc:
        raise InvalidPolicy(f"metadata {key!r}: {exc}") from None
    try:
        rule = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        rule = None
    if not isinstance(rule, dict):
        raise InvalidPolicy(
            f"metadata {key!r} is {value!r}; it must hold the cohort's JsonLogic rule as a "
            "JSON string"
        )
    return name, rule
