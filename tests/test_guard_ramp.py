"""Staged ramps as flag edits: each step is a valid flagd flag that carries the ramp's state,
so the ramp survives a restart and every step is audited like any other change."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from gateway.flags.errors import InvalidOperation
from gateway.flags.operations import describe_release
from gateway.flags.validation import validate_flag
from gateway.guard.decision import Decision, DecisionKind
from gateway.guard.errors import InvalidRamp, RampInProgress, RampNotFound
from gateway.guard.ramp import (
    RampAction,
    RampState,
    abort,
    advance,
    check_steps,
    clear_ramp,
    next_action,
    parse_steps,
    pause,
    ramp_state,
    resume,
    rollback_release,
    start_ramp,
)
from tests.flags_support import DEMO_KEY, KNOWN, as_document, demo_flag, schema_errors

STEPS = (1, 5, 25, 50, 100)
T0 = 1_767_000_000.0


def checked(flag: dict[str, Any]) -> dict[str, Any]:
    """`flag` after asserting it validates, passes the flagd schema, and survives a JSON round
    trip with its ramp state intact (what a restart reads back from the store)."""
    validate_flag(DEMO_KEY, flag, KNOWN)
    assert schema_errors(as_document(DEMO_KEY, flag)) == []
    reread = json.loads(json.dumps(flag))
    assert reread == flag
    assert ramp_state(reread) == ramp_state(flag)
    return flag


def split(flag: dict[str, Any]) -> dict[str, float]:
    result: dict[str, float] = describe_release(flag)["split"]
    return result


def started() -> dict[str, Any]:
    return checked(start_ramp(demo_flag(), "2", STEPS, 60, T0))


def test_starting_a_ramp_serves_the_first_step_and_records_the_ramp() -> None:
    """The candidate serves the ramped version to the first step's share; the ramp's steps,
    step, bake time, start and state are in the flag's metadata. The input is untouched."""
    flag = demo_flag()
    before = copy.deepcopy(flag)
    ramped = checked(start_ramp(flag, "2", STEPS, 60, T0))
    assert flag == before
    assert split(ramped) == {"baseline": 99.0, "candidate": 1.0}
    assert ramped["metadata"]["ramp.steps"] == "1,5,25,50,100"
    state = ramp_state(ramped)
    assert state == RampState(
        version="2", steps=STEPS, step=0, bake_s=60.0, step_started_at=T0, state="running"
    )
    assert state.percent == 1
    assert state.next_percent == 5
    assert state.describe(T0 + 15)["bake_left_s"] == 45.0


def test_each_advance_takes_the_next_step_and_the_last_promotes() -> None:
    """Advancing walks 1 -> 5 -> 25 -> 50 %, each step restarting the bake; the advance from
    the step before 100 promotes the candidate to baseline and ends the ramp."""
    flag = started()
    for step, percent in enumerate(STEPS[1:-1], start=1):
        flag = checked(advance(flag, T0 + 100 * step))
        state = ramp_state(flag)
        assert state is not None
        assert (state.step, state.percent, state.step_started_at) == (
            step,
            percent,
            T0 + 100 * step,
        )
        assert split(flag)["candidate"] == percent
    promoted = checked(advance(flag, T0 + 1_000))
    assert ramp_state(promoted) is None
    described = describe_release(promoted)
    assert described["baseline"]["version"] == "2"
    assert split(promoted) == {"baseline": 100.0, "candidate": 0.0}


def test_a_ramp_continues_where_it_was_after_a_restart() -> None:
    """A flag read back from its stored JSON resumes the ramp at the same step with the same
    bake clock, and the next advance goes on from there."""
    flag = checked(advance(started(), T0 + 60))
    stored = json.dumps({"flags": {DEMO_KEY: flag}})
    reread = json.loads(stored)["flags"][DEMO_KEY]
    state = ramp_state(reread)
    assert state is not None
    assert (state.step, state.percent, state.step_started_at) == (1, 5, T0 + 60)
    assert ramp_state(checked(advance(reread, T0 + 120))) is not None
    assert split(advance(reread, T0 + 120))["candidate"] == 25


def test_pause_holds_the_step_and_resume_restarts_its_bake() -> None:
    """A paused ramp keeps its split and refuses to advance; resuming runs it again with the
    current step baking anew from the resume time."""
    flag = started()
    paused = checked(pause(flag))
    assert split(paused) == split(flag)
    state = ramp_state(paused)
    assert state is not None
    assert not state.running
    with pytest.raises(InvalidRamp, match="paused"):
        advance(paused, T0 + 600)
    with pytest.raises(InvalidRamp, match="already paused"):
        pause(paused)
    resumed = checked(resume(paused, T0 + 500))
    state = ramp_state(resumed)
    assert state is not None
    assert (state.state, state.step_started_at) == ("running", T0 + 500)
    with pytest.raises(InvalidRamp, match="not paused"):
        resume(resumed, T0 + 501)


def test_abort_rolls_back_and_ends_the_ramp() -> None:
    """Aborting sends all traffic to the baseline (cohorts removed) and clears the ramp; the
    guard's rollback edit does the same with or without a ramp."""
    flag = checked(advance(started(), T0 + 60))
    aborted = checked(abort(flag))
    assert ramp_state(aborted) is None
    assert split(aborted) == {"baseline": 100.0, "candidate": 0.0}
    assert describe_release(aborted)["cohorts"] == []
    assert checked(rollback_release(flag)) == aborted
    assert checked(rollback_release(demo_flag()))["defaultVariant"] == "baseline"
    with pytest.raises(RampNotFound):
        abort(demo_flag())


def test_operations_without_a_ramp_or_on_a_running_one_are_refused() -> None:
    """Advance, pause and resume need a ramp; a second ramp needs the first aborted; a ramp
    to the baseline's own version is refused by the rollout it starts with."""
    for operation in (lambda f: advance(f, T0), pause, lambda f: resume(f, T0)):
        with pytest.raises(RampNotFound):
            operation(demo_flag())
    with pytest.raises(RampInProgress):
        start_ramp(started(), "3", STEPS, 60, T0)
    with pytest.raises(InvalidOperation, match="baseline serves"):
        start_ramp(demo_flag(), "1", STEPS, 60, T0)


@pytest.mark.parametrize(
    "steps",
    [[100], [1, 5, 50], [5, 1, 100], [1, 1, 100], [0, 50, 100], [1, 50, 101], [1, 2.5, 100]],
)
def test_bad_steps_are_refused(steps: list[Any]) -> None:
    """Steps are at least two increasing integer percentages from 1, ending at 100."""
    with pytest.raises(InvalidRamp, match="ending at 100"):
        check_steps(steps)


def test_steps_parse_from_the_cli_form_and_the_bake_must_be_a_duration() -> None:
    """'1,5,25,50,100' is the CLI's form of the steps; text that is not numbers, and a
    negative bake time, are refused."""
    assert parse_steps("1, 5,25,50,100") == STEPS
    with pytest.raises(InvalidRamp, match="separated by commas"):
        parse_steps("1;5;100")
    with pytest.raises(InvalidRamp, match="bake time"):
        start_ramp(demo_flag(), "2", STEPS, -1, T0)


def test_ramp_metadata_that_is_not_a_ramp_is_refused_naming_the_key() -> None:
    """Hand-edited ramp metadata with a missing, unknown or malformed key is reported."""
    flag = started()
    cases = [
        ("ramp.step", 4, "'ramp.step'"),
        ("ramp.state", "stopped", "'ramp.state'"),
        ("ramp.bakeS", "60s", "'ramp.bakeS'"),
        ("ramp.speed", 2, "'ramp.speed'"),
    ]
    for key, value, named in cases:
        broken = copy.deepcopy(flag)
        broken["metadata"][key] = value
        with pytest.raises(InvalidRamp, match=re.escape(named)):
            ramp_state(broken)
    partial = copy.deepcopy(flag)
    del partial["metadata"]["ramp.version"]
    with pytest.raises(InvalidRamp, match=r"lacks 'ramp\.version'"):
        ramp_state(partial)
    assert ramp_state(clear_ramp(flag)) is None


def test_advance_refuses_when_the_candidate_changed_under_the_ramp() -> None:
    """If someone rolled the candidate out to another version mid-ramp, the ramp does not
    advance that other version."""
    flag = started()
    flag["variants"]["candidate"]["serve"] = "3"
    with pytest.raises(InvalidRamp, match="abort the ramp"):
        advance(flag, T0 + 600)


def decision(kind: DecisionKind) -> Decision:
    return Decision(kind, "", {})


def test_next_action_rolls_back_on_a_breach_and_advances_only_baked_ready_steps() -> None:
    """Breach -> roll back (with or without a ramp, paused or not); ready and baked on a
    running ramp -> advance; everything else waits."""
    running = ramp_state(started())
    assert running is not None
    paused = ramp_state(pause(started()))
    ready, baked, early = decision(DecisionKind.READY_TO_ADVANCE), T0 + 60, T0 + 59
    breach = decision(DecisionKind.BREACH)
    assert next_action(running, breach, early) is RampAction.ROLLBACK
    assert next_action(paused, breach, early) is RampAction.ROLLBACK
    assert next_action(None, breach, early) is RampAction.ROLLBACK
    assert next_action(running, ready, baked) is RampAction.ADVANCE
    assert next_action(running, ready, early) is RampAction.WAIT
    assert next_action(paused, ready, baked) is RampAction.WAIT
    assert next_action(None, ready, baked) is RampAction.WAIT
    for kind in (DecisionKind.HEALTHY, DecisionKind.INSUFFICIENT_DATA):
        assert next_action(running, decision(kind), baked) is RampAction.WAIT
