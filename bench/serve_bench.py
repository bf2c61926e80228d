"""Gateway vs. a minimal Litestar + onnxruntime app: same model, same server, same load.

Both servers run under granian with one worker on 127.0.0.1; wrk drives each in turn with
the same V2 request (one held-out digit), alternating the order every round (gateway first in
even rounds, minimal first in odd ones). Single runs on a shared machine vary by 30 % and
more, so what counts is the median over rounds of each round's gateway/minimal ratio, and the
server CPU time per request, which is steadier than requests/s.

    .venv/bin/python -m bench.serve_bench --rounds 5 --duration 8 --out var/bench.json
    .venv/bin/python -m bench.serve_bench --gateway-env GATEWAY_ACCESS_LOG_SAMPLE=0

See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench._load import WRK, LoadResult, write_lua_script
from bench._runs import (
    Run,
    measure,
    medians,
    package_versions,
    print_ratios,
    print_run,
    print_table,
    request_body,
    round_ratios,
    sources_digest,
    wrk_version,
)
from bench._servers import (
    MINIMAL_TARGET,
    Server,
    free_port,
    gateway_server,
    minimal_server,
    unwind_on_signals,
)

GATEWAY, MINIMAL = "gateway", "minimal"
MAX_ROUNDS = 50
MAX_DURATION_S = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serve_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating pairs (default 5)")
    parser.add_argument(
        "--duration", type=float, default=8.0, help="seconds of load per run (default 8)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unmeasured load per server first"
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="digits")
    parser.add_argument(
        "--version", help="the version file the minimal app serves (default: the model's default)"
    )
    parser.add_argument(
        "--gateway-path",
        help="gateway URL path (default /v2/models/<model>/infer, the routed endpoint)",
    )
    parser.add_argument("--digit", type=int, default=0, help="index of the held-out digit sent")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable)",
    )
    parser.add_argument(
        "--gateway-flags",
        type=Path,
        help="release flags directory for the gateway (default: none, an empty directory)",
    )
    parser.add_argument(
        "--strip-shadows",
        action="store_true",
        help="serve a copy of --gateway-flags with every variant's shadows removed (routing only)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="send x-targeting-key from this many skewed users (default: none)",
    )
    parser.add_argument(
        "--beta-share", type=float, default=0.0, help="share of requests with x-ctx-tier: beta"
    )
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `gateway serve` (repeatable; use --gateway-arg=--flag)",
    )
    parser.add_argument(
        "--minimal-env", action="append", default=[], metavar="KEY=VALUE", help="(repeatable)"
    )
    parser.add_argument(
        "--minimal-target",
        default=MINIMAL_TARGET,
        help=f"granian factory of the baseline (default {MINIMAL_TARGET})",
    )
    parser.add_argument(
        "--minimal-working-dir",
        type=Path,
        help="granian --working-dir for --minimal-target (default: the repository root)",
    )
    parser.add_argument(
        "--gateway-stdout",
        type=Path,
        default=Path(os.devnull),
        help="file for the gateway's stdout, i.e. its JSON logs (default /dev/null)",
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="stop starting runs after this long"
    )
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--label", default="", help="a note stored in the JSON result")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}")
    if not 1 <= args.duration <= MAX_DURATION_S or not 0 <= args.warmup <= MAX_DURATION_S:
        parser.error(f"--duration must be 1..{MAX_DURATION_S:.0f}s, --warmup 0..")
    if not 1 <= args.connections <= 1024 or not 1 <= args.threads <= args.connections:
        parser.error("need 1 <= --threads <= --connections <= 1024")
    args.gateway_env = _pairs(parser, args.gateway_env)
    args.minimal_env = _pairs(parser, args.minimal_env)
    return args


def _pairs(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"expected KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def default_version(model_dir: Path) -> str:
    spec = msgspec.json.decode((model_dir / "model.json").read_bytes())
    return str(spec["default_version"])


def check_same_answer(answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Both servers must compute the same outputs, or the comparison is void.

    A gateway that routed the request to another version (a release flag) only gets a
    warning: its answer may then differ, and so may its cost.
    """
    versions = {name: str(answer["model_version"]) for name, answer in answers.items()}
    outputs = {
        name: {o["name"]: o["data"] for o in answer["outputs"]} for name, answer in answers.items()
    }
    gateway, minimal = outputs[GATEWAY], outputs[MINIMAL]
    if versions[GATEWAY] != versions[MINIMAL]:
        print(
            f"warning: the gateway served version {versions[GATEWAY]}, the baseline "
            f"{versions[MINIMAL]}: they do not run the same model",
            file=sys.stderr,
        )
    elif gateway.keys() != minimal.keys() or not all(
        np.allclose(gateway[key], minimal[key], rtol=1e-5, atol=1e-6) for key in gateway
    ):
        raise RuntimeError(f"the servers disagree on the same request: {gateway} vs {minimal}")
    return {"model_version": versions, "outputs": gateway}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unwind_on_signals()
    started = time.monotonic()
    models = args.models.resolve()
    version = args.version or default_version(models / args.model)
    model_file = models / args.model / version / "model.onnx"
    if not model_file.is_file():
        print(f"no {model_file}; run `gateway models build-demo` first", file=sys.stderr)
        return 2
    if not Path(WRK).is_file():
        print(f"{WRK} not found", file=sys.stderr)
        return 2
    body, true_label = request_body(args.digit)
    # Other people edit the gateway while benchmarks run: note which code the servers load.
    sources = sources_digest(Path(__file__).resolve().parent.parent / "gateway")
    infer_path = f"/v2/models/{args.model}/infer"

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        scratch = Path(tmp)
        script = scratch / "post.lua"
        write_lua_script(script, body, args.users, args.beta_share)
        servers = {
            GATEWAY: gateway_server(
                port=free_port(),
                models=models,
                scratch=scratch,
                flags=_flags_for(args.gateway_flags, args.strip_shadows, scratch),
                env=args.gateway_env,
                extra_args=args.gateway_arg,
                path=args.gateway_path or infer_path,
                stdout=args.gateway_stdout,
                stderr=scratch / "gateway.err",
            ),
            MINIMAL: minimal_server(
                port=free_port(),
                model_file=model_file,
                model_name=args.model,
                model_version=version,
                env=args.minimal_env,
                target=args.minimal_target,
                working_dir=args.minimal_working_dir,
                path=infer_path,
                stdout=scratch / "minimal.out",
                stderr=scratch / "minimal.err",
            ),
        }
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        answers = {
            name: server.wait_ready(body, args.ready_timeout) for name, server in servers.items()
        }
        sanity = check_same_answer(answers)
        sanity["true_label"] = true_label
        print(
            f"both servers answer the same for held-out digit #{args.digit} "
            f"(label {sanity['outputs'].get('label')}, true {true_label}); "
            f"gateway on :{servers[GATEWAY].port}, minimal on :{servers[MINIMAL].port}",
            flush=True,
        )
        for server in servers.values():
            if args.warmup > 0:
                _measure(server, script, args, args.warmup)
        runs: list[Run] = []
        for round_index in range(args.rounds):
            order = [GATEWAY, MINIMAL] if round_index % 2 == 0 else [MINIMAL, GATEWAY]
            expected = 2 * (args.duration + args.pause + 2)
            if time.monotonic() - started + expected > args.max_seconds:
                print(f"--max-seconds reached; stopping after {round_index} rounds")
                break
            for name in order:
                time.sleep(args.pause)
                result = _measure(servers[name], script, args, args.duration)
                run = Run(round_index + 1, name, result)
                runs.append(run)
                print_run(run)
        for server in servers.values():
            server.check_alive()

    summary = summarize(runs)
    print_report(runs, summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": environment(args, version, model_file, sources, time.monotonic() - started),
            "sanity": sanity,
            "runs": [run.as_dict() for run in runs],
            "summary": summary,
        }
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        print(f"wrote {args.out}")
    return 0


def _measure(server: Server, script: Path, args: argparse.Namespace, seconds: float) -> LoadResult:
    return measure(
        server, script, seconds=seconds, connections=args.connections, threads=args.threads
    )


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Medians per server, and the medians of the per-round gateway/minimal ratios."""
    pairs = min(sum(run.server == name for run in runs) for name in (GATEWAY, MINIMAL))
    return {
        "rounds": pairs,
        "median": medians(runs, [GATEWAY, MINIMAL]),
        "ratio_gateway_over_minimal": round_ratios(runs, GATEWAY, MINIMAL),
    }


def print_report(runs: list[Run], summary: dict[str, Any]) -> None:
    print_table(runs, summary["median"])
    print()
    print_ratios(
        f"gateway / minimal, median of {summary['rounds']} alternating pairs",
        summary["ratio_gateway_over_minimal"],
    )


def environment(
    args: argparse.Namespace, version: str, model_file: Path, sources: str, elapsed_s: float
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": args.label,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(
            ("granian", "litestar", "msgspec", "onnxruntime", "numpy", "structlog")
        ),
        "wrk": wrk_version(),
        "gateway_sources_sha256": sources,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "model": args.model,
        "version": version,
        "model_file": str(model_file),
        "digit": args.digit,
        "gateway_env": args.gateway_env,
        "gateway_args": args.gateway_arg,
        "gateway_flags": str(args.gateway_flags) if args.gateway_flags else None,
        "strip_shadows": args.strip_shadows,
        "minimal_env": args.minimal_env,
        "minimal_target": args.minimal_target,
        "gateway_stdout": str(args.gateway_stdout),
        "elapsed_s": round(elapsed_s, 1),
        "load_average": os.getloadavg(),
    }


def _flags_for(flags: Path | None, strip_shadows: bool, scratch: Path) -> Path | None:
    """The flags directory the gateway serves: `flags` itself, or a copy of its flag files
    whose variants route only (no `shadow`), to measure routing apart from shadow mode."""
    if flags is None or not strip_shadows:
        return flags.resolve() if flags else None
    copy = scratch / "flags-without-shadows"
    copy.mkdir()
    for source in sorted(flags.glob("*.json")):
        document = json.loads(source.read_text())
        for flag in document.get("flags", {}).values():
            for variant in flag.get("variants", {}).values():
                if isinstance(variant, dict):
                    variant.pop("shadow", None)
        (copy / source.name).write_text(json.dumps(document))
    return copy


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
