"""Release-manager operations: pure functions from a flag to a NEW flag (input untouched).

They edit the release shape of the targeting (see `plan`): cohort rules in front of a
`fractional` split between the baseline and the candidate. A named cohort is kept in the
flag's metadata as `cohort.<name>` = its rule as a JSON string, so it can be found and removed
by name while the flag stays a valid flagd document. The result should be validated
(`validate_flag`) before it is installed: these functions know no model repository.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.errors import InvalidName
from gateway.flags.document import (
    COHORT_PREFIX,
    META_BASELINE,
    META_CANDIDATE,
    META_MODEL,
    RELEASE_KEYS,
)
from gateway.flags.errors import CohortExists, CohortNotFound, InvalidOperation
from gateway.flags.plan import (
    Cohort,
    Plan,
    Split,
    encode_rule,
    name_cohorts,
    read_plan,
    write_plan,
)
from gateway.repository.names import validate_name

Flag = dict[str, Any]


def set_rollout(flag: Mapping[str, Any], version: str, percent: int) -> Flag:
    """The candidate serves `version` to `percent` % of the traffic outside every cohort;
    the baseline gets the rest. Cohort rules stay in front of the split."""
    new, baseline, candidate = _edit(flag)
    _check_percent(percent, integral=True)
    if _serve(new, baseline) == version:
        raise InvalidOperation(
            f"version {version!r} is what the baseline serves; a rollout needs another version"
        )
    new["variants"][candidate]["serve"] = version
    return _with_split(new, baseline, candidate, percent)


def add_cohort(flag: Mapping[str, Any], name: str, rule: Any, version: str) -> Flag:
    """Requests matching the JsonLogic `rule` go to the variant serving `version`, ahead of
    the percentage split and after the cohorts already there."""
    new, baseline, candidate = _edit(flag)
    try:
        validate_name("cohort", name)
    except InvalidName as exc:
        raise InvalidOperation(str(exc)) from None
    if not isinstance(rule, dict) or len(rule) != 1:
        raise InvalidOperation("a cohort rule is a JsonLogic operation: an object with one key")
    metadata = new.setdefault("metadata", {})
    if COHORT_PREFIX + name in metadata:
        raise CohortExists(f"the release already has a cohort named {name!r}")
    plan = _plan(new)
    if any(cohort.rule == rule for cohort in plan.cohorts):
        raise CohortExists("the release already has a cohort with that rule")
    variant = _variant_serving(new, version, prefer=(candidate, baseline))
    plan = replace(plan, cohorts=(*plan.cohorts, Cohort(rule, variant)))
    new["targeting"] = write_plan(plan)
    metadata[COHORT_PREFIX + name] = encode_rule(rule)
    return new


def remove_cohort(flag: Mapping[str, Any], name: str) -> Flag:
    """Drop the cohort `name` (its rule and its metadata entry)."""
    new, _, _ = _edit(flag)
    metadata = new.get("metadata", {})
    if COHORT_PREFIX + name not in metadata:
        raise CohortNotFound(f"the release has no cohort named {name!r}")
    plan = _plan(new)
    names = name_cohorts(plan.cohorts, metadata)
    kept = tuple(cohort for cohort, n in zip(plan.cohorts, names, strict=True) if n != name)
    new["targeting"] = write_plan(replace(plan, cohorts=kept))
    del metadata[COHORT_PREFIX + name]
    return new


def set_shadow(flag: Mapping[str, Any], versions: Sequence[str], percent: float) -> Flag:
    """The baseline's route is shadowed by `versions` on `percent` % of its requests;
    an empty list stops shadowing."""
    new, baseline, _ = _edit(flag)
    _check_percent(percent, integral=False)
    route = new["variants"][baseline]
    if versions:
        route["shadow"] = [{"version": version, "percent": percent} for version in versions]
    else:
        route.pop("shadow", None)
    return new


def disable(flag: Mapping[str, Any]) -> Flag:
    """The kill switch: every request is served the baseline's route."""
    new, _, _ = _edit(flag)
    new["state"] = "DISABLED"
    return new


def enable(flag: Mapping[str, Any]) -> Flag:
    new, _, _ = _edit(flag)
    new["state"] = "ENABLED"
    return new


def rollback(flag: Mapping[str, Any]) -> Flag:
    """All traffic to the baseline: cohorts removed, the candidate's share 0 %, the
    baseline the default variant. Works on any targeting shape (the guard relies on it)."""
    new, baseline, candidate = _edit(flag)
    plan = read_plan(new.get("targeting", {}))
    bucket_by = plan.rest.bucket_by if plan is not None and isinstance(plan.rest, Split) else ()
    split = Split(((baseline, 100), (candidate, 0)), bucket_by)
    new["targeting"] = write_plan(Plan((), split))
    new["defaultVariant"] = baseline
    metadata = new.get("metadata", {})
    for key in [key for key in metadata if key.startswith(COHORT_PREFIX)]:
        del metadata[key]
    return new


def promote(flag: Mapping[str, Any]) -> Flag:
    """The candidate's version becomes the baseline's (no longer shadowing itself, if it
    did); the candidate's share goes to 0 %."""
    new, baseline, candidate = _edit(flag)
    route = new["variants"][baseline]
    route["serve"] = version = _serve(new, candidate)
    if "shadow" in route:  # a version does not shadow itself
        route["shadow"] = [target for target in route["shadow"] if target["version"] != version]
        if not route["shadow"]:
            del route["shadow"]
    return _with_split(new, baseline, candidate, 0)


def describe_release(flag: Mapping[str, Any]) -> dict[str, Any]:
    """What `GET /admin/releases/{model}` shows: variants and their versions, the effective
    split of traffic outside the cohorts, the cohorts, the shadows and the state."""
    baseline, candidate = _roles(flag)
    variants: dict[str, Any] = flag["variants"]
    metadata: dict[str, Any] = flag.get("metadata", {})
    plan = read_plan(flag.get("targeting", {}))
    split: dict[str, float] | None = None
    cohorts: list[dict[str, Any]] = []
    if plan is not None:
        if isinstance(plan.rest, Split):
            split = {v: round(share, 4) for v, share in plan.rest.percentages().items()}
        else:
            split = {plan.rest if plan.rest is not None else flag["defaultVariant"]: 100.0}
        names = name_cohorts(plan.cohorts, metadata)
        cohorts = [
            {"name": name, "rule": c.rule, "variant": c.variant, "version": _serve(flag, c.variant)}
            for c, name in zip(plan.cohorts, names, strict=True)
        ]
    return {
        "model": metadata.get(META_MODEL),
        "state": flag.get("state"),
        "default_variant": flag.get("defaultVariant"),
        "baseline": {"variant": baseline, "version": _serve(flag, baseline)},
        "candidate": {"variant": candidate, "version": _serve(flag, candidate)},
        "variants": {name: copy.deepcopy(route) for name, route in variants.items()},
        "split": split,
        "cohorts": cohorts,
        "shadows": [
            {"variant": name, "serve": route.get("serve"), **shadow}
            for name, route in variants.items()
            for shadow in route.get("shadow", [])
        ],
        "policy": {
            k: v
            for k, v in metadata.items()
            if k not in RELEASE_KEYS and not k.startswith(COHORT_PREFIX)
        },
    }


def _edit(flag: Mapping[str, Any]) -> tuple[Flag, str, str]:
    """A deep copy of `flag` to change, with its baseline and candidate variant names."""
    baseline, candidate = _roles(flag)
    return copy.deepcopy(dict(flag)), baseline, candidate


def _roles(flag: Mapping[str, Any]) -> tuple[str, str]:
    return _role(flag, META_BASELINE), _role(flag, META_CANDIDATE)


def _role(flag: Mapping[str, Any], role: str) -> str:
    metadata, variants = flag.get("metadata"), flag.get("variants")
    name = metadata.get(role) if isinstance(metadata, Mapping) else None
    if not isinstance(name, str) or not isinstance(variants, Mapping) or name not in variants:
        raise InvalidOperation(f"the flag's metadata {role!r} names none of its variants")
    return name


def _serve(flag: Mapping[str, Any], variant: str) -> Any:
    route = flag["variants"].get(variant)
    return route.get("serve") if isinstance(route, Mapping) else None


def _plan(flag: Mapping[str, Any]) -> Plan:
    plan = read_plan(flag.get("targeting", {}))
    if plan is None:
        raise InvalidOperation(
            "the flag's targeting is not cohort rules in front of a split, so release "
            "operations cannot edit it; replace the whole flag instead"
        )
    return plan


def _with_split(new: Flag, baseline: str, candidate: str, percent: int) -> Flag:
    plan = _plan(new)
    split = plan.rest if isinstance(plan.rest, Split) else Split(())
    split = split.with_weights({baseline: 100 - percent, candidate: percent})
    new["targeting"] = write_plan(replace(plan, rest=split))
    return new


def _variant_serving(flag: Flag, version: str, prefer: tuple[str, ...]) -> str:
    serving = [name for name in flag["variants"] if _serve(flag, name) == version]
    if not serving:
        raise InvalidOperation(
            f"no variant serves version {version!r}; roll out to it first (set_rollout)"
        )
    return next((name for name in prefer if name in serving), serving[0])


def _check_percent(percent: float, *, integral: bool) -> None:
    kinds: tuple[type, ...] = (int,) if integral else (int, float)
    if isinstance(percent, bool) or not isinstance(percent, kinds) or not 0 <= percent <= 100:
        kind = "an integer" if integral else "a number"
        raise InvalidOperation(f"percent must be {kind} from 0 to 100, not {percent!r}")
