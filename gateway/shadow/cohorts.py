"""Which named cohort routed a request: the first named cohort rule its context matches.

Evaluated off the request path, with flagd's own JsonLogic operators, over the `cohort.<name>`
rules of the release the request was routed by, in the flag's metadata order. Only a request
routed by targeting (reason TARGETING_MATCH) can belong to a cohort; one outside every cohort
(the percentage split, the default variant, a disabled flag) belongs to cohort "".
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from openfeature.contrib.tools.flagd.core.targeting.targeting import targeting
from openfeature.evaluation_context import EvaluationContext

from gateway.flags.document import Release
from gateway.flags.plan import cohort_names

Attribute = str | int | float | bool
TARGETING_MATCH = "TARGETING_MATCH"
_Rules = tuple[tuple[str, Any], ...]


class CohortResolver:
    """Names the cohort of a routed request; the rules are read once per release object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, tuple[Release, _Rules]] = {}

    def cohort(
        self,
        release: Release | None,
        reason: str,
        targeting_key: str,
        attributes: Mapping[str, Attribute],
    ) -> str:
        """The name of the first named cohort whose rule `attributes` match, else ""."""
        if release is None or reason != TARGETING_MATCH:
            return ""
        rules = self._rules_of(release)
        if not rules:
            return ""
        context = EvaluationContext(targeting_key, dict(attributes))
        for name, rule in rules:
            try:
                if targeting(release.key, rule, context):
                    return name
            except Exception:  # noqa: S112 - a rule that cannot be evaluated matches nothing
                continue
        return ""

    def _rules_of(self, release: Release) -> _Rules:
        cached = self._rules.get(release.key)  # one dict read: safe without the lock
        if cached is not None and cached[0] is release:
            return cached[1]
        rules = tuple(cohort_names(release.policy).items())
        with self._lock:
            self._rules[release.key] = (release, rules)
        return rules
