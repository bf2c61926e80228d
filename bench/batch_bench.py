"""Dynamic batching: the gateway with and without it, and MLServer with adaptive batching.

Three servers on 127.0.0.1 serve the same model.onnx (by default the demo's heavier version 5)
and get the same load in turn: wrk with 64 connections, each request one held-out digit (one
row) to `/v2/models/digits/versions/5/infer`.

- `batching`: the gateway with its executor's batching, configured through the environment
  (`GATEWAY_EXECUTION_MAX_BATCH_SIZE`, `..._MAX_QUEUE_DELAY_MS`, `..._INSTANCES`, and
  `..._MAX_QUEUE`, `GATEWAY_INFERENCE_TIMEOUT_MS` when given);
- `no-batching`: the same gateway with `GATEWAY_EXECUTION_MAX_BATCH_SIZE=1`;
- `mlserver`: MLServer 1.7 (its own venv, bench/mlserver/setup.sh) with adaptive batching set
  the same way (`max_batch_size`, `max_batch_time`), through bench/mlserver/onnx_runtime.py.

The order rotates every round, and what counts is the median of the per-round ratios
(batching / no-batching, batching / MLServer) beside the server CPU time per request.

    bash bench/mlserver/setup.sh
    .venv/bin/python -m bench.batch_bench --rounds 5 --duration 8 --out var/bench/batch.json

See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from bench._load import WRK, write_lua_script
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
    Server,
    free_port,
    gateway_server,
    mlserver_server,
    unwind_on_signals,
)

BATCHING, UNBATCHED, MLSERVER = "batching", "no-batching", "mlserver"
SERVERS = (BATCHING, UNBATCHED, MLSERVER)
RATIOS = ((BATCHING, UNBATCHED), (BATCHING, MLSERVER), (UNBATCHED, MLSERVER))
MAX_ROUNDS = 50
MAX_DURATION_S = 120.0
NAME_WIDTH = 11
STATS_MARKER = "BATCH_STATS "  # as bench/mlserver/onnx_runtime.py prints it
REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="rotations of the three servers")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per run")
    parser.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of unmeasured load per server first"
    )
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--version", default="5", help="the ONNX version all three serve (5)")
    parser.add_argument("--digit", type=int, default=0, help="index of the held-out digit sent")
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="both servers' batch limit (32)"
    )
    parser.add_argument(
        "--max-batch-time-ms",
        type=float,
        default=2.0,
        help="how long both servers wait to fill a batch, ms (2)",
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="gateway executor instances per version (1)"
    )
    parser.add_argument("--max-queue", type=int, help="gateway executor queue bound (its default)")
    parser.add_argument("--timeout-ms", type=int, help="gateway inference deadline (its default)")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for both gateways (repeatable)",
    )
    parser.add_argument(
        "--gateway-stdout",
        type=Path,
        default=Path(os.devnull),
        help="file for the gateways' stdout, i.e. their JSON logs (default /dev/null)",
    )
    parser.add_argument(
        "--mlserver-venv",
        type=Path,
        default=REPO_ROOT / "var" / "bench" / "mlserver-venv",
        help="MLServer's venv (bench/mlserver/setup.sh makes it)",
    )
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=1,
        help="MLServer parallel_workers: 1 (default) runs inference in one worker process "
        "beside the HTTP process; 0 runs it on the HTTP event loop",
    )
    parser.add_argument(
        "--mlserver-metrics", action="store_true", help="keep MLServer's metrics server on"
    )
    parser.add_argument(
        "--servers",
        type=lambda text: [part for part in text.split(",") if part],
        default=list(SERVERS),
        help=f"which of {','.join(SERVERS)} to run (default all)",
    )
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="stop starting rounds after this long"
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
    if args.max_batch_size < 1 or not 0 <= args.max_batch_time_ms <= 1000:
        parser.error("need --max-batch-size >= 1 and --max-batch-time-ms in 0..1000")
    if args.instances < 1 or args.mlserver_workers < 0:
        parser.error("need --instances >= 1 and --mlserver-workers >= 0")
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown or not args.servers:
        parser.error(f"--servers takes some of {','.join(SERVERS)}, not {unknown}")
    args.gateway_env = _pairs(parser, args.gateway_env)
    return args


def _pairs(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"expected KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def execution_env(args: argparse.Namespace, max_batch_size: int) -> dict[str, str]:
    """The gateway executor's settings for one of the two gateways."""
    env = {
        "GATEWAY_EXECUTION_MAX_BATCH_SIZE": str(max_batch_size),
        "GATEWAY_EXECUTION_MAX_QUEUE_DELAY_MS": f"{args.max_batch_time_ms:g}",
        "GATEWAY_EXECUTION_INSTANCES": str(args.instances),
    }
    if args.max_queue is not None:
        env["GATEWAY_EXECUTION_MAX_QUEUE"] = str(args.max_queue)
    if args.timeout_ms is not None:
        env["GATEWAY_INFERENCE_TIMEOUT_MS"] = str(args.timeout_ms)
    return {**env, **args.gateway_env}


def single_version_repository(models: Path, model: str, version: str, scratch: Path) -> Path:
    """A repository holding only `model`/`version` (as its default), so that the gateways
    load exactly the one model MLServer loads."""
    source = models / model / version
    root = scratch / "models"
    shutil.copytree(source, root / model / version)
    spec = {"default_version": version, "description": f"{model} {version} alone, for batch_bench"}
    (root / model / "model.json").write_bytes(msgspec.json.encode(spec))
    return root


def build_servers(args: argparse.Namespace, scratch: Path, model_file: Path) -> dict[str, Server]:
    path = f"/v2/models/{args.model}/versions/{args.version}/infer"
    models = single_version_repository(args.models.resolve(), args.model, args.version, scratch)
    servers: dict[str, Server] = {}
    for name, batch_size in ((BATCHING, args.max_batch_size), (UNBATCHED, 1)):
        if name not in args.servers:
            continue
        own = scratch / name
        own.mkdir()
        servers[name] = gateway_server(
            name=name,
            port=free_port(),
            models=models,
            scratch=own,
            flags=None,
            env=execution_env(args, batch_size),
            extra_args=[],
            path=path,
            stdout=args.gateway_stdout,
            stderr=own / "gateway.err",
        )
    if MLSERVER in args.servers:
        servers[MLSERVER] = mlserver_server(
            venv=args.mlserver_venv.resolve(),
            port=free_port(),
            grpc_port=free_port(),
            model_file=model_file,
            model_name=args.model,
            model_version=args.version,
            max_batch_size=args.max_batch_size,
            max_batch_time_s=args.max_batch_time_ms / 1000,
            parallel_workers=args.mlserver_workers,
            metrics=args.mlserver_metrics,
            scratch=scratch,
            path=path,
            stdout=scratch / "mlserver.out",
            stderr=scratch / "mlserver.err",
        )
    return servers


def check_same_answer(answers: dict[str, dict[str, Any]], version: str) -> dict[str, Any]:
    """Every server answers as version `version` with the same outputs, or the run is void."""
    outputs = {
        name: {o["name"]: np.asarray(o["data"]).ravel() for o in answer["outputs"]}
        for name, answer in answers.items()
    }
    for name, answer in answers.items():
        if str(answer.get("model_version")) != version:
            raise RuntimeError(f"{name} answered as version {answer.get('model_version')}")
    reference_name, reference = next(iter(outputs.items()))
    for name, got in outputs.items():
        if got.keys() != reference.keys() or not all(
            np.allclose(got[key], reference[key], rtol=1e-5, atol=1e-6) for key in reference
        ):
            raise RuntimeError(
                f"{name} and {reference_name} disagree on the same request: {got} vs {reference}"
            )
    return {
        name: {key: value.tolist() for key, value in got.items()} for name, got in outputs.items()
    }


def batch_stats(stdout: Path) -> dict[str, int] | None:
    """The last rows/calls count bench/mlserver/onnx_runtime.py printed: how MLServer batched."""
    try:
        lines = stdout.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(STATS_MARKER):
            stats = msgspec.json.decode(line[len(STATS_MARKER) :], type=dict[str, int])
            return {"rows": stats["rows"], "calls": stats["calls"]}
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unwind_on_signals()
    started = time.monotonic()
    model_file = (args.models / args.model / args.version / "model.onnx").resolve()
    if not model_file.is_file():
        print(f"no {model_file}; run `gateway models build-demo` first", file=sys.stderr)
        return 2
    if not Path(WRK).is_file():
        print(f"{WRK} not found", file=sys.stderr)
        return 2
    body, true_label = request_body(args.digit)
    sources = sources_digest(REPO_ROOT / "gateway")

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        scratch = Path(tmp)
        script = scratch / "post.lua"
        write_lua_script(script, body)
        servers = build_servers(args, scratch, model_file)
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        answers = {
            name: server.wait_ready(body, args.ready_timeout) for name, server in servers.items()
        }
        outputs = check_same_answer(answers, args.version)
        print(
            f"all {len(servers)} servers answer the same for held-out digit #{args.digit} "
            f"(true label {true_label}): "
            + ", ".join(f"{name} on :{server.port}" for name, server in servers.items()),
            flush=True,
        )
        names = list(servers)
        if args.warmup > 0:
            for server in servers.values():
                _measure(server, script, args, args.warmup)
        runs: list[Run] = []
        for round_index in range(args.rounds):
            # Rotate the order, so each server runs first, second and third alike.
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            expected = len(order) * (args.duration + args.pause + 2)
            if time.monotonic() - started + expected > args.max_seconds:
                print(f"--max-seconds reached; stopping after {round_index} rounds")
                break
            for name in order:
                time.sleep(args.pause)
                run = Run(
                    round_index + 1, name, _measure(servers[name], script, args, args.duration)
                )
                runs.append(run)
                print_run(run, NAME_WIDTH)
        for server in servers.values():
            server.check_alive()
        mlserver_batches = batch_stats(scratch / "mlserver.out") if MLSERVER in servers else None

    summary = summarize(runs, names)
    if mlserver_batches is not None:
        summary["mlserver_batches"] = mlserver_batches
        calls = max(mlserver_batches["calls"], 1)
        print(
            f"\nMLServer's runtime ran {mlserver_batches['rows']} rows in "
            f"{mlserver_batches['calls']} calls: {mlserver_batches['rows'] / calls:.1f} rows a "
            "call (warm-up and checks included)"
        )
    print_report(runs, summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": environment(args, model_file, sources, time.monotonic() - started),
            "sanity": {"true_label": true_label, "outputs": outputs},
            "runs": [run.as_dict() for run in runs],
            "summary": summary,
        }
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        print(f"wrote {args.out}")
    return 0


def _measure(server: Server, script: Path, args: argparse.Namespace, seconds: float) -> Any:
    return measure(
        server, script, seconds=seconds, connections=args.connections, threads=args.threads
    )


def summarize(runs: list[Run], names: Sequence[str]) -> dict[str, Any]:
    """Medians per server, and medians of the per-round ratios between them."""
    ratios = {
        f"{top}/{bottom}": round_ratios(runs, top, bottom)
        for top, bottom in RATIOS
        if top in names and bottom in names
    }
    return {
        "rounds": len({run.round for run in runs}),
        "median": medians(runs, names),
        "ratios": ratios,
    }


def print_report(runs: list[Run], summary: dict[str, Any]) -> None:
    print_table(runs, summary["median"], NAME_WIDTH)
    for pair, ratios in summary["ratios"].items():
        print()
        print_ratios(f"{pair}, median of {summary['rounds']} rounds", ratios)


def environment(
    args: argparse.Namespace, model_file: Path, sources: str, elapsed_s: float
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": args.label,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(("granian", "litestar", "msgspec", "onnxruntime", "numpy")),
        "mlserver_venv": str(args.mlserver_venv),
        "wrk": wrk_version(),
        "gateway_sources_sha256": sources,
        "servers": args.servers,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "model": args.model,
        "version": args.version,
        "model_file": str(model_file),
        "digit": args.digit,
        "max_batch_size": args.max_batch_size,
        "max_batch_time_ms": args.max_batch_time_ms,
        "gateway_env_batching": execution_env(args, args.max_batch_size),
        "gateway_env_no_batching": execution_env(args, 1),
        "mlserver_workers": args.mlserver_workers,
        "mlserver_metrics": args.mlserver_metrics,
        "elapsed_s": round(elapsed_s, 1),
        "load_average": os.getloadavg(),
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
