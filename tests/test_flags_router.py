"""Routing requests by release flags: sticky percentages, cohorts, kill switch, errors, cache."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import cbor2
import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints

from gateway.errors import ModelNotFound
from gateway.flags.cache import DecisionCache
from gateway.flags.document import ShadowTarget
from gateway.flags.errors import InvalidFlag
from gateway.flags.provider import ReleaseFlagProvider
from gateway.flags.router import NO_FLAG, RouteError, Router
from tests.flags_support import DEMO_KEY, KNOWN, demo_flag, flag_with

DEFAULTS = {"digits": "1", "faces": "7"}


def make_router(**flags: dict[str, Any]) -> Router:
    router = Router(KNOWN, DEFAULTS)
    router.set_flags(flags or {DEMO_KEY: demo_flag()})
    return router


def split_flag(weights: dict[str, int]) -> dict[str, Any]:
    """The demo release with no cohort and the given fractional weights."""
    variants = {name: {"serve": str(1 + i % 4)} for i, name in enumerate(weights)}
    flag = flag_with(
        variants=variants,
        targeting={"fractional": [[name, weight] for name, weight in weights.items()]},
        defaultVariant=next(iter(weights)),
    )
    names = list(weights)
    flag["metadata"] = {"model": "digits", "baseline": names[0], "candidate": names[1]}
    return flag


class EvaluationCounter(Hook):
    def __init__(self) -> None:
        self.by_domain: Counter[str | None] = Counter()

    def after(
        self,
        hook_context: HookContext,
        details: FlagEvaluationDetails[FlagValueType],
        hints: HookHints,
    ) -> None:
        client = hook_context.client_metadata
        self.by_domain[client.domain if client else None] += 1


@pytest.fixture
def evaluations() -> Iterator[EvaluationCounter]:
    counter = EvaluationCounter()
    before = api.get_hooks()
    api.add_hooks([counter])
    yield counter
    api.clear_hooks()
    api.add_hooks(before)


def test_same_targeting_key_always_gets_the_same_variant() -> None:
    """Fractional routing is sticky: one key, evaluated afresh many times and by another
    router, always lands on the same variant."""
    router, other = make_router(), make_router()
    for index in range(200):
        key = f"user-{index}"
        first = router.route("digits", key, cacheable=False).variant
        again = {router.route("digits", key, cacheable=False).variant for _ in range(5)}
        assert again == {first}
        assert other.route("digits", key, cacheable=False).variant == first


def test_buckets_hash_the_flag_key_with_the_targeting_key() -> None:
    """The bucket is murmur3 (x86 32-bit, seed 0) of the CBOR array [flagKey, targetingKey]:
    (hash * 100) >> 32 below 90 is the baseline, else the candidate."""
    router = make_router()
    for index in range(500):
        key = f"k{index}"
        bucket = (mmh3.hash(cbor2.dumps([DEMO_KEY, key]), signed=False) * 100) >> 32
        expected = "baseline" if bucket < 90 else "candidate"
        assert router.route("digits", key, cacheable=False).variant == expected


def test_split_over_20000_keys_is_within_1_5_points_of_the_weights() -> None:
    """Over 20,000 random targeting keys the demo's 90/10 split holds within 1.5 points."""
    router = make_router()
    rng = random.Random(20_000)
    counts = Counter(
        router.route("digits", f"{rng.getrandbits(64):x}", cacheable=False).variant
        for _ in range(20_000)
    )
    assert abs(100 * counts["candidate"] / 20_000 - 10) <= 1.5
    assert abs(100 * counts["baseline"] / 20_000 - 90) <= 1.5


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    weights=st.lists(st.integers(0, 100), min_size=2, max_size=4).filter(lambda w: sum(w) > 0),
    seed=st.integers(0, 2**32),
)
def test_any_split_holds_within_1_5_points(weights: list[int], seed: int) -> None:
    """For arbitrary weights, the share of 20,000 random keys each variant gets from the
    provider is within 1.5 points of its weight's share (a zero weight gets no traffic)."""
    names = [f"v{i}" for i in range(len(weights))]
    provider = ReleaseFlagProvider({DEMO_KEY: split_flag(dict(zip(names, weights, strict=True)))})
    rng = random.Random(seed)
    counts = Counter(
        provider.resolve_object_details(
            DEMO_KEY, {}, EvaluationContext(f"{rng.getrandbits(64):x}")
        ).variant
        for _ in range(20_000)
    )
    total = sum(weights)
    for name, weight in zip(names, weights, strict=True):
        share = 100 * counts[name] / 20_000
        assert abs(share - 100 * weight / total) <= 1.5
        if weight == 0:
            assert counts[name] == 0


def test_cohort_rule_wins_over_the_percentage() -> None:
    """Every beta or internal user gets the candidate, whatever their percentage bucket."""
    router = make_router()
    for index in range(1000):
        for tier in ("beta", "internal"):
            decision = router.route("digits", f"user-{index}", {"tier": tier})
            assert (decision.variant, decision.serve) == ("candidate", "2")
            assert decision.reason == "TARGETING_MATCH"
    others = Counter(
        router.route("digits", f"user-{i}", {"tier": "gold"}).variant for i in range(1000)
    )
    assert others["baseline"] > 800


def test_decision_carries_the_route_and_release() -> None:
    """A baseline decision names the flag, serves version 1 and shadows version 3 at 10 %."""
    router = make_router()
    key = next(f"u{i}" for i in range(100) if router.route("digits", f"u{i}").variant == "baseline")
    decision = router.route("digits", key)
    assert (decision.flag_key, decision.serve) == (DEMO_KEY, "1")
    assert decision.shadows == (ShadowTarget("3", 10),)
    assert decision.release is router.releases["digits"]


def test_disabled_flag_serves_the_baseline() -> None:
    """The kill switch: a DISABLED flag sends even cohort users to the baseline's route."""
    router = make_router(**{DEMO_KEY: flag_with(state="DISABLED")})
    for index in range(200):
        decision = router.route("digits", f"user-{index}", {"tier": "beta"})
        assert (decision.variant, decision.reason, decision.serve) == ("baseline", "DISABLED", "1")
        assert decision.shadows == (ShadowTarget("3", 10),)


def test_static_flag_serves_the_default_variant() -> None:
    """A flag without targeting serves its default variant, reason STATIC."""
    flag = flag_with(targeting=None, defaultVariant="candidate")
    del flag["metadata"]["cohort.beta"]
    decision = make_router(**{DEMO_KEY: flag}).route("digits", "u")
    assert (decision.variant, decision.reason, decision.serve) == ("candidate", "STATIC", "2")


def test_unevaluable_flag_serves_the_baseline_and_reports_the_error() -> None:
    """A flag whose evaluation fails (it answers a variant that does not exist) serves the
    baseline with reason ERROR, counts it, tells on_error, and is never cached."""
    errors: list[RouteError] = []
    router = Router(KNOWN, DEFAULTS, on_error=errors.append)
    flag = flag_with(targeting={"var": "pick"})
    del flag["metadata"]["cohort.beta"]
    router.set_flags({DEMO_KEY: flag})
    for _ in range(3):
        decision = router.route("digits", "u", {"pick": "canary"})
        assert (decision.variant, decision.reason, decision.serve) == ("baseline", "ERROR", "1")
    assert router.evaluation_errors == 3
    assert [(e.model, e.flag_key, e.error_code) for e in errors] == [
        ("digits", DEMO_KEY, "GENERAL")
    ] * 3
    assert "canary" in errors[0].message
    assert router.route("digits", "u", {"pick": "candidate"}).variant == "candidate"
    assert router.evaluation_errors == 3


def test_model_without_flag_serves_its_default_version() -> None:
    """A model no flag releases serves its default version, reason NO_FLAG; an unknown model
    is ModelNotFound."""
    decision = make_router().route("faces", "u")
    assert (decision.serve, decision.reason, decision.variant, decision.release) == (
        "7",
        NO_FLAG,
        None,
        None,
    )
    with pytest.raises(ModelNotFound):
        make_router().route("nope", "u")


def test_repeat_users_are_served_from_the_cache(evaluations: EvaluationCounter) -> None:
    """A repeat (model, key, attributes) is answered without evaluating; a new attribute set
    or cacheable=False evaluates once per request, through the router's own client."""
    router = make_router()
    first = router.route("digits", "u1", {"tier": "gold", "region": "eu"})
    assert router.route("digits", "u1", {"region": "eu", "tier": "gold"}) is first
    assert evaluations.by_domain[router.domain] == 1
    router.route("digits", "u1", {"tier": "beta"})
    router.route("digits", "u1", {"tier": "gold", "region": "eu"}, cacheable=False)
    assert evaluations.by_domain[router.domain] == 3


def test_set_flags_invalidates_the_cache() -> None:
    """After set_flags, a cached user is routed by the new flag set."""
    router = make_router(**{DEMO_KEY: split_flag({"baseline": 0, "candidate": 100})})
    assert router.route("digits", "u1").variant == "candidate"
    router.set_flags({DEMO_KEY: split_flag({"baseline": 100, "candidate": 0})})
    assert router.route("digits", "u1").variant == "baseline"


def test_a_rejected_flag_set_changes_nothing() -> None:
    """An invalid update raises InvalidFlag and the router keeps routing by the old flags."""
    router = make_router()
    bad = flag_with(variants={"baseline": {"serve": "1"}, "candidate": {"serve": "7"}})
    with pytest.raises(InvalidFlag, match="serves version '7'"):
        router.set_flags({DEMO_KEY: bad})
    assert router.route("digits", "u", {"tier": "beta"}, cacheable=False).serve == "2"
    assert router.releases["digits"].candidate_route.serve == "2"


def test_routers_do_not_share_flags() -> None:
    """Two routers in one process evaluate through separate OpenFeature domains."""
    first = make_router(**{DEMO_KEY: split_flag({"baseline": 100, "candidate": 0})})
    second = make_router(**{DEMO_KEY: split_flag({"baseline": 0, "candidate": 100})})
    assert first.domain != second.domain
    assert first.route("digits", "u").variant == "baseline"
    assert second.route("digits", "u").variant == "candidate"


def test_decision_cache_is_bounded_and_keeps_entries_in_use() -> None:
    """The cache never holds more than its capacity; an entry read in the old generation
    moves to the young one and survives the next turnover."""
    cache: DecisionCache[int, str] = DecisionCache(10)
    for key in range(5):
        cache.put(key, str(key))
    for key in range(5, 10):
        cache.put(key, str(key))  # the first five become the old generation
        assert len(cache) <= 10
    assert cache.get(0) == "0"  # promoted
    for key in range(10, 14):
        cache.put(key, str(key))
    assert len(cache) <= 10
    assert cache.get(0) == "0"
    assert cache.get(1) is None
