"""`gateway release|flags|audit`: release-manager operations against a running gateway."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli.client import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    AdminClient,
    CommandError,
    resolve_token,
)
from gateway.cli.render import print_audit, print_release
from gateway.errors import GatewayError

Handler = Callable[[argparse.Namespace, AdminClient], int]


def _status(args: argparse.Namespace, client: AdminClient) -> int:
    reply = client.call("GET", f"/admin/releases/{args.model}")
    if args.json:
        print(json.dumps(reply.body, indent=2))
    else:
        print_release(reply.body)
    return EXIT_OK


def _operation(path: str, body: Callable[[argparse.Namespace], dict[str, Any]]) -> Handler:
    def run(args: argparse.Namespace, client: AdminClient) -> int:
        payload = body(args) | {"reason": args.reason}
        headers = {"if-match": f'"{args.if_match}"'} if args.if_match else None
        reply = client.call(
            "POST", f"/admin/releases/{args.model}/{path}", payload, headers=headers
        )
        print_release(reply.body)
        return EXIT_OK

    return run


def _cohort_remove(args: argparse.Namespace, client: AdminClient) -> int:
    reply = client.call(
        "DELETE", f"/admin/releases/{args.model}/cohorts/{args.name}", query={"reason": args.reason}
    )
    print_release(reply.body)
    return EXIT_OK


def _steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(
            f"--steps {text!r}: use comma separated percentages", EXIT_USAGE
        ) from None


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        raise CommandError(f"--bake {text!r}: use seconds, or 90s, 5m, 1h", EXIT_USAGE) from None


def _json_argument(text: str) -> Any:
    try:
        return json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (OSError, ValueError) as exc:
        raise CommandError(f"not valid JSON: {exc}", EXIT_USAGE) from None


def _flags_list(args: argparse.Namespace, client: AdminClient) -> int:
    from gateway.cli.table import print_table

    flags = client.call("GET", "/admin/flags").body["flags"]
    print_table(
        ["KEY", "MODEL", "VERSION", "UPDATED BY"],
        [[f["key"], f.get("model", ""), f["version"], f.get("updated_by", "")] for f in flags],
    )
    return EXIT_OK


def _flags_get(args: argparse.Namespace, client: AdminClient) -> int:
    reply = client.call("GET", f"/admin/flags/{args.key}")
    print(json.dumps(reply.body, indent=2))
    print(f"ETag: {reply.headers.get('etag', reply.headers.get('ETag', ''))}", file=sys.stderr)
    return EXIT_OK


def _flags_put(args: argparse.Namespace, client: AdminClient) -> int:
    flag = _json_argument("@" + args.file)
    headers = {"if-match": f'"{args.if_match}"'} if args.if_match else None
    reply = client.call(
        "PUT", f"/admin/flags/{args.key}", flag, query={"reason": args.reason}, headers=headers
    )
    print(f"{args.key}: now at {reply.headers.get('etag', reply.headers.get('ETag', ''))}")
    return EXIT_OK


def _audit(args: argparse.Namespace, client: AdminClient) -> int:
    entries = client.call("GET", "/admin/audit", query={"model": args.model, "limit": args.limit})
    if args.json:
        print(json.dumps(entries.body, indent=2))
    else:
        print_audit(entries.body["entries"])
    return EXIT_OK


def _with_client(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        client = AdminClient(args.url, resolve_token(args.token_file))
        try:
            return handler(args, client)
        except CommandError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return exc.code

    return run


def _common(parser: argparse.ArgumentParser, *, change: bool = False) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"), help="gateway URL"
    )
    parser.add_argument(
        "--token-file", help="file holding the token (else $GATEWAY_TOKEN, else var/admin-token)"
    )
    if change:
        parser.add_argument("--reason", default="", help="why: kept in the audit log")
        parser.add_argument(
            "--if-match", type=int, help="refuse unless the flag is at this version"
        )


def add_parsers(commands: Any) -> None:
    _add_release_parsers(commands)
    _add_flags_parsers(commands)
    audit = commands.add_parser("audit", help="who changed what, when and why")
    audit.add_argument("--model")
    audit.add_argument("--limit", type=int, default=20)
    audit.add_argument("--json", action="store_true")
    _common(audit)
    audit.set_defaults(handler=_with_client(_audit))


def _add_release_parsers(commands: Any) -> None:
    release = commands.add_parser("release", help="see and change a model's release")
    ops = release.add_subparsers(dest="release_command", required=True)

    status = ops.add_parser("status", help="variants, split, cohorts, shadows, flag version")
    status.add_argument("model")
    status.add_argument("--json", action="store_true")
    _common(status)
    status.set_defaults(handler=_with_client(_status))

    rollout = ops.add_parser("rollout", help="send a percentage of traffic to a candidate version")
    rollout.add_argument("model")
    rollout.add_argument("--version", required=True)
    rollout.add_argument("--percent", type=int, required=True)
    rollout.add_argument("--force", action="store_true", help="override the offline gate (audited)")
    _common(rollout, change=True)
    rollout.set_defaults(
        handler=_with_client(
            _operation(
                "rollout",
                lambda a: {"version": a.version, "percent": a.percent, "force": a.force},
            )
        )
    )

    cohort = ops.add_parser("cohort", help="add or remove a cohort rule")
    cohort_ops = cohort.add_subparsers(dest="cohort_command", required=True)
    add = cohort_ops.add_parser("add", help="send requests matching a JsonLogic rule to a version")
    add.add_argument("model")
    add.add_argument("name")
    add.add_argument(
        "--rule", required=True, help='JsonLogic, e.g. \'{"in": [{"var": "tier"}, ["beta"]]}\''
    )
    add.add_argument("--version", required=True)
    _common(add, change=True)
    add.set_defaults(
        handler=_with_client(
            _operation(
                "cohorts",
                lambda a: {"name": a.name, "rule": _json_argument(a.rule), "version": a.version},
            )
        )
    )
    remove = cohort_ops.add_parser("remove", help="remove a cohort rule by name")
    remove.add_argument("model")
    remove.add_argument("name")
    _common(remove, change=True)
    remove.set_defaults(handler=_with_client(_cohort_remove))

    shadow = ops.add_parser("shadow", help="shadow versions behind the baseline (none: stop)")
    shadow.add_argument("model")
    shadow.add_argument("--versions", default="", help="comma separated; empty stops shadowing")
    shadow.add_argument("--percent", type=float, default=100.0, help="sample percentage")
    _common(shadow, change=True)
    shadow.set_defaults(
        handler=_with_client(
            _operation(
                "shadow",
                lambda a: {
                    "versions": [v for v in a.versions.split(",") if v],
                    "percent": a.percent,
                },
            )
        )
    )

    ramp = ops.add_parser("ramp", help="staged ramp: each step advances when healthy and baked")
    ramp.add_argument("model")
    ramp.add_argument("--version", required=True, help="the candidate version to ramp")
    ramp.add_argument("--steps", default="1,5,25,50,100", help="percentages, ending at 100")
    ramp.add_argument("--bake", default="60s", help="bake time per step: 90, 90s, 5m, 1h")
    ramp.add_argument("--force", action="store_true", help="override the offline gate (audited)")
    _common(ramp, change=True)
    ramp.set_defaults(
        handler=_with_client(
            _operation(
                "ramp",
                lambda a: {
                    "version": a.version,
                    "steps": _steps(a.steps),
                    "bake_s": _duration(a.bake),
                    "force": a.force,
                },
            )
        )
    )
    # Operations that take only the model (and a reason): command, endpoint, help.
    for name, endpoint, text in [
        ("pause", "ramp/pause", "pause the ramp where it is"),
        ("resume", "ramp/resume", "resume the ramp (the step's bake restarts)"),
        ("abort", "ramp/abort", "abort the ramp and roll back to the baseline"),
        ("promote", "promote", "make the candidate the baseline"),
        ("rollback", "rollback", "send all traffic to the baseline"),
        ("disable", "disable", "kill switch: everything to the baseline, flag DISABLED"),
        ("enable", "enable", "re-enable a disabled release flag"),
    ]:
        command = ops.add_parser(name, help=text)
        command.add_argument("model")
        _common(command, change=True)
        command.set_defaults(handler=_with_client(_operation(endpoint, lambda _a: {})))


def _add_flags_parsers(commands: Any) -> None:
    flags = commands.add_parser("flags", help="read, replace and validate flag definitions")
    flag_ops = flags.add_subparsers(dest="flags_command", required=True)
    listing = flag_ops.add_parser("list", help="flag keys with their versions")
    _common(listing)
    listing.set_defaults(handler=_with_client(_flags_list))
    get = flag_ops.add_parser("get", help="print a flag (flagd flag object)")
    get.add_argument("key")
    _common(get)
    get.set_defaults(handler=_with_client(_flags_get))
    put = flag_ops.add_parser("put", help="replace a flag from a JSON file")
    put.add_argument("key")
    put.add_argument("file")
    _common(put, change=True)
    put.set_defaults(handler=_with_client(_flags_put))
    validate = flag_ops.add_parser(
        "validate", help="check a flag file offline against a model repository"
    )
    validate.add_argument("file")
    validate.add_argument("--models", default="models", help="model repository (default ./models)")
    validate.set_defaults(handler=_flags_validate)


def _flags_validate(args: argparse.Namespace) -> int:
    from gateway.flags.validation import validate_document
    from gateway.flags.versions import registry_versions
    from gateway.repository import ModelRegistry
    from gateway.runtimes import RuntimeOptions
    from gateway.state import FlagFileError, parse_flag_file

    try:
        doc = parse_flag_file(Path(args.file))
    except FlagFileError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    registry = ModelRegistry.load(Path(args.models), RuntimeOptions())
    try:
        releases = validate_document(doc.raw, registry_versions(registry))
    except GatewayError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    for key, release in releases.items():
        print(f"{key}: valid release of model {release.model!r}")
    return EXIT_OK
