"""Validate a release flag (or a whole flagd document) before it reaches the evaluator.

A flag that passes is one flagd-core loads, whose every variant is a route to versions the
repository has and loaded, whose metadata names the model and its baseline and candidate
variants, and whose targeting answers only variants that exist. Errors say precisely what
is wrong, prefixed with the flag's key.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import msgspec
from openfeature.contrib.tools.flagd.core.model import FlagStore

from gateway.errors import InvalidName
from gateway.flags.document import (
    COHORT_PREFIX,
    META_BASELINE,
    META_CANDIDATE,
    META_MODEL,
    RELEASE_KEYS,
    MetadataValue,
    Release,
    Route,
    decode_route,
)
from gateway.flags.errors import InvalidFlag, InvalidPolicy
from gateway.flags.plan import cohort_names, name_cohorts, read_plan
from gateway.flags.policy import parse_policy, stored_policy
from gateway.flags.targeting import targeting_problems
from gateway.flags.versions import KnownVersions, VersionLookup, VersionStatus, version_lookup
from gateway.repository.names import validate_name

FLAG_PROPERTIES = ("state", "variants", "defaultVariant", "targeting", "metadata")
DOCUMENT_PROPERTIES = ("$schema", "flags", "metadata")
_ROUTE_SHAPE = '{"serve": "<version>", "shadow": [{"version": "<version>", "percent": 0..100}]}'


def validate_flag(
    key: str, flag: Any, known_versions: KnownVersions, *, stored: bool = False
) -> Release:
    """The Release `flag` describes, or InvalidFlag saying what is wrong with it (InvalidPolicy
    for its metadata). `stored`: a flag already in the store, whose policy may have been
    written by another version of the gateway: a policy that does not parse leaves the
    release serving with its automation off (`ReleasePolicy.problem`) instead of failing."""
    return _FlagCheck(key, version_lookup(known_versions), stored=stored).release(flag)


def validate_document(
    doc: Any, known_versions: KnownVersions, *, stored: bool = False
) -> dict[str, Release]:
    """Every Release of a flagd document (flag key -> Release), at most one per model."""
    if not isinstance(doc, dict):
        raise InvalidFlag("a flag document must be a JSON object with a 'flags' object")
    if "$evaluators" in doc:
        raise InvalidFlag("flag document: $evaluators are not supported; inline the rules")
    unknown = sorted(set(doc) - set(DOCUMENT_PROPERTIES))
    if unknown:
        raise InvalidFlag(
            f"flag document: unknown properties {_names(unknown)}; "
            f"a document has {_names(DOCUMENT_PROPERTIES)}"
        )
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        raise InvalidFlag("flag document: 'flags' must be an object of flag key -> flag")
    _check_metadata("flag document", doc.get("metadata", {}))
    lookup = version_lookup(known_versions)
    releases: dict[str, Release] = {}
    by_model: dict[str, str] = {}
    for key, flag in flags.items():
        release = _FlagCheck(key, lookup, stored=stored).release(flag)
        if release.model in by_model:
            raise InvalidFlag(
                f"flags {by_model[release.model]!r} and {key!r} both release model "
                f"{release.model!r}; a model has one release flag"
            )
        by_model[release.model] = key
        releases[key] = release
    return releases


def _flagd_problem(document: dict[str, Any]) -> str | None:
    """What flagd-core's own loader says about `document` (it mutates what it loads)."""
    try:
        FlagStore().update(copy.deepcopy(document))
    except Exception as exc:  # flagd-core raises ParseError, and TypeError on odd shapes
        cause = exc.__cause__
        return str(exc) or (str(cause) if cause else "") or type(exc).__name__
    return None


def _holds_json(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _names(names: Any) -> str:
    return ", ".join(repr(name) for name in names)


def _check_metadata(where: str, metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise InvalidFlag(f"{where}: metadata must be an object")
    for name, value in metadata.items():
        if not isinstance(value, str | int | float):
            raise InvalidFlag(
                f"{where}: metadata {name!r} is {json.dumps(value)}; flagd metadata values "
                "are strings, numbers or booleans"
            )


class _FlagCheck:
    def __init__(self, key: Any, lookup: VersionLookup, *, stored: bool = False) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidFlag("a flag key must be a non-empty string")
        self.key = key
        self.lookup = lookup
        self.stored = stored

    def fail(self, problem: str) -> NoReturn:
        raise InvalidFlag(f"flag {self.key!r}: {problem}")

    def release(self, flag: Any) -> Release:
        self.check_structure(flag)
        targeting: dict[str, Any] = flag.get("targeting", {})
        metadata: dict[str, MetadataValue] = flag.get("metadata", {})
        routes = {name: self.route(name, value) for name, value in flag["variants"].items()}
        model, baseline, candidate = self.roles(metadata, routes)
        for name, route in routes.items():
            self.check_versions(model, name, route)
        problems = targeting_problems(targeting, routes)
        if problems:
            self.fail("; ".join(problems))
        self.check_cohorts(targeting, metadata)
        if self.stored:
            policy = stored_policy(metadata)
        else:
            try:
                policy = parse_policy(metadata)
            except InvalidPolicy as exc:
                raise InvalidPolicy(f"flag {self.key!r}: {exc}") from None
        return Release(
            key=self.key,
            model=model,
            baseline=baseline,
            candidate=candidate,
            routes=MappingProxyType(routes),
            state=flag["state"],
            default_variant=flag["defaultVariant"],
            metadata=MappingProxyType(dict(metadata)),
            policy=policy,
        )

    def check_structure(self, flag: Any) -> None:
        """flagd's own rules for a flag, stated precisely, then flagd-core's loader itself."""
        if not isinstance(flag, dict):
            self.fail("a flag must be a JSON object")
        unknown = sorted(set(flag) - set(FLAG_PROPERTIES))
        if unknown:
            self.fail(f"unknown properties {_names(unknown)}; a flag has {_names(FLAG_PROPERTIES)}")
        state = flag.get("state")
        if state not in ("ENABLED", "DISABLED"):
            self.fail(f"state is {json.dumps(state)}; it must be 'ENABLED' or 'DISABLED'")
        variants = flag.get("variants")
        if not isinstance(variants, dict) or not variants:
            self.fail("variants must be a non-empty object of variant name -> route")
        if "" in variants:
            self.fail("a variant name must not be empty")
        default = flag.get("defaultVariant")
        if not isinstance(default, str) or default not in variants:
            self.fail(f"defaultVariant {json.dumps(default)} is not one of the variants")
        if not isinstance(flag.get("targeting", {}), dict):
            self.fail("targeting must be a JSON object (a JsonLogic rule, or {})")
        _check_metadata(f"flag {self.key!r}", flag.get("metadata", {}))
        flagd_problem = _flagd_problem({"flags": {self.key: flag}})
        if flagd_problem is not None:
            self.fail(f"flagd rejects it: {flagd_problem}")

    def roles(
        self, metadata: Mapping[str, MetadataValue], routes: Mapping[str, Route]
    ) -> tuple[str, str, str]:
        """The model, baseline variant and candidate variant the metadata names."""
        model, baseline, candidate = (self.release_key(metadata, name) for name in RELEASE_KEYS)
        for role, name in ((META_BASELINE, baseline), (META_CANDIDATE, candidate)):
            if name not in routes:
                self.fail(f"metadata {role!r} names variant {name!r}, which the flag lacks")
        if baseline == candidate:
            self.fail("metadata 'baseline' and 'candidate' name the same variant")
        return model, baseline, candidate

    def route(self, name: str, value: Any) -> Route:
        try:
            return decode_route(value)
        except msgspec.ValidationError as exc:
            self.fail(f"variant {name!r} is not a route ({exc}); a route is {_ROUTE_SHAPE}")

    def release_key(self, metadata: Mapping[str, MetadataValue], name: str) -> str:
        value = metadata.get(name)
        if not isinstance(value, str) or not value:
            what = "model it releases" if name == META_MODEL else f"{name} variant"
            self.fail(f"metadata {name!r} must be a string naming the {what}")
        return value

    def check_versions(self, model: str, variant: str, route: Route) -> None:
        self.check_version(model, variant, "serves", route.serve)
        seen = {route.serve}
        for target in route.shadow:
            if target.version in seen:
                again = "it serves" if target.version == route.serve else "it already shadows"
                self.fail(f"variant {variant!r} shadows version {target.version!r}, which {again}")
            seen.add(target.version)
            self.check_version(model, variant, "shadows", target.version)

    def check_version(self, model: str, variant: str, verb: str, version: str) -> None:
        status = self.lookup(model, version)
        if status is VersionStatus.READY:
            return
        if status is VersionStatus.UNKNOWN_MODEL:
            self.fail(f"metadata 'model' names model {model!r}, which the repository lacks")
        why = "does not have" if status is VersionStatus.UNKNOWN_VERSION else "has but did not load"
        self.fail(f"variant {variant!r} {verb} version {version!r}, which model {model!r} {why}")

    def check_cohorts(
        self, targeting: dict[str, Any], metadata: Mapping[str, MetadataValue]
    ) -> None:
        keys = [key for key in metadata if key.startswith(COHORT_PREFIX)]
        if not keys:
            return
        for key in keys:
            try:
                validate_name("cohort", key.removeprefix(COHORT_PREFIX))
            except InvalidName as exc:
                self.fail(f"metadata {key!r}: {exc}")
            if not _holds_json(metadata[key]):
                self.fail(f"metadata {key!r} must hold the cohort's rule as a JSON string")
        plan = read_plan(targeting)
        if plan is None:
            self.fail(
                "metadata names cohorts, but the targeting is not cohort rules in front of "
                "a split (an 'if' chain of rule, variant pairs ending in a fractional)"
            )
        named = set(filter(None, name_cohorts(plan.cohorts, metadata)))
        for name in cohort_names(metadata):
            if name not in named:
                self.fail(f"metadata '{COHORT_PREFIX}{name}' names a rule the targeting lacks")
