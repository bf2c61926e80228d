"""The review of a model's shadow comparisons: plain Python over records, no I/O.

Per (primary, shadow) pair, and per cohort inside each pair: how many requests were shadowed,
how many were compared, the agreement rate on the top class with its 95 % Wilson interval
(over rows: a request of n rows is n trials), quantiles of the largest absolute difference,
p50 and p99 latency of each side, and the errors on either side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from gateway.state import ComparisonRecord

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def quantile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values, interpolating linearly between closest ranks."""
    if not ordered:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], not {q}")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    rate: float
    low: float
    high: float
    confidence: float = 0.95


class Spread(msgspec.Struct, frozen=True, kw_only=True):
    p50: float
    p90: float
    p99: float
    max: float


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    p50_ms: float | None
    p99_ms: float | None


class SideLatency(msgspec.Struct, frozen=True, kw_only=True):
    primary: Latency
    shadow: Latency


class Errors(msgspec.Struct, frozen=True, kw_only=True):
    primary: int
    """Requests the primary failed (the client got an error; the shadow still ran)."""
    shadow: int
    """Shadow runs that raised or answered outside their signature."""
    timeout: int
    """Shadow runs that outlived their timeout."""


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    """Comparison records: every shadow run that started, whatever its outcome."""
    compared: int
    """Records where both sides answered."""
    rows: int
    """Rows whose top classes could be compared (the agreement's trials)."""
    agreed_rows: int
    agreement: Agreement | None
    disagreements: int
    """Compared requests with at least one row whose top classes differ."""
    diff: Spread | None
    latency: SideLatency
    errors: Errors
    first_at: float | None
    last_at: float | None


class CohortSummary(msgspec.Struct, frozen=True, kw_only=True):
    cohort: str
    """The named cohort whose rule routed the request; "" for requests outside every cohort."""
    stats: Stats


class LiveAccuracy(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth joined to both sides of the pair's shadowed requests, since the process
    started: each side's accuracy over the very same labelled rows."""

    labelled: int
    primary: float | None
    shadow: float | None


class PairSummary(msgspec.Struct, frozen=True, kw_only=True):
    primary: str
    shadow: str
    stats: Stats
    cohorts: list[CohortSummary]
    live_accuracy: LiveAccuracy | None = None


class ShadowSummary(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    since: float | None
    until: float | None
    pairs: list[PairSummary]


def summarise(
    model: str,
    records: Iterable[ComparisonRecord],
    *,
    since: float | None = None,
    until: float | None = None,
    accuracy: Mapping[tuple[str, str], LiveAccuracy] | None = None,
) -> ShadowSummary:
    """Group `records` by (primary, shadow) pair, then by cohort, and summarise each group;
    `accuracy` gives a pair's live accuracy from feedback."""
    pairs: dict[tuple[str, str], dict[str, list[ComparisonRecord]]] = {}
    for record in records:
        cohorts = pairs.setdefault((record.primary_version, record.shadow_version), {})
        cohorts.setdefault(record.cohort, []).append(record)
    summaries = []
    for (primary, shadow), cohorts in sorted(pairs.items(), key=lambda item: _pair_key(item[0])):
        every = [record for group in cohorts.values() for record in group]
        summaries.append(
            PairSummary(
                primary=primary,
                shadow=shadow,
                stats=group_stats(every),
                cohorts=[
                    CohortSummary(cohort=name, stats=group_stats(group))
                    for name, group in sorted(cohorts.items())
                ],
                live_accuracy=(accuracy or {}).get((primary, shadow)),
            )
        )
    return ShadowSummary(model=model, since=since, until=until, pairs=summaries)


def group_stats(records: Sequence[ComparisonRecord]) -> Stats:
    """The summary of one group of records."""
    rows = agreed = disagreements = compared = 0
    primary_errors = shadow_errors = timeouts = 0
    diffs: list[float] = []
    primary_latency: list[float] = []
    shadow_latency: list[float] = []
    for record in records:
        if record.outcome == "compared":
            compared += 1
        elif record.outcome == "timeout":
            timeouts += 1
        if record.primary_error:
            primary_errors += 1
        if record.shadow_error and record.outcome != "timeout":
            shadow_errors += 1
        if record.agreed_rows is not None:
            rows += record.rows
            agreed += record.agreed_rows
            if record.agree is False:
                disagreements += 1
        if record.max_abs_diff is not None:
            diffs.append(record.max_abs_diff)
        if record.primary_latency_ms is not None:
            primary_latency.append(record.primary_latency_ms)
        if record.shadow_latency_ms is not None and record.outcome != "timeout":
            shadow_latency.append(record.shadow_latency_ms)
    agreement = None
    if rows:
        low, high = wilson_interval(agreed, rows)
        agreement = Agreement(rate=agreed / rows, low=low, high=high)
    times = [record.at for record in records]
    return Stats(
        count=len(records),
        compared=compared,
        rows=rows,
        agreed_rows=agreed,
        agreement=agreement,
        disagreements=disagreements,
        diff=_spread(diffs),
        latency=SideLatency(primary=_latency(primary_latency), shadow=_latency(shadow_latency)),
        errors=Errors(primary=primary_errors, shadow=shadow_errors, timeout=timeouts),
        first_at=min(times) if times else None,
        last_at=max(times) if times else None,
    )


def _spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    values.sort()
    return Spread(
        p50=quantile(values, 0.5),
        p90=quantile(values, 0.9),
        p99=quantile(values, 0.99),
        max=values[-1],
    )


def _latency(values: list[float]) -> Latency:
    if not values:
        return Latency(p50_ms=None, p99_ms=None)
    values.sort()
    return Latency(p50_ms=quantile(values, 0.5), p99_ms=quantile(values, 0.99))


def _pair_key(pair: tuple[str, str]) -> tuple[tuple[int, int | str], tuple[int, int | str]]:
    return _natural(pair[0]), _natural(pair[1])


def _natural(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)
