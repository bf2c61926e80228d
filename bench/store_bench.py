"""What the Redis store costs the request path: the gateway with its embedded store against the
same gateway with `GATEWAY_STORE=redis://...`.

Both gateways serve the demo release as committed (`flags/`: a 10 % split, a cohort rule and
10 % shadow traffic, so predictions, window figures and comparison records all flow to the
store) under the same load: wrk with 32 connections, requests from 10,000 Zipf-skewed users
(5 % of them `x-ctx-tier: beta`) to the routed `/v2/models/digits/infer`. The Redis is the
bench's own `redis-server` on a free port, without persistence. Rounds alternate the order;
what counts is the median of the per-round ratios redis / embedded, of requests/s and of the
gateway's CPU per request (Redis's own CPU per request is reported beside it).

    .venv/bin/python -m bench.store_bench --rounds 6 --duration 6 --out var/bench/store.json

The issue's targets: requests/s ratio >= 0.95, CPU per request ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgspec

from bench._load import WRK, tree_cpu_seconds, write_lua_script
from bench._runs import (
    Run,
    measure,
    medians,
    print_ratios,
    print_run,
    print_table,
    request_body,
    round_ratios,
    sources_digest,
)
from bench._servers import Server, free_port, gateway_server, unwind_on_signals

EMBEDDED, REDIS = "embedded", "redis"
REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating pairs of runs")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest between runs")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, default=10_000, help="Zipf-skewed targeting keys")
    parser.add_argument("--beta-share", type=float, default=0.05)
    parser.add_argument("--models", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--flags", type=Path, default=REPO_ROOT / "flags")
    parser.add_argument("--digit", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 1 <= args.duration <= 120:
        parser.error("need --rounds 1..50 and --duration 1..120")
    return args


@contextmanager
def own_redis(scratch: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the bench's own on a free port (never the machine's 6379)."""
    port = free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(scratch)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(100):
            probe = subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
            )
            if probe.stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not answer PING")
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.terminate()
        process.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unwind_on_signals()
    started = time.monotonic()
    if not Path(WRK).is_file():
        print(f"{WRK} not found", file=sys.stderr)
        return 2
    body, _ = request_body(args.digit)
    sources = sources_digest(REPO_ROOT / "gateway")
    redis_cpu: list[float] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        scratch = Path(tmp)
        script = scratch / "post.lua"
        write_lua_script(script, body, args.users, args.beta_share)
        url, redis = stack.enter_context(own_redis(scratch))
        servers: dict[str, Server] = {}
        for name, env in ((EMBEDDED, {}), (REDIS, {"GATEWAY_STORE": url})):
            own = scratch / name
            own.mkdir()
            servers[name] = gateway_server(
                name=name,
                port=free_port(),
                models=args.models.resolve(),
                scratch=own,
                flags=args.flags.resolve(),
                env={**env, "GATEWAY_STATE_PATH": str(own / "state.db")},
                extra_args=[],
                path="/v2/models/digits/infer",
                stdout=own / "gateway.out",
                stderr=own / "gateway.err",
            )
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        for server in servers.values():
            server.wait_ready(body, args.ready_timeout)
        for server in servers.values():
            _measure(server, script, args, args.warmup)
        runs: list[Run] = []
        for round_index in range(args.rounds):
            order = [EMBEDDED, REDIS] if round_index % 2 == 0 else [REDIS, EMBEDDED]
            for name in order:
                time.sleep(args.pause)
                redis_before = tree_cpu_seconds(redis.pid)
                run = Run(round_index + 1, name, _measure(servers[name], script, args))
                if name == REDIS:
                    redis_cpu.append(
                        (tree_cpu_seconds(redis.pid) - redis_before)
                        / max(run.result.wrk.requests, 1)
                        * 1e6
                    )
                runs.append(run)
                print_run(run)
        for server in servers.values():
            server.check_alive()

    summary = {
        "rounds": args.rounds,
        "median": medians(runs, [EMBEDDED, REDIS]),
        "ratios": round_ratios(runs, REDIS, EMBEDDED),
        "redis_server_cpu_us_per_request": sorted(redis_cpu)[len(redis_cpu) // 2],
    }
    print_table(runs, summary["median"])
    print()
    print_ratios(f"redis/embedded, median of {args.rounds} rounds", summary["ratios"])
    print(f"redis-server's own CPU: {summary['redis_server_cpu_us_per_request']:.1f} µs/request")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": _environment(args, sources, time.monotonic() - started),
            "runs": [run.as_dict() for run in runs],
            "summary": summary,
        }
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        print(f"wrote {args.out}")
    return 0


def _measure(
    server: Server, script: Path, args: argparse.Namespace, seconds: float | None = None
) -> Any:
    return measure(
        server,
        script,
        seconds=seconds or args.duration,
        connections=args.connections,
        threads=args.threads,
    )


def _environment(args: argparse.Namespace, sources: str, elapsed_s: float) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "gateway_sources_sha256": sources,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "users": args.users,
        "beta_share": args.beta_share,
        "elapsed_s": elapsed_s,
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
