"""`gateway shadow report|disagreements`: on-call's review of shadow comparisons."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gateway.cli.admin import _common, _with_client
from gateway.cli.client import EXIT_OK, AdminClient
from gateway.cli.table import format_table

NO_COHORT = "(rest)"


def _query(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "since": args.since,
        "until": args.until,
        "primary": args.primary,
        "shadow": args.shadow,
    }


def _report(args: argparse.Namespace, client: AdminClient) -> int:
    reply = client.call("GET", f"/admin/shadow/{args.model}", query=_query(args))
    if args.json:
        print(json.dumps(reply.body, indent=2))
    else:
        print(format_report(reply.body))
    return EXIT_OK


def _disagreements(args: argparse.Namespace, client: AdminClient) -> int:
    query = _query(args) | {"limit": args.limit}
    reply = client.call("GET", f"/admin/shadow/{args.model}/disagreements", query=query)
    if args.json:
        print(json.dumps(reply.body, indent=2))
    else:
        print(format_disagreements(reply.body))
    return EXIT_OK


def format_report(summary: dict[str, Any]) -> str:
    """The summary as a table: one line per pair, then one per cohort of the pair."""
    since, until = summary.get("since"), summary.get("until")
    header = (
        f"model {summary['model']}  from {_when(since) if since else 'the oldest record'}  "
        f"to {_when(until) if until else 'now'}"
    )
    pairs = summary.get("pairs") or []
    if not pairs:
        return header + "\nno shadow comparisons in this range"
    rows: list[list[str]] = []
    for pair in pairs:
        rows.append(_row(pair["primary"], pair["shadow"], "all", pair["stats"]))
        cohorts = pair.get("cohorts") or []
        if len(cohorts) > 1 or (cohorts and cohorts[0]["cohort"]):
            for cohort in cohorts:
                rows.append(_row("", "", cohort["cohort"] or NO_COHORT, cohort["stats"]))
    table = format_table(
        [
            "PRIMARY",
            "SHADOW",
            "COHORT",
            "COUNT",
            "AGREE",
            "95% CI",
            "DIFF p50/p99/max",
            "PRIMARY p50/p99 ms",
            "SHADOW p50/p99 ms",
            "ERRORS p/s/timeout",
        ],
        rows,
    )
    accuracy = [
        [pair["primary"], pair["shadow"], *_accuracy(pair["live_accuracy"])]
        for pair in pairs
        if pair.get("live_accuracy")
    ]
    if not accuracy:
        return f"{header}\n{table}"
    live = format_table(["PRIMARY", "SHADOW", "LABELLED", "PRIMARY ACC", "SHADOW ACC"], accuracy)
    return f"{header}\n{table}\n\nlive accuracy from feedback, same labelled requests:\n{live}"


def _accuracy(live: dict[str, Any]) -> list[str]:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    return [str(live["labelled"]), share(live["primary"]), share(live["shadow"])]


def _row(primary: str, shadow: str, cohort: str, stats: dict[str, Any]) -> list[str]:
    agreement = stats.get("agreement")
    diff = stats.get("diff")
    latency = stats["latency"]
    errors = stats["errors"]
    return [
        primary,
        shadow,
        cohort,
        str(stats["count"]),
        "-" if agreement is None else f"{agreement['rate']:.1%}",
        "-" if agreement is None else f"{agreement['low']:.1%}-{agreement['high']:.1%}",
        "-" if diff is None else f"{diff['p50']:.3f}/{diff['p99']:.3f}/{diff['max']:.3f}",
        _latency(latency["primary"]),
        _latency(latency["shadow"]),
        f"{errors['primary']}/{errors['shadow']}/{errors['timeout']}",
    ]


def _latency(side: dict[str, Any]) -> str:
    if side.get("p50_ms") is None:
        return "-"
    return f"{side['p50_ms']:.2f}/{side['p99_ms']:.2f}"


def format_disagreements(body: dict[str, Any]) -> str:
    records = body.get("disagreements") or []
    if not records:
        return f"model {body['model']}: no disagreements in this range"
    rows = []
    for record in records:
        primary = (record.get("primary_output") or {}).get("classes")
        shadow = (record.get("shadow_output") or {}).get("classes")
        diff = record.get("max_abs_diff")
        rows.append(
            [
                _when(record["at"]),
                record["request_id"],
                f"{record['primary_version']}->{record['shadow_version']}",
                record.get("cohort") or "-",
                _classes(primary),
                _classes(shadow),
                "-" if diff is None else f"{diff:.3f}",
                "yes" if record.get("inputs") else "no",
            ]
        )
    return format_table(
        ["WHEN", "REQUEST", "PAIR", "COHORT", "PRIMARY", "SHADOW", "DIFF", "INPUTS"], rows
    )


def _classes(classes: list[str] | None, most: int = 8) -> str:
    if classes is None:
        return "-"
    shown = ",".join(classes[:most])
    return shown + (f",...(+{len(classes) - most})" if len(classes) > most else "")


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model")
    parser.add_argument(
        "--since", help="start: epoch seconds, ISO 8601, or an age such as 15m, 2h, 7d"
    )
    parser.add_argument("--until", help="end (default now), in the same forms")
    parser.add_argument("--primary", help="only this primary version")
    parser.add_argument("--shadow", help="only this shadow version")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    _common(parser)


def add_parsers(commands: Any) -> None:
    shadow = commands.add_parser("shadow", help="review shadow comparisons")
    ops = shadow.add_subparsers(dest="shadow_command", required=True)
    report = ops.add_parser(
        "report",
        help="agreement, differences, latency and errors per (primary, shadow) pair and cohort",
    )
    _filters(report)
    report.set_defaults(handler=_with_client(_report))
    disagreements = ops.add_parser(
        "disagreements", help="requests where the shadow disagreed, newest first"
    )
    _filters(disagreements)
    disagreements.add_argument("--limit", type=int, default=20)
    disagreements.set_defaults(handler=_with_client(_disagreements))
