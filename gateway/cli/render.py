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
