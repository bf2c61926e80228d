"""Release-manager operations: each returns a new, valid flag and leaves its input alone."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.flags.errors import CohortExists, CohortNotFound, InvalidFlag, InvalidOperation
from gateway.flags.operations import (
    add_cohort,
    describe_release,
    disable,
    enable,
    promote,
    remove_cohort,
    rollback,
    set_rollout,
    set_shadow,
)
from gateway.flags.plan import Cohort, Plan, Split, read_plan, write_plan
from gateway.flags.router import Router
from gateway.flags.validation import validate_flag
from tests.flags_support import (
    DEMO_KEY,
    KNOWN,
    as_document,
    demo_flag,
    flag_with,
    schema_errors,
)

GOLD = {"==": [{"var": "tier"}, "gold"]}
BETA = {"in": [{"var": "tier"}, ["beta", "internal"]]}


def checked(flag: dict[str, Any]) -> dict[str, Any]:
    """`flag`, after asserting it validates and passes the official flagd schema."""
    validate_flag(DEMO_KEY, flag, KNOWN)
    assert schema_errors(as_document(DEMO_KEY, flag)) == []
    return flag


def variants_of(flag: dict[str, Any], attributes: dict[str, str], keys: int = 400) -> Counter[str]:
    router = Router(KNOWN, {"digits": "1"})
    router.set_flags({DEMO_KEY: flag})
    return Counter(
        router.route("digits", f"user-{i}", attributes, cacheable=False).serve for i in range(keys)
    )


OPERATIONS = [
    ("rollout", lambda f: set_rollout(f, "4", 25)),
    ("add-cohort", lambda f: add_cohort(f, "gold", GOLD, "2")),
    ("remove-cohort", lambda f: remove_cohort(f, "beta")),
    ("shadow", lambda f: set_shadow(f, ["3", "4"], 50)),
    ("stop-shadow", lambda f: set_shadow(f, [], 0)),
    ("disable", disable),
    ("enable", enable),
    ("rollback", rollback),
    ("promote", promote),
]


@pytest.mark.parametrize("operation", [op for _, op in OPERATIONS], ids=[n for n, _ in OPERATIONS])
def test_operation_returns_a_valid_new_flag_and_leaves_the_input_alone(operation: Any) -> None:
    """Every operation's result validates (and passes the flagd schema); its input is
    unchanged, down to nested lists."""
    flag = demo_flag()
    before = copy.deepcopy(flag)
    result = checked(operation(flag))
    assert flag == before
    assert result is not flag


def test_set_rollout_gives_the_candidate_its_version_and_share() -> None:
    """set_rollout: the candidate serves the new version on that share; the cohort stays first."""
    flag = checked(set_rollout(demo_flag(), "4", 25))
    assert flag["variants"]["candidate"] == {"serve": "4"}
    assert flag["targeting"]["if"][:2] == [BETA, "candidate"]
    assert flag["targeting"]["if"][2] == {"fractional": [["baseline", 75], ["candidate", 25]]}
    assert describe_release(flag)["split"] == {"baseline": 75.0, "candidate": 25.0}
    assert variants_of(flag, {"tier": "beta"}) == Counter({"4": 400})


def test_set_rollout_adds_a_split_where_there_was_none() -> None:
    """A flag without a fractional gets one behind its cohort rules."""
    flag = flag_with(targeting={"if": [BETA, "candidate"]})
    result = checked(set_rollout(flag, "2", 10))
    assert result["targeting"] == {
        "if": [BETA, "candidate", {"fractional": [["baseline", 90], ["candidate", 10]]}]
    }
    static = flag_with(targeting={})
    del static["metadata"]["cohort.beta"]
    assert checked(set_rollout(static, "2", 100))["targeting"] == {
        "fractional": [["baseline", 0], ["candidate", 100]]
    }


def test_set_rollout_keeps_an_explicit_bucketing_expression() -> None:
    """A split bucketed on a custom expression keeps it when the weights change."""
    by_user = {"var": "user_id"}
    flag = flag_with(targeting={"fractional": [by_user, ["baseline", 50], ["candidate", 50]]})
    del flag["metadata"]["cohort.beta"]
    result = checked(set_rollout(flag, "2", 5))
    assert result["targeting"] == {"fractional": [by_user, ["baseline", 95], ["candidate", 5]]}


@pytest.mark.parametrize("percent", [-1, 101, True, 12.5, "10"])
def test_set_rollout_rejects_a_percent_out_of_range(percent: Any) -> None:
    """The rollout percent is an integer from 0 to 100."""
    with pytest.raises(InvalidOperation, match="percent must be an integer from 0 to 100"):
        set_rollout(demo_flag(), "2", percent)


def test_set_rollout_rejects_the_baselines_own_version() -> None:
    """Rolling out the version the baseline already serves is refused."""
    with pytest.raises(InvalidOperation, match="version '1' is what the baseline serves"):
        set_rollout(demo_flag(), "1", 10)


def test_rollout_to_an_unknown_version_is_rejected() -> None:
    """A rollout to a version the repository lacks fails validation, and a router given it
    keeps its flags."""
    flag = set_rollout(demo_flag(), "9", 10)
    with pytest.raises(InvalidFlag, match="serves version '9', which model 'digits' does not have"):
        validate_flag(DEMO_KEY, flag, KNOWN)
    router = Router(KNOWN, {"digits": "1"})
    router.set_flags({DEMO_KEY: demo_flag()})
    with pytest.raises(InvalidFlag):
        router.set_flags({DEMO_KEY: flag})
    assert router.releases["digits"].candidate_route.serve == "2"


def test_add_cohort_routes_matching_requests_to_the_variant_of_that_version() -> None:
    """A named cohort sends its matching requests to the variant serving its version and is
    recorded as metadata cohort.<name>."""
    flag = checked(add_cohort(set_rollout(demo_flag(), "2", 0), "gold", GOLD, "2"))
    assert flag["metadata"]["cohort.gold"] == '{"==":[{"var":"tier"},"gold"]}'
    assert variants_of(flag, {"tier": "gold"}) == Counter({"2": 400})
    assert variants_of(flag, {"tier": "silver"}) == Counter({"1": 400})
    names = [cohort["name"] for cohort in describe_release(flag)["cohorts"]]
    assert names == ["beta", "gold"]


def test_add_cohort_to_the_baselines_version() -> None:
    """A cohort can pin its users to the baseline's version too."""
    flag = checked(add_cohort(set_rollout(demo_flag(), "2", 100), "stay", GOLD, "1"))
    assert variants_of(flag, {"tier": "gold"}) == Counter({"1": 400})


def test_add_cohort_rejects_duplicates_and_unserved_versions() -> None:
    """A cohort name or rule already used, a version no variant serves, a bad name or a
    rule that is not an operation are refused."""
    flag = demo_flag()
    with pytest.raises(CohortExists, match="named 'beta'"):
        add_cohort(flag, "beta", GOLD, "2")
    with pytest.raises(CohortExists, match="with that rule"):
        add_cohort(flag, "beta2", BETA, "2")
    with pytest.raises(InvalidOperation, match="no variant serves version '4'"):
        add_cohort(flag, "gold", GOLD, "4")
    with pytest.raises(InvalidOperation, match="invalid cohort name"):
        add_cohort(flag, "../x", GOLD, "2")
    with pytest.raises(InvalidOperation, match="a cohort rule is a JsonLogic operation"):
        add_cohort(flag, "gold", ["tier"], "2")


def test_remove_cohort_drops_its_rule_and_name() -> None:
    """After removing the beta cohort, beta users follow the percentage split like anyone."""
    flag = checked(remove_cohort(demo_flag(), "beta"))
    assert "cohort.beta" not in flag["metadata"]
    assert flag["targeting"] == {"fractional": [["baseline", 90], ["candidate", 10]]}
    assert variants_of(flag, {"tier": "beta"})["1"] > 300


def test_remove_cohort_keeps_the_others() -> None:
    """Removing one of two cohorts keeps the other in place."""
    flag = add_cohort(demo_flag(), "gold", GOLD, "2")
    result = checked(remove_cohort(flag, "beta"))
    assert [c["name"] for c in describe_release(result)["cohorts"]] == ["gold"]


def test_remove_an_absent_cohort_is_an_error() -> None:
    """Removing a cohort the release does not have raises CohortNotFound."""
    with pytest.raises(CohortNotFound, match="no cohort named 'gold'"):
        remove_cohort(demo_flag(), "gold")


def test_set_shadow_sets_and_stops_the_baselines_shadows() -> None:
    """set_shadow replaces the baseline's shadow list; an empty list removes it."""
    flag = checked(set_shadow(demo_flag(), ["3", "4"], 100))
    assert flag["variants"]["baseline"]["shadow"] == [
        {"version": "3", "percent": 100},
        {"version": "4", "percent": 100},
    ]
    assert checked(set_shadow(flag, [], 0))["variants"]["baseline"] == {"serve": "1"}
    with pytest.raises(InvalidOperation, match="percent must be a number from 0 to 100"):
        set_shadow(flag, ["3"], 150)
    with pytest.raises(InvalidFlag, match="shadows version '8'"):
        validate_flag(DEMO_KEY, set_shadow(flag, ["8"], 5), KNOWN)


def test_disable_and_enable_switch_the_state() -> None:
    """disable sets state DISABLED (the kill switch); enable sets it back."""
    disabled = checked(disable(demo_flag()))
    assert disabled["state"] == "DISABLED"
    assert variants_of(disabled, {"tier": "beta"}) == Counter({"1": 400})
    assert checked(enable(disabled)) == demo_flag()


def test_rollback_sends_all_traffic_to_the_baseline() -> None:
    """rollback: cohorts gone, candidate at 0 %, baseline the default, other metadata kept."""
    flag = demo_flag()
    flag["metadata"]["guard.maxErrorRate"] = 0.05
    flag["defaultVariant"] = "candidate"
    result = checked(rollback(set_rollout(flag, "4", 50)))
    assert result["targeting"] == {"fractional": [["baseline", 100], ["candidate", 0]]}
    assert result["defaultVariant"] == "baseline"
    assert result["metadata"] == {
        "model": "digits",
        "baseline": "baseline",
        "candidate": "candidate",
        "fallback": True,
        "guard.maxErrorRate": 0.05,
    }
    for tier in ("beta", "gold"):
        assert variants_of(result, {"tier": tier}) == Counter({"1": 400})


def test_rollback_works_on_any_targeting_shape() -> None:
    """Even a targeting the operations cannot edit is rolled back (the guard relies on it)."""
    flag = flag_with(targeting={"var": "pick"})
    del flag["metadata"]["cohort.beta"]
    with pytest.raises(InvalidOperation, match="replace the whole flag"):
        set_rollout(flag, "2", 10)
    result = checked(rollback(flag))
    assert variants_of(result, {"pick": "candidate"}) == Counter({"1": 400})


def test_promote_drops_a_shadow_of_the_promoted_version() -> None:
    """Promoting the version the baseline shadowed leaves no shadow of the served version."""
    result = checked(promote(set_rollout(demo_flag(), "3", 50)))
    assert result["variants"]["baseline"] == {"serve": "3"}


def test_promote_makes_the_candidate_version_the_baseline() -> None:
    """promote: the baseline serves the candidate's version; the candidate's share is 0 %."""
    result = checked(promote(set_rollout(demo_flag(), "2", 50)))
    assert result["variants"]["baseline"]["serve"] == "2"
    assert result["variants"]["baseline"]["shadow"] == [{"version": "3", "percent": 10}]
    assert describe_release(result)["split"] == {"baseline": 100.0, "candidate": 0.0}
    assert variants_of(result, {"tier": "gold"}) == Counter({"2": 400})


def test_describe_release_of_the_demo() -> None:
    """describe_release shows variants with versions, split, named cohorts, shadows, state."""
    assert describe_release(demo_flag()) == {
        "model": "digits",
        "state": "ENABLED",
        "default_variant": "baseline",
        "baseline": {"variant": "baseline", "version": "1"},
        "candidate": {"variant": "candidate", "version": "2"},
        "variants": {
            "baseline": {"serve": "1", "shadow": [{"version": "3", "percent": 10}]},
            "candidate": {"serve": "2"},
        },
        "split": {"baseline": 90.0, "candidate": 10.0},
        "cohorts": [{"name": "beta", "rule": BETA, "variant": "candidate", "version": "2"}],
        "shadows": [{"variant": "baseline", "serve": "1", "version": "3", "percent": 10}],
        "policy": {"fallback": True},
    }


def test_describe_release_names_unnamed_cohorts_none() -> None:
    """A cohort rule without a cohort.<name> entry is listed with name None."""
    flag = demo_flag()
    del flag["metadata"]["cohort.beta"]
    assert describe_release(flag)["cohorts"][0]["name"] is None


def test_operations_need_release_metadata() -> None:
    """A flag whose metadata names no baseline variant cannot be operated on."""
    flag = demo_flag()
    del flag["metadata"]["baseline"]
    with pytest.raises(InvalidOperation, match="metadata 'baseline' names none of its variants"):
        disable(flag)


STEPS = st.one_of(
    st.tuples(st.just("rollout"), st.sampled_from(["2", "3", "4"]), st.integers(0, 100)),
    st.tuples(
        st.just("cohort"), st.sampled_from(["gold", "silver", "beta"]), st.sampled_from(["1", "2"])
    ),
    st.tuples(st.just("uncohort"), st.sampled_from(["gold", "silver", "beta"])),
    st.tuples(
        st.just("shadow"), st.lists(st.sampled_from(["3", "4"]), unique=True), st.integers(0, 100)
    ),
    st.tuples(st.sampled_from(["disable", "enable", "rollback", "promote"])),
)


def _apply(flag: dict[str, Any], step: tuple[Any, ...]) -> dict[str, Any]:
    name, *args = step
    if name == "rollout":
        return set_rollout(flag, args[0], args[1])
    if name == "cohort":
        rule = {"==": [{"var": "tier"}, args[0]]}
        return add_cohort(flag, args[0], rule, args[1])
    if name == "uncohort":
        return remove_cohort(flag, args[0])
    if name == "shadow":
        return set_shadow(flag, args[0], args[1])
    operation = {"disable": disable, "enable": enable, "rollback": rollback, "promote": promote}
    return operation[name](flag)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(steps=st.lists(STEPS, max_size=8))
def test_any_sequence_of_operations_keeps_the_flag_valid(steps: list[tuple[Any, ...]]) -> None:
    """Whatever operations a release manager chains (refused ones aside), every flag they
    produce validates, passes the flagd schema and never changes the flag it came from."""
    flag = demo_flag()
    for step in steps:
        before = copy.deepcopy(flag)
        try:
            result = _apply(flag, step)
        except InvalidOperation:
            assert flag == before
            continue
        assert flag == before
        if step[0] == "shadow" and result["variants"]["baseline"]["serve"] in step[1]:
            with pytest.raises(InvalidFlag, match="which it serves"):  # shadowing itself
                validate_flag(DEMO_KEY, result, KNOWN)
            continue
        validate_flag(DEMO_KEY, result, KNOWN)
        assert schema_errors(as_document(DEMO_KEY, result)) == []
        flag = result


RULES = st.sampled_from([GOLD, BETA, {"starts_with": [{"var": "email"}, "a"]}])
PLANS = st.builds(
    Plan,
    cohorts=st.lists(st.builds(Cohort, RULES, st.sampled_from(["a", "b"])), max_size=3).map(tuple),
    rest=st.one_of(
        st.none(),
        st.sampled_from(["a", "b"]),
        st.builds(
            Split,
            st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 100)), min_size=1).map(
                tuple
            ),
            st.sampled_from([(), ({"var": "user"},)]),
        ),
    ),
)


@settings(max_examples=200, derandomize=True)
@given(plan=PLANS)
def test_a_written_plan_reads_back_the_same(plan: Plan) -> None:
    """write_plan then read_plan gives back the same cohorts, split and fall-through."""
    assert read_plan(write_plan(plan)) == plan
