"""Validation of release flags: the demo file is valid; every kind of mistake is named."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from gateway.flags.document import Route, ShadowTarget
from gateway.flags.errors import InvalidFlag
from gateway.flags.validation import validate_document, validate_flag
from gateway.flags.versions import VersionStatus, registry_versions
from gateway.repository import LoadedVersion, ModelEntry, ModelRegistry, VersionState
from tests.flags_support import (
    DEMO_KEY,
    KNOWN,
    as_document,
    demo_document,
    demo_flag,
    flag_with,
    schema_errors,
)


def test_demo_file_is_valid_against_the_official_flagd_schema() -> None:
    """flags/digits.json passes the official flagd JSON schema (flags.json + targeting.json)."""
    assert schema_errors(demo_document()) == []


def test_the_schema_check_itself_rejects_a_broken_document() -> None:
    """The schema check is live: a flag with an unknown state fails it."""
    document = demo_document()
    document["flags"][DEMO_KEY]["state"] = "ON"
    assert schema_errors(document) != []


def test_demo_file_validates_into_its_release() -> None:
    """validate_document reads the demo into one Release with its routes, roles and policy."""
    releases = validate_document(demo_document(), KNOWN)
    assert list(releases) == [DEMO_KEY]
    release = releases[DEMO_KEY]
    assert (release.model, release.baseline, release.candidate) == (
        "digits",
        "baseline",
        "candidate",
    )
    assert release.baseline_route == Route("1", (ShadowTarget("3", 10),))
    assert release.candidate_route == Route("2")
    assert (release.state, release.default_variant, release.fallback) == (
        "ENABLED",
        "baseline",
        True,
    )
    assert release.metadata["fallback"] is True
    assert release.policy.fallback is True
    assert [name for name, _ in release.policy.cohorts] == ["beta"]


def test_flagd_core_evaluates_the_validated_demo() -> None:
    """What validation accepts, the real flagd evaluator loads and evaluates to a route."""
    core = FlagdCore()
    core.set_flags(demo_document())
    details = core.resolve_object_value(DEMO_KEY, {}, EvaluationContext("u", {"tier": "beta"}))
    assert (details.variant, details.value) == ("candidate", {"serve": "2"})


def test_metadata_keys_no_release_reads_are_refused_but_free_text_is_kept() -> None:
    """A metadata key no part of a release reads (a typo) is refused naming it; the free-text
    keys are kept as written."""
    flag = demo_flag()
    flag["metadata"] |= {"owner": "ml", "description": "the digits release"}
    release = validate_flag(DEMO_KEY, flag, KNOWN)
    assert release.metadata["owner"] == "ml"
    for key in ("guard.max_error_rate", "gaurd.alpha", "window_s"):
        flag = demo_flag()
        flag["metadata"][key] = 0.02
        with pytest.raises(InvalidFlag, match=re.escape(repr(key))):
            validate_flag(DEMO_KEY, flag, KNOWN)


def test_fallback_can_be_switched_off() -> None:
    """metadata fallback=false turns the candidate's fallback off for the release."""
    flag = demo_flag()
    flag["metadata"]["fallback"] = False
    assert validate_flag(DEMO_KEY, flag, KNOWN).fallback is False


def test_validation_does_not_change_its_input() -> None:
    """Validating (flagd-core's loader included) leaves the caller's flag untouched."""
    flag = demo_flag()
    before = copy.deepcopy(flag)
    validate_flag(DEMO_KEY, flag, KNOWN)
    assert flag == before


def _variant(name: str, route: Any) -> Callable[[dict[str, Any]], None]:
    def change(flag: dict[str, Any]) -> None:
        flag["variants"][name] = route

    return change


def _meta(**entries: Any) -> Callable[[dict[str, Any]], None]:
    def change(flag: dict[str, Any]) -> None:
        for key, value in entries.items():
            if value is None:
                del flag["metadata"][key]
            else:
                flag["metadata"][key] = value

    return change


def _set(**props: Any) -> Callable[[dict[str, Any]], None]:
    def change(flag: dict[str, Any]) -> None:
        flag.update(props)

    return change


def _drop(prop: str) -> Callable[[dict[str, Any]], None]:
    def change(flag: dict[str, Any]) -> None:
        del flag[prop]

    return change


SPLIT = {"fractional": [["baseline", 90], ["candidate", 10]]}
BETA = '{"in":[{"var":"tier"},["beta","internal"]]}'

# (case id, change to the demo flag, words the error must contain)
CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("bad-state", _set(state="ON"), "state is \"ON\"; it must be 'ENABLED' or 'DISABLED'"),
    ("no-state", _drop("state"), "state is null"),
    ("unknown-property", _set(description="x"), "unknown properties 'description'"),
    ("no-variants", _set(variants={}), "variants must be a non-empty object"),
    ("variants-list", _set(variants=[1]), "variants must be a non-empty object"),
    ("empty-variant-name", _variant("", {"serve": "1"}), "a variant name must not be empty"),
    ("default-missing", _set(defaultVariant="canary"), 'defaultVariant "canary" is not one'),
    ("default-null", _set(defaultVariant=None), "defaultVariant null is not one"),
    ("targeting-string", _set(targeting="candidate"), "targeting must be a JSON object"),
    ("metadata-object", _meta(owner={"a": 1}), "metadata 'owner' is {\"a\": 1}"),
    ("metadata-null", _meta(owner=[]), "metadata 'owner' is []"),
    ("route-not-object", _variant("candidate", "2"), "variant 'candidate' is not a route"),
    ("route-no-serve", _variant("candidate", {}), "missing required field `serve`"),
    ("route-int-serve", _variant("candidate", {"serve": 2}), "Expected `str`, got `int`"),
    ("route-typo", _variant("candidate", {"serve": "2", "shadows": []}), "unknown field `shadows`"),
    (
        "shadow-percent",
        _variant("candidate", {"serve": "2", "shadow": [{"version": "3", "percent": 101}]}),
        "<= 100",
    ),
    (
        "serve-unknown-version",
        _variant("candidate", {"serve": "7"}),
        "flag 'digits-release': variant 'candidate' serves version '7', "
        "which model 'digits' does not have",
    ),
    (
        "shadow-unknown-version",
        _variant("baseline", {"serve": "1", "shadow": [{"version": "9", "percent": 5}]}),
        "variant 'baseline' shadows version '9', which model 'digits' does not have",
    ),
    (
        "shadow-of-itself",
        _variant("baseline", {"serve": "1", "shadow": [{"version": "1", "percent": 5}]}),
        "variant 'baseline' shadows version '1', which it serves",
    ),
    (
        "shadow-twice",
        _variant(
            "baseline",
            {
                "serve": "1",
                "shadow": [{"version": "3", "percent": 5}, {"version": "3", "percent": 1}],
            },
        ),
        "shadows version '3', which it already shadows",
    ),
    ("unknown-model", _meta(model="faces"), "names model 'faces', which the repository lacks"),
    ("no-model", _meta(model=None), "metadata 'model' must be a string naming the model"),
    ("no-baseline", _meta(baseline=None), "metadata 'baseline' must be a string"),
    ("no-candidate", _meta(candidate=None), "metadata 'candidate' must be a string"),
    ("baseline-missing", _meta(baseline="old"), "metadata 'baseline' names variant 'old'"),
    ("candidate-missing", _meta(candidate="new"), "metadata 'candidate' names variant 'new'"),
    ("same-roles", _meta(candidate="baseline"), "name the same variant"),
    ("fallback-string", _meta(fallback="yes"), "metadata 'fallback' must be true or false"),
    (
        "unknown-operator",
        _set(targeting={"fractionl": [["baseline", 50], ["candidate", 50]]}),
        "targeting at /fractionl uses unknown operator 'fractionl'",
    ),
    (
        "if-answers-missing-variant",
        _set(targeting={"if": [{"==": [{"var": "tier"}, "beta"]}, "canary", SPLIT]}),
        "targeting at /if/1 answers variant 'canary', which is not one of the variants",
    ),
    (
        "else-answers-missing-variant",
        _set(targeting={"if": [{"==": [{"var": "tier"}, "beta"]}, "candidate", "old"]}),
        "targeting at /if/2 answers variant 'old'",
    ),
    (
        "bucket-names-missing-variant",
        _set(targeting={"fractional": [["baseline", 90], ["canary", 10]]}),
        "targeting at /fractional/1/0 answers variant 'canary'",
    ),
    (
        "negative-weight",
        _set(targeting={"fractional": [["baseline", 90], ["candidate", -10]]}),
        "has weight -10; a weight is a non-negative integer",
    ),
    (
        "zero-weights",
        _set(targeting={"fractional": [["baseline", 0], ["candidate", 0]]}),
        "fractional at /fractional has weights that add up to 0",
    ),
    (
        "malformed-bucket",
        _set(targeting={"fractional": [["baseline", 90, 1], ["candidate", 10]]}),
        "fractional bucket at /fractional/0 must be [variant, weight]",
    ),
    (
        "evaluator-reference",
        _set(targeting={"$ref": "shared"}),
        "$evaluators references are not supported",
    ),
    ("cohort-not-json", _meta(**{"cohort.beta": "{in"}), "must hold the cohort's rule as a JSON"),
    ("cohort-bad-name", _meta(**{"cohort.a/b": BETA}), "invalid cohort name 'a/b'"),
    (
        "cohort-rule-absent",
        _meta(**{"cohort.gold": '{"==":[{"var":"tier"},"gold"]}'}),
        "metadata 'cohort.gold' names a rule the targeting lacks",
    ),
    (
        "cohort-odd-targeting",
        _set(targeting={"==": [{"var": "tier"}, "beta"]}),
        "metadata names cohorts, but the targeting is not cohort rules",
    ),
]


@pytest.mark.parametrize(
    ("change", "words"), [(c, w) for _, c, w in CASES], ids=[i for i, _, _ in CASES]
)
def test_invalid_flag_is_rejected_with_a_precise_error(
    change: Callable[[dict[str, Any]], None], words: str
) -> None:
    """Each kind of mistake raises InvalidFlag naming the flag and exactly what is wrong."""
    flag = demo_flag()
    change(flag)
    with pytest.raises(InvalidFlag) as raised:
        validate_flag(DEMO_KEY, flag, KNOWN)
    assert words in str(raised.value)
    assert str(raised.value).startswith(f"flag {DEMO_KEY!r}: ")


def test_a_flag_that_is_not_an_object_is_rejected() -> None:
    """A flag given as a JSON array is refused before anything reads its properties."""
    with pytest.raises(InvalidFlag, match="a flag must be a JSON object"):
        validate_flag(DEMO_KEY, [], KNOWN)


def test_a_version_the_repository_failed_to_load_is_rejected() -> None:
    """A version that exists but did not load (a FAILED load) cannot be routed to."""
    entry = ModelEntry("digits", None)
    for version in ("1", "2", "3"):
        entry.versions[version] = LoadedVersion("digits", version, None, None, VersionState.READY)
    entry.versions["4"] = LoadedVersion("digits", "4", None, None, VersionState.FAILED, "bad sha")
    lookup = registry_versions(ModelRegistry({"digits": entry}))
    assert lookup("digits", "4") is VersionStatus.NOT_LOADED
    assert lookup("digits", "5") is VersionStatus.UNKNOWN_VERSION
    assert lookup("faces", "1") is VersionStatus.UNKNOWN_MODEL
    validate_flag(DEMO_KEY, demo_flag(), lookup)
    flag = flag_with(variants={"baseline": {"serve": "1"}, "candidate": {"serve": "4"}})
    with pytest.raises(
        InvalidFlag, match="serves version '4', which model 'digits' has but did not"
    ):
        validate_flag(DEMO_KEY, flag, lookup)


def test_a_dynamic_answer_is_left_to_the_evaluator() -> None:
    """A targeting whose answer comes from the context (var) cannot be checked at load."""
    flag = flag_with(targeting={"var": "variant"})
    del flag["metadata"]["cohort.beta"]
    assert validate_flag(DEMO_KEY, flag, KNOWN).key == DEMO_KEY


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([], "a flag document must be a JSON object"),
        ({"flags": []}, "'flags' must be an object"),
        ({"flag": {}}, "unknown properties 'flag'"),
        ({"flags": {}, "$evaluators": {}}, "$evaluators are not supported"),
        ({"flags": {}, "metadata": {"version": None}}, "metadata 'version' is null"),
        ({"flags": {"": demo_flag()}}, "a flag key must be a non-empty string"),
        (
            {"flags": {DEMO_KEY: demo_flag(), "digits-again": demo_flag()}},
            "flags 'digits-release' and 'digits-again' both release model 'digits'",
        ),
        (
            {"flags": {DEMO_KEY: flag_with(state="OFF")}},
            "flag 'digits-release': state is \"OFF\"",
        ),
    ],
    ids=[
        "not-object",
        "flags-list",
        "unknown-top",
        "evaluators",
        "bad-meta",
        "empty-key",
        "two-per-model",
        "bad-flag",
    ],
)
def test_invalid_document_is_rejected(document: Any, words: str) -> None:
    """A flag document with a structural problem, or two releases of one model, is refused."""
    with pytest.raises(InvalidFlag) as raised:
        validate_document(document, KNOWN)
    assert words in str(raised.value)


def test_a_document_of_two_models_gives_two_releases() -> None:
    """Flags of different models validate together, each into its own Release."""
    other = flag_with(variants={"baseline": {"serve": "a"}, "candidate": {"serve": "b"}})
    other["metadata"] = {"model": "faces", "baseline": "baseline", "candidate": "candidate"}
    other["targeting"] = {}
    document = as_document(DEMO_KEY, demo_flag())
    document["flags"]["faces-release"] = other
    known = KNOWN | {"faces": {"a", "b"}}
    releases = validate_document(document, known)
    assert {key: r.model for key, r in releases.items()} == {
        DEMO_KEY: "digits",
        "faces-release": "faces",
    }
    assert schema_errors(document) == []
