"""Readable tables for release status and the audit log."""

from __future__ import annotations

import json
import time
from typing import Any

from gateway.cli.table import print_table


def print_release(release: dict[str, Any]) -> None:
    split = release.get("split") or {}
    print(
        f"model {release['model']}  flag {release['flag']} v{release['flag_version']}  "
        f"state {release['state']}  updated by {release.get('updated_by', '?')}"
    )
    roles = {
        release["baseline"]["variant"]: "baseline",
        release["candidate"]["variant"]: "candidate",
    }
    rows = []
    for name, route in release["variants"].items():
        shadows = ", ".join(f"{s['version']} @{s['percent']}%" for s in route.get("shadow", []))
        share = split.get(name)
        rows.append(
            [
                name,
                roles.get(name, ""),
                route["serve"],
                "-" if share is None else f"{share:g}%",
                shadows or "-",
            ]
        )
    print_table(["VARIANT", "ROLE", "SERVES", "SPLIT", "SHADOWS"], rows)
    guard = release.get("guard") or {}
    ramp = guard.get("ramp")
    if ramp:
        print(
            f"\nramp of v{ramp['version']} {ramp['state']}: step {ramp['step'] + 1}/"
            f"{len(ramp['steps'])} at {ramp['percent']}% (next {ramp['next_percent']}%), "
            f"bake left {ramp['bake_left_s']:.0f}s"
        )
    window = guard.get("window")
    if window:
        print(f"\nguard window since flag v{window['flag_version']} ({window['length_s']:.0f}s):")
        test = window.get("error_test") or {}
        rows = [_arm_row(name, window[name]) for name in ("baseline", "candidate")]
        print_table(
            [
                "ARM",
                "VERSION",
                "REQUESTS",
                "ERRORS",
                "ERR%",
                "FALLBACKS",
                "P50 MS",
                "P99 MS",
                "LIVE ACC",
            ],
            rows,
        )
        if test:
            print(
                f"error test: log-LR {test.get('statistic', 0):.2f} "
                f"vs threshold {test.get('threshold', 0):.2f}"
            )
    execution = release.get("execution") or {}
    if execution:
        print("\nexecution (since the gateway started):")
        print_table(
            [
                "VERSION",
                "INSTANCES",
                "MAX BATCH",
                "DEADLINE MS",
                "QUEUED P/S",
                "CALLS",
                "MEAN BATCH",
                "MEAN QUEUE MS",
                "TIMEOUTS P/S",
                "OVERLOADS P/S",
                "LATE",
            ],
            [_execution_row(version, figures) for version, figures in execution.items()],
        )
    decisions = guard.get("decisions") or []
    if decisions:
        print("\nlast decisions:")
        for decision in decisions[:5]:
            when = time.strftime("%H:%M:%S", time.localtime(decision["at"]))
            action = f" → {decision['action']}" if decision.get("action") else ""
            print(
                f"  {when} flag v{decision['flag_version']} {decision['kind']}{action}: "
                f"{decision['reason']}"
            )
    cohorts = release.get("cohorts") or []
    if cohorts:
        print()
        print_table(
            ["COHORT", "RULE", "VARIANT", "SERVES"],
            [
                [c.get("name") or "(unnamed)", json.dumps(c["rule"]), c["variant"], c["version"]]
                for c in cohorts
            ],
        )


def _arm_row(name: str, arm: dict[str, Any]) -> list[Any]:
    latency = arm.get("latency") or {}
    accuracy = arm.get("live_accuracy")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return [
        name,
        arm["version"],
        arm["requests"],
        arm["errors"],
        "-" if arm["error_rate"] is None else f"{100 * arm['error_rate']:.2f}",
        arm["fallbacks"],
        ms(latency.get("p50_ms")),
        ms(latency.get("p99_ms")),
        "-" if accuracy is None else f"{accuracy:.3f} ({arm['feedback_total']})",
    ]


def _execution_row(version: str, figures: dict[str, Any]) -> list[Any]:
    config = figures["config"]
    mean_batch, mean_queue = figures.get("mean_batch_size"), figures.get("mean_queue_ms")

    def pair(counts: dict[str, int]) -> str:
        return f"{counts.get('primary', 0)}/{counts.get('shadow', 0)}"

    return [
        version,
        config["instances"],
        config["max_batch_size"] if figures.get("batching") else "1 (no batch dim)",
        f"{config['timeout_ms']:g}",
        pair(figures["queued"]),
        figures["calls"],
        "-" if mean_batch is None else f"{mean_batch:.1f}",
        "-" if mean_queue is None else f"{mean_queue:.2f}",
        pair(figures["timeouts"]),
        pair(figures["overloads"]),
        figures["late_results"],
    ]


def print_audit(entries: list[dict[str, Any]]) -> None:
    rows = []
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["at"]))
        versions = ""
        if entry.get("version_after") is not None:
            versions = f"{entry.get('version_before') or '-'}→{entry['version_after']}"
        changes = len(entry.get("diff") or [])
        rows.append(
            [
                when,
                entry["actor"],
                entry["action"],
                entry["key"],
                versions,
                f"{changes} change(s)" if changes else "",
                entry.get("reason", "")[:80],
            ]
        )
    print_table(["WHEN", "WHO", "ACTION", "FLAG", "VERSION", "DIFF", "WHY"], rows)
