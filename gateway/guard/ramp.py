"""Staged ramps, kept in the release flag's own metadata so they survive restarts, are audited
with every step, and leave the flag a valid flagd document:

| key | value |
| --- | --- |
| `ramp.version` | the candidate version being ramped |
| `ramp.steps` | the candidate's percentages, e.g. "1,5,25,50,100" (the last is always 100) |
| `ramp.step` | index of the current step in `ramp.steps` |
| `ramp.bakeS` | seconds each step bakes before it may advance |
| `ramp.stepStartedAt` | when the current step started (or resumed), epoch seconds |
| `ramp.state` | "running" or "paused" |

Every operation is a pure function from a flag to a new flag (as in `gateway.flags.operations`,
which they build on); the caller validates and writes the result. Each step serves its
percentage; reaching the last step (100) promotes the candidate to baseline and ends the ramp.
Resuming restarts the current step's bake.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, Final, Literal

import msgspec

from gateway.flags import operations
from gateway.guard.decision import Decision, DecisionKind
from gateway.guard.errors import InvalidRamp, RampInProgress, RampNotFound, RampStateConflict

Flag = dict[str, Any]
RampStatus = Literal["running", "paused"]

RAMP_PREFIX: Final = "ramp."
KEY_VERSION: Final = "ramp.version"
KEY_STEPS: Final = "ramp.steps"
KEY_STEP: Final = "ramp.step"
KEY_BAKE: Final = "ramp.bakeS"
KEY_STARTED: Final = "ramp.stepStartedAt"
KEY_STATE: Final = "ramp.state"
RAMP_KEYS: Final = (KEY_VERSION, KEY_STEPS, KEY_STEP, KEY_BAKE, KEY_STARTED, KEY_STATE)


class RampState(msgspec.Struct, frozen=True, kw_only=True):
    """Where a ramp stands, as its flag's metadata says."""

    version: str
    steps: tuple[int, ...]
    step: int
    bake_s: float
    step_started_at: float
    state: RampStatus

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    @property
    def next_percent(self) -> int:
        """The candidate's share after the next advance (100: the next advance promotes)."""
        return self.steps[self.step + 1]

    @property
    def running(self) -> bool:
        return self.state == "running"

    def baked(self, now: float) -> bool:
        return now - self.step_started_at >= self.bake_s

    def bake_left_s(self, now: float) -> float:
        return max(0.0, self.bake_s - (now - self.step_started_at))

    def describe(self, now: float) -> dict[str, Any]:
        """What the release's status shows about its ramp."""
        return {
            "version": self.version,
            "state": self.state,
            "steps": list(self.steps),
            "step": self.step,
            "percent": self.percent,
            "next_percent": self.next_percent,
            "promotes_next": self.step + 2 == len(self.steps),
            "bake_s": self.bake_s,
            "step_started_at": self.step_started_at,
            "bake_left_s": self.bake_left_s(now),
        }


class RampAction(enum.StrEnum):
    ADVANCE = "advance"
    WAIT = "wait"
    ROLLBACK = "rollback"


def next_action(ramp: RampState | None, decision: Decision, now: float) -> RampAction:
    """What to do about a release: roll back on a breach (ramp or not, paused or not);
    advance a running ramp whose step is ready and baked; otherwise wait."""
    if decision.kind is DecisionKind.BREACH:
        return RampAction.ROLLBACK
    if (
        ramp is not None
        and ramp.running
        and decision.kind is DecisionKind.READY_TO_ADVANCE
        and ramp.baked(now)
    ):
        return RampAction.ADVANCE
    return RampAction.WAIT


# -- steps -------------------------------------------------------------------------------------


def parse_steps(text: str) -> tuple[int, ...]:
    """ "1,5,25,50,100" -> (1, 5, 25, 50, 100), checked as `check_steps` does."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidRamp(
            f"ramp steps must be percentages separated by commas, like 1,5,25,50,100; not {text!r}"
        ) from None
    return check_steps(steps)


def check_steps(steps: Sequence[int]) -> tuple[int, ...]:
    """Integer percentages, increasing, from 1 to 100, ending at 100 (the promotion)."""
    checked = tuple(steps)
    if (
        len(checked) < 2
        or any(isinstance(s, bool) or not isinstance(s, int) for s in checked)
        or any(not 1 <= s <= 100 for s in checked)
        or any(a >= b for a, b in pairwise(checked))
        or checked[-1] != 100
    ):
        raise InvalidRamp(
            f"ramp steps must be at least two increasing integer percentages from 1 to 100, "
            f"ending at 100 (the promotion), like 1,5,25,50,100; not {list(checked)}"
        )
    return checked


# -- reading -----------------------------------------------------------------------------------


def ramp_state(flag: Mapping[str, Any]) -> RampState | None:
    """The flag's ramp, None when it has none; InvalidRamp naming the key that is wrong."""
    metadata: Mapping[str, Any] = flag.get("metadata") or {}
    present = [key for key in metadata if key.startswith(RAMP_PREFIX)]
    if not present:
        return None
    for key in present:
        if key not in RAMP_KEYS:
            raise InvalidRamp(f"metadata {key!r} is not a ramp setting; a ramp has {RAMP_KEYS}")
    missing = [key for key in RAMP_KEYS if key not in metadata]
    if missing:
        raise InvalidRamp(f"the ramp's metadata lacks {', '.join(map(repr, missing))}")
    version, state = metadata[KEY_VERSION], metadata[KEY_STATE]
    if not isinstance(version, str) or not version:
        raise InvalidRamp(f"metadata {KEY_VERSION!r} must name a version")
    if state not in ("running", "paused"):
        raise InvalidRamp(f"metadata {KEY_STATE!r} must be 'running' or 'paused', not {state!r}")
    steps_text = metadata[KEY_STEPS]
    if not isinstance(steps_text, str):
        raise InvalidRamp(f"metadata {KEY_STEPS!r} must be a string like '1,5,25,50,100'")
    steps = parse_steps(steps_text)
    step = metadata[KEY_STEP]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(steps) - 1:
        raise InvalidRamp(
            f"metadata {KEY_STEP!r} must be an index into the steps before the last "
            f"(0 to {len(steps) - 2}), not {step!r}"
        )
    return RampState(
        version=version,
        steps=steps,
        step=step,
        bake_s=_seconds(metadata, KEY_BAKE),
        step_started_at=_seconds(metadata, KEY_STARTED),
        state=state,
    )


def _seconds(metadata: Mapping[str, Any], key: str) -> float:
    value = metadata[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidRamp(f"metadata {key!r} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _require(flag: Mapping[str, Any]) -> RampState:
    state = ramp_state(flag)
    if state is None:
        raise RampNotFound("the release has no ramp in progress")
    return state


# -- edits -------------------------------------------------------------------------------------


def start_ramp(
    flag: Mapping[str, Any], version: str, steps: Sequence[int], bake_s: float, now: float
) -> Flag:
    """The candidate serves `version` to steps[0] % of the traffic, and the ramp begins."""
    checked = check_steps(steps)
    if isinstance(bake_s, bool) or not isinstance(bake_s, int | float) or not bake_s >= 0:
        raise InvalidRamp(f"the bake time must be a number of seconds >= 0, not {bake_s!r}")
    if ramp_state(flag) is not None:
        raise RampInProgress("a ramp is already in progress; abort it before starting another")
    new = operations.set_rollout(flag, version, checked[0])
    new.setdefault("metadata", {}).update(
        {
            KEY_VERSION: version,
            KEY_STEPS: ",".join(map(str, checked)),
            KEY_STEP: 0,
            KEY_BAKE: float(bake_s),
            KEY_STARTED: float(now),
            KEY_STATE: "running",
        }
    )
    return new


def advance(flag: Mapping[str, Any], now: float) -> Flag:
    """The next step; from the step before the last, promotion (and the ramp ends)."""
    state = _require(flag)
    if not state.running:
        raise RampStateConflict("the ramp is paused; resume it before it can advance")
    serving = operations.describe_release(flag)["candidate"]["version"]
    if serving != state.version:
        raise InvalidRamp(
            f"the candidate serves version {serving!r}, not the ramped {state.version!r}; "
            "abort the ramp"
        )
    if state.step + 2 == len(state.steps):
        return clear_ramp(operations.promote(flag))
    new = operations.set_rollout(flag, state.version, state.steps[state.step + 1])
    new["metadata"].update({KEY_STEP: state.step + 1, KEY_STARTED: float(now)})
    return new


def pause(flag: Mapping[str, Any]) -> Flag:
    """Hold the current step: the split stays, the ramp does not advance (the guard still
    rolls back on a breach)."""
    state = _require(flag)
    if not state.running:
        raise RampStateConflict("the ramp is already paused")
    return _with_metadata(flag, {KEY_STATE: "paused"})


def resume(flag: Mapping[str, Any], now: float) -> Flag:
    """Run a paused ramp again; the current step bakes anew from `now`."""
    state = _require(flag)
    if state.running:
        raise RampStateConflict("the ramp is not paused")
    return _with_metadata(flag, {KEY_STATE: "running", KEY_STARTED: float(now)})


def abort(flag: Mapping[str, Any]) -> Flag:
    """End the ramp and send all traffic to the baseline."""
    _require(flag)
    return rollback_release(flag)


def rollback_release(flag: Mapping[str, Any]) -> Flag:
    """`operations.rollback` that also ends any ramp: the guard's one atomic rollback edit."""
    return clear_ramp(operations.rollback(flag))


def clear_ramp(flag: Mapping[str, Any]) -> Flag:
    """The flag without its ramp metadata (a copy)."""
    new = _with_metadata(flag, {})
    for key in [key for key in new["metadata"] if key.startswith(RAMP_PREFIX)]:
        del new["metadata"][key]
    return new


def _with_metadata(flag: Mapping[str, Any], changes: Mapping[str, Any]) -> Flag:
    new = copy.deepcopy(dict(flag))
    new.setdefault("metadata", {}).update(changes)
    return new
