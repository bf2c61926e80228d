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
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench._load import WRK, LoadResult, run_wrk, write_lua_script
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


@dataclass(frozen=True, slots=True)
class Run:
    round: int
    server: str
    result: LoadResult

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "round": self.round,
            "server": self.server,
            "requests": r.wrk.requests,
            "duration_s": r.wrk.duration_us / 1e6,
            "requests_per_s": r.requests_per_s,
            "p50_ms": r.wrk.p50_us / 1000,
            "p90_ms": r.wrk.p90_us / 1000,
            "p99_ms": r.wrk.p99_us / 1000,
            "max_ms": r.wrk.max_us / 1000,
            "server_cpu_s": r.server_cpu_s,
            "server_cpu_us_per_request": r.server_cpu_us_per_request,
            "wrk_cpu_us_per_request": r.client_cpu_us_per_request,
            "host_busy": r.host_busy,
            "other_cpus": r.other_cpus,
            "errors": r.wrk.errors,
            "status_errors": r.wrk.status_errors,
        }


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


def request_body(digit: int) -> tuple[bytes, int]:
    """A V2 request for one held-out digit (1 x 64 FP32 pixels), and its true label."""
    from gateway.demo.digits import held_out_digits

    pixels, labels = held_out_digits()
    row = pixels[digit]
    body = {
        "inputs": [
            {
                "name": "pixels",
                "shape": [1, int(row.size)],
                "datatype": "FP32",
                "data": [float(v) for v in row],
            }
        ]
    }
    return msgspec.json.encode(body), int(labels[digit])


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
                _print_run(run)
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
    server.check_alive()
    result = run_wrk(
        server.url,
        script,
        duration_s=seconds,
        connections=args.connections,
        threads=args.threads,
        server_pid=server.pid,
    )
    server.check_alive()
    if result.wrk.errors:
        print(
            f"warning: {server.name}: {result.wrk.errors} errors "
            f"({result.wrk.status_errors} non-2xx) in {result.wrk.requests} requests",
            file=sys.stderr,
        )
    return result


def _print_run(run: Run) -> None:
    r = run.result
    print(
        f"  round {run.round} {run.server:8} {r.requests_per_s:8.0f} req/s  "
        f"p50 {r.wrk.p50_us / 1000:6.2f} ms  p99 {r.wrk.p99_us / 1000:6.2f} ms  "
        f"cpu {r.server_cpu_us_per_request:6.1f} µs/req  host busy {r.host_busy:4.0%}  "
        f"others {r.other_cpus:4.2f} cores",
        flush=True,
    )


_METRICS = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Medians per server, and the medians of the per-round gateway/minimal ratios."""
    by_server: dict[str, list[dict[str, Any]]] = {GATEWAY: [], MINIMAL: []}
    for run in runs:
        by_server[run.server].append(run.as_dict())
    medians = {
        server: {
            metric: statistics.median(r[metric] for r in rows) if rows else None
            for metric in (*_METRICS, "wrk_cpu_us_per_request", "host_busy", "other_cpus")
        }
        for server, rows in by_server.items()
    }
    pairs = list(zip(by_server[GATEWAY], by_server[MINIMAL], strict=False))
    ratios: dict[str, Any] = {}
    for metric in _METRICS:
        per_round = [g[metric] / m[metric] for g, m in pairs if m[metric]]
        ratios[metric] = {
            "median": statistics.median(per_round) if per_round else None,
            "min": min(per_round, default=None),
            "max": max(per_round, default=None),
            "per_round": per_round,
        }
    return {"rounds": len(pairs), "median": medians, "ratio_gateway_over_minimal": ratios}


def print_report(runs: list[Run], summary: dict[str, Any]) -> None:
    header = (
        f"{'round':>5}  {'server':8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu µs/req':>10} {'wrk µs/req':>10} {'busy':>5} {'others':>6} {'errors':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for run in sorted(runs, key=lambda run: (run.round, run.server)):
        r = run.result
        print(
            f"{run.round:>5}  {run.server:8} {r.requests_per_s:8.0f} {r.wrk.p50_us / 1000:7.2f} "
            f"{r.wrk.p99_us / 1000:7.2f} {r.server_cpu_us_per_request:10.1f} "
            f"{r.client_cpu_us_per_request:10.1f} {r.host_busy:5.0%} {r.other_cpus:6.2f} "
            f"{r.wrk.errors:6d}"
        )
    print("-" * len(header))
    for server, medians in summary["median"].items():
        if medians["requests_per_s"] is None:
            continue
        print(
            f"{'med':>5}  {server:8} {medians['requests_per_s']:8.0f} {medians['p50_ms']:7.2f} "
            f"{medians['p99_ms']:7.2f} {medians['server_cpu_us_per_request']:10.1f} "
            f"{medians['wrk_cpu_us_per_request']:10.1f} {medians['host_busy']:5.0%} "
            f"{medians['other_cpus']:6.2f}"
        )
    ratios = summary["ratio_gateway_over_minimal"]
    print()
    print(f"gateway / minimal, median of {summary['rounds']} alternating pairs (min..max):")
    labels = {
        "requests_per_s": "requests/s",
        "server_cpu_us_per_request": "CPU/request",
        "p50_ms": "p50",
        "p99_ms": "p99",
    }
    for metric, label in labels.items():
        ratio = ratios[metric]
        if ratio["median"] is not None:
            print(f"  {label:12} {ratio['median']:.3f}  ({ratio['min']:.3f}..{ratio['max']:.3f})")


def sources_digest(package: Path) -> str:
    """sha256 over the gateway's .py files (path and content): which code was measured."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def environment(
    args: argparse.Namespace, version: str, model_file: Path, sources: str, elapsed_s: float
) -> dict[str, Any]:
    def package(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    wrk_version = subprocess.run(
        [WRK, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout.splitlines()[:1]
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": args.label,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {
            name: package(name)
            for name in ("granian", "litestar", "msgspec", "onnxruntime", "numpy", "structlog")
        },
        "wrk": wrk_version[0] if wrk_version else None,
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
