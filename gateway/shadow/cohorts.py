"""Which named cohort routed a request: the first named cohort rule its context matches.

Evaluated off the request path, with flagd's own JsonLogic operators, over the `cohort.<name>`
rules of the release the request was routed by (read once, with its policy), in the flag's
metadata order. Only a request routed by targeting (reason TARGETING_MATCH) can belong to a
cohort; one outside every cohort (the percentage split, the default variant, a disabled flag)
belongs to cohort "".
"""

from __future__ import annotations

from collections.abc import Mapping

from openfeature.contrib.tools.flagd.core.targeting.targeting import targeting
from openfeature.evaluation_context import EvaluationContext

from gateway.flags.document import Release

Attribute = str | int | float | bool
TARGETING_MATCH = "TARGETING_MATCH"


def cohort_of(
    release: Release | None,
    reason: str,
    targeting_key: str,
    attributes: Mapping[str, Attribute],
) -> str:
    """The name of the first named cohort whose rule `attributes` match, else ""."""
    if release is None or reason != TARGETING_MATCH or not release.policy.cohorts:
        return ""
    context = EvaluationContext(targeting_key, dict(attributes))
    for name, rule in release.policy.cohorts:
        try:
            if targeting(release.key, rule, context):
                return name
        except Exception:  # noqa: S112 - a rule that cannot be evaluated matches nothing
            continue
    return ""
