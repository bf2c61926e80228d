"""The release shape of a targeting rule: cohort rules in front, a percentage split behind.

    {"if": [<rule 1>, "<variant>", <rule 2>, "<variant>", ..., {"fractional": [...]}]}

The first cohort whose rule matches decides; traffic outside every cohort gets the rest: a
`fractional` split (sticky per targeting key), a fixed variant, or the default variant.
Release operations read a targeting into a Plan, change it, and write it back; a targeting
of any other shape is valid flagd but cannot be edited by them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.flags.document import COHORT_PREFIX, MetadataValue


@dataclass(frozen=True, slots=True)
class Cohort:
    """A JsonLogic rule and the variant its matching requests get."""

    rule: Any
    variant: str


@dataclass(frozen=True, slots=True)
class Split:
    """A `fractional` operation: weighted buckets, and its bucketing expression if explicit."""

    buckets: tuple[tuple[str, int], ...]
    bucket_by: tuple[Any, ...] = ()
    """() for flagd's default bucketing (flag key and targeting key), else (expression,)."""

    def percentages(self) -> dict[str, float]:
        total = sum(weight for _, weight in self.buckets)
        shares: dict[str, float] = {}
        for variant, weight in self.buckets:
            shares[variant] = shares.get(variant, 0.0) + (100.0 * weight / total if total else 0.0)
        return shares

    def with_weights(self, weights: Mapping[str, int]) -> Split:
        """Exactly these buckets, in this order, keeping the bucketing expression."""
        return replace(self, buckets=tuple(weights.items()))


@dataclass(frozen=True, slots=True)
class Plan:
    cohorts: tuple[Cohort, ...]
    rest: Split | str | None
    """What traffic outside every cohort gets: a split, one variant, or the default variant."""


def read_plan(targeting: Mapping[str, Any]) -> Plan | None:
    """The Plan a targeting rule has, or None when it has another shape."""
    cohorts: list[Cohort] = []
    node: Any = targeting
    while node and not isinstance(node, str):
        branches = _if_branches(node)
        if branches is None:
            split = _read_split(node)
            return None if split is None else Plan(tuple(cohorts), split)
        pairs, node = branches
        for rule, answer in pairs:
            if not isinstance(answer, str):
                return None
            if rule is True:  # an unconditional branch: the rest; whatever follows is dead
                return Plan(tuple(cohorts), answer)
            cohorts.append(Cohort(rule, answer))
    return Plan(tuple(cohorts), node if isinstance(node, str) else None)


def _if_branches(node: Any) -> tuple[list[tuple[Any, Any]], Any] | None:
    """The (rule, answer) pairs of an `if` operation and its else (None when it has none)."""
    if not isinstance(node, dict) or len(node) != 1 or not isinstance(node.get("if"), list):
        return None
    args: list[Any] = node["if"]
    pairs = [(args[index], args[index + 1]) for index in range(0, len(args) - 1, 2)]
    return pairs, (args[-1] if len(args) % 2 else None)


def _read_split(node: Any) -> Split | None:
    if not isinstance(node, dict) or len(node) != 1:
        return None
    args = node.get("fractional")
    if not isinstance(args, list) or not args:
        return None
    head: tuple[Any, ...] = () if isinstance(args[0], list) else (args[0],)
    buckets: list[tuple[str, int]] = []
    for bucket in args[len(head) :]:
        if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
            return None
        variant, weight = bucket[0], bucket[1] if len(bucket) == 2 else 1
        if not isinstance(variant, str) or isinstance(weight, bool) or not isinstance(weight, int):
            return None
        buckets.append((variant, weight))
    return Split(tuple(buckets), head)


def write_plan(plan: Plan) -> dict[str, Any]:
    """The targeting rule of a Plan (read_plan(write_plan(p)) == p)."""
    rest: Any
    if isinstance(plan.rest, Split):
        rest = {"fractional": [*plan.rest.bucket_by, *([v, w] for v, w in plan.rest.buckets)]}
    else:
        rest = plan.rest
    if not plan.cohorts:
        if rest is None:
            return {}
        if isinstance(rest, str):
            return {"if": [True, rest]}
        return dict(rest)
    branches: list[Any] = []
    for cohort in plan.cohorts:
        branches += [cohort.rule, cohort.variant]
    if rest is not None:
        branches.append(rest)
    return {"if": branches}


def encode_rule(rule: Any) -> str:
    """A cohort rule as stored in metadata `cohort.<name>`: compact JSON with sorted keys."""
    return json.dumps(rule, sort_keys=True, separators=(",", ":"))


def cohort_names(metadata: Mapping[str, MetadataValue]) -> dict[str, Any]:
    """Cohort name -> its rule, from metadata `cohort.<name>` (values that are not a JSON
    encoding are skipped here; validation reports them)."""
    names: dict[str, Any] = {}
    for key, value in metadata.items():
        if key.startswith(COHORT_PREFIX) and isinstance(value, str):
            try:
                names[key.removeprefix(COHORT_PREFIX)] = json.loads(value)
            except ValueError:
                continue
    return names


def name_cohorts(
    cohorts: tuple[Cohort, ...], metadata: Mapping[str, MetadataValue]
) -> list[str | None]:
    """The name of each cohort (None for a rule no `cohort.<name>` entry holds)."""
    unclaimed = cohort_names(metadata)
    names: list[str | None] = []
    for cohort in cohorts:
        name = next((n for n, rule in unclaimed.items() if rule == cohort.rule), None)
        if name is not None:
            del unclaimed[name]
        names.append(name)
    return names
