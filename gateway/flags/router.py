"""Route each request by its model's release flag: one OpenFeature evaluation, then cached.

A model with no flag serves its default version (reason NO_FLAG). A DISABLED flag (the kill
switch) serves the baseline's route. A flag that cannot be evaluated serves the baseline's
route with reason ERROR, counted and reported to `on_error`; the caller never sees an error.
Decisions are cached per (model, targeting key, attributes) until the flag set changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

from gateway.errors import ModelNotFound
from gateway.flags.cache import DecisionCache
from gateway.flags.document import Release, Route, ShadowTarget
from gateway.flags.provider import ReleaseFlagProvider
from gateway.flags.validation import validate_document
from gateway.flags.versions import KnownVersions, version_lookup

NO_FLAG = "NO_FLAG"
_DISABLED = Reason.DISABLED.value
_ERROR = Reason.ERROR.value
Attribute = str | int | float | bool
CacheKey = tuple[str, str, tuple[tuple[str, Attribute], ...]]

_NO_ATTRIBUTES: Mapping[str, Attribute] = MappingProxyType({})
# The SDK type-checks the value it returns, default included: an object flag needs a dict.
_NO_VALUE: dict[str, Any] = {}
_domains = itertools.count(1)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Which version serves a request, which shadow it, and why."""

    model: str
    flag_key: str | None
    variant: str | None
    reason: str
    """An OpenFeature reason (TARGETING_MATCH, DEFAULT, STATIC, DISABLED, ERROR) or NO_FLAG."""
    serve: str
    shadows: tuple[ShadowTarget, ...]
    release: Release | None


@dataclass(frozen=True, slots=True)
class RouteError:
    """A flag that could not be evaluated (the request was served from the baseline)."""

    model: str
    flag_key: str
    error_code: str
    message: str


@dataclass(frozen=True, slots=True)
class _FlagSet:
    releases: Mapping[str, Release]  # by model
    cache: DecisionCache[CacheKey, RouteDecision]


class Router:
    """Routes requests by release flags evaluated through an OpenFeature client.

    Each Router registers its own provider under its own OpenFeature domain, so several
    routers (apps, tests) in one process share no flags.
    """

    def __init__(
        self,
        known_versions: KnownVersions,
        default_version: Callable[[str], str] | Mapping[str, str],
        *,
        on_error: Callable[[RouteError], None] | None = None,
        cache_size: int = 50_000,
    ) -> None:
        self._known_versions = version_lookup(known_versions)
        self._default_version = default_version
        self._on_error = on_error
        self._cache_size = cache_size
        self.evaluation_errors = 0
        self.domain = f"release-gateway-router-{next(_domains)}"
        self._provider = ReleaseFlagProvider()
        api.set_provider_and_wait(self._provider, self.domain)
        self._client = api.get_client(self.domain)
        self._flags = _FlagSet(MappingProxyType({}), DecisionCache(cache_size))
        # A model's default version is fixed for the process: one decision per unflagged model.
        self._unflagged: dict[str, RouteDecision] = {}

    @property
    def releases(self) -> Mapping[str, Release]:
        """The current releases, by model."""
        return self._flags.releases

    def set_flags(self, flags: Mapping[str, Any]) -> dict[str, Release]:
        """Validate and install a whole flag set (flag key -> flagd flag object), as stored:
        a release whose policy no longer parses still routes (its automation is off).

        Raises InvalidFlag and changes nothing when any flag is invalid. Clears the cache.
        """
        releases = validate_document({"flags": dict(flags)}, self._known_versions, stored=True)
        self._provider.set_flags(flags)
        by_model = MappingProxyType({release.model: release for release in releases.values()})
        # One assignment: a request sees the new releases together with a new, empty cache.
        self._flags = _FlagSet(by_model, DecisionCache(self._cache_size))
        return releases

    def route(
        self,
        model: str,
        targeting_key: str,
        attributes: Mapping[str, Attribute] = _NO_ATTRIBUTES,
        *,
        cacheable: bool = True,
    ) -> RouteDecision:
        """The route for one request. `cacheable=False` for a targeting key that will not
        come again (a generated request id), so it does not crowd out sticky users."""
        flags = self._flags
        release = flags.releases.get(model)
        if release is None:
            decision = self._unflagged.get(model)
            if decision is None:
                decision = RouteDecision(
                    model, None, None, NO_FLAG, self._default_of(model), (), None
                )
                self._unflagged[model] = decision
            return decision
        if not cacheable:
            return self._evaluate(release, targeting_key, attributes)
        key = (model, targeting_key, tuple(sorted(attributes.items())) if attributes else ())
        decision = flags.cache.get(key)
        if decision is None:
            decision = self._evaluate(release, targeting_key, attributes)
            if decision.reason != _ERROR:
                flags.cache.put(key, decision)
        return decision

    def evaluate(
        self, flag_key: str, targeting_key: str | None, attributes: Mapping[str, Any]
    ) -> FlagEvaluationDetails[Any]:
        """One evaluation of any flag by key, through the same OpenFeature client (for OFREP)."""
        context = EvaluationContext(targeting_key, dict(attributes))
        return self._client.get_object_details(flag_key, _NO_VALUE, context)

    def _default_of(self, model: str) -> str:
        default_version = self._default_version
        if callable(default_version):
            return default_version(model)
        try:
            return default_version[model]
        except KeyError:
            raise ModelNotFound(f"unknown model {model!r}") from None

    def _evaluate(
        self, release: Release, targeting_key: str, attributes: Mapping[str, Attribute]
    ) -> RouteDecision:
        context = EvaluationContext(targeting_key, attributes)
        details = self._client.get_object_details(release.key, _NO_VALUE, context)
        reason = details.reason
        if details.error_code is not None or reason == _ERROR:
            code = details.error_code.value if details.error_code else "GENERAL"
            return self._failed(release, code, details.error_message or "evaluation failed")
        if reason == _DISABLED:
            return _decision(release, release.baseline, _DISABLED, release.baseline_route)
        variant = details.variant
        route = release.routes.get(variant) if variant is not None else None
        if variant is None or route is None:
            return self._failed(release, "GENERAL", f"variant {variant!r} is not in the release")
        return _decision(release, variant, str(reason), route)

    def _failed(self, release: Release, code: str, message: str) -> RouteDecision:
        self.evaluation_errors += 1
        if self._on_error is not None:
            self._on_error(RouteError(release.model, release.key, code, message))
        return _decision(release, release.baseline, _ERROR, release.baseline_route)


def _decision(release: Release, variant: str, reason: str, route: Route) -> RouteDecision:
    return RouteDecision(
        release.model, release.key, variant, reason, route.serve, route.shadow, release
    )
