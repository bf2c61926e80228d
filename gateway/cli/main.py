"""`gateway`: serve the gateway and manage its model repository."""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.cli import admin as admin_commands
from gateway.cli import loadgen as loadgen_commands
from gateway.cli import models as models_commands
from gateway.cli import shadow as shadow_commands
from gateway.cli.client import DEFAULT_TOKEN_FILE
from gateway.observability.logging import configure_logging
from gateway.settings import PREFIX, Settings


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "models_dir": args.models,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "access_log_sample": args.access_log_sample,
    }
    try:
        settings = Settings.from_mapping(os.environ, **overrides)
    except ValueError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 2
    environ = {
        PREFIX + name.upper(): str(value) for name, value in overrides.items() if value is not None
    }
    if settings.workers > 1:
        environ[PREFIX + "METRICS_DIR"] = str(_fresh_metrics_dir(settings))
    busy = _port_taken(settings.host, settings.port)
    if busy is not None:
        print(
            f"gateway serve: cannot listen on {settings.host}:{settings.port}: {busy}",
            file=sys.stderr,
        )
        return 2
    if not settings.admin_tokens and settings.admin_tokens_file is None:
        environ[PREFIX + "ADMIN_TOKENS"] = "local:release-manager:" + _local_token()
    print(
        f"Release Gateway on http://{settings.host}:{settings.port} "
        f"(models: {settings.models_dir}, workers: {settings.workers})",
        file=sys.stderr,
    )
    serve(settings, environ)
    return 0


def _port_taken(host: str, port: int) -> str | None:
    """Why the address cannot be listened on, or None. granian listens with SO_REUSEPORT, so
    a second gateway on a taken port would start and silently share the traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR so that a previous run's connections in TIME_WAIT do not count as a
        # listener; a live listener still refuses the bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _fresh_metrics_dir(settings: Settings) -> Path:
    """The directory the workers share their metrics through, emptied of an earlier run's."""
    directory = settings.metrics_dir or settings.state_path.parent / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.msgpack"):
        stale.unlink(missing_ok=True)
    return directory.resolve()


def _local_token() -> str:
    """A release-manager token for the local user, kept in a 0600 file across restarts.

    Admin is never open without a token; this one is only printed as a path, never logged.
    """
    path = DEFAULT_TOKEN_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    print(
        f"No admin token configured: generated a release-manager token in {path}.\n"
        f"  The gateway CLI reads it from there; for curl: "
        f'-H "Authorization: Bearer $(cat {path})"',
        file=sys.stderr,
    )
    return path.read_text().strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the models over the Open Inference Protocol")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--models", help="model repository directory (default ./models)")
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--access-log-sample", type=float, help="share of successful requests logged (0..1)"
    )
    serve.set_defaults(handler=_serve)

    models_commands.add_parser(commands)
    admin_commands.add_parsers(commands)
    loadgen_commands.add_parser(commands)
    shadow_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        # Commands print their results on stdout; their logs (warnings and up) go to stderr.
        configure_logging("console", "warning", stream=sys.stderr, cache=False)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
