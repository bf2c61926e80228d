"""What shadowing costs the primary: the same gateway, with and without a 100 % shadow.

One gateway (granian, one worker) serves the demo release: every request to version 1, and
in "shadow" runs the heavier version 5 (the transformer; `--shadow`) shadowing it on 100 % of
requests (switched through the admin
API between runs, so both conditions share one process). wrk sends one held-out digit.

1. Maximum throughput: closed-loop wrk with many connections, no shadow.
2. Half load: wrk connections with exponential think times (wrk's `delay()` hook), tuned so
   the offered rate is half the maximum; the primary's p50 latency with and without shadow.
3. Full load: the maximum-throughput load again, with and without shadow: the primary's
   throughput, and what the shadow budget compared or dropped (from /metrics).

Rounds alternate the order of the two conditions; the result is the median of per-round
ratios. On a shared machine, a round during which other processes used more than
DISTURBED_CORES of CPU is reported but left out of the medians (unless every round was).
Targets (issue 11): half-load p50 within 10 % of no-shadow; full-load throughput at least
0.9 of no-shadow, the shadow work it sheds counted as drops.

    .venv/bin/python -m bench.shadow_bench --rounds 3 --duration 8 --out var/shadow-bench.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from bench._load import WRK, LoadResult, run_wrk, write_lua_script
from bench._servers import Server, free_port, gateway_server, unwind_on_signals

OFF, ON = "no-shadow", "shadow"
MODEL = "digits"
FLAG_KEY = "digits-release"
HALF_P50_LIMIT = 1.10
DISTURBED_CORES = 0.25  # other processes' CPU during a run that marks its round as disturbed
FULL_RPS_FLOOR = 0.90
OUTCOMES = ("compared", "shadow_error", "timeout", "dropped", "primary_error")

# Appended to the wrk script: each connection waits an exponential think time (mean
# MEAN_MS, wrk rounds to whole milliseconds) before each request.
_DELAY_LUA = """
local mean_ms = {mean_ms}
init = function(args)
  math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
end
delay = function()
  return -mean_ms * math.log(1.0 - math.random())
end
"""


@dataclass(frozen=True, slots=True)
class Run:
    round: int
    load: str  # "half" or "full"
    condition: str  # OFF or ON
    result: LoadResult
    shadow: dict[str, float]  # shadow outcomes counted during the run

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "round": self.round,
            "load": self.load,
            "condition": self.condition,
            "requests": r.wrk.requests,
            "requests_per_s": r.requests_per_s,
            "p50_ms": r.wrk.p50_us / 1000,
            "p90_ms": r.wrk.p90_us / 1000,
            "p99_ms": r.wrk.p99_us / 1000,
            "server_cpu_us_per_request": r.server_cpu_us_per_request,
            "host_busy": r.host_busy,
            "other_cpus": r.other_cpus,
            "errors": r.wrk.errors,
            "shadow": self.shadow,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shadow_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds per condition first")
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument(
        "--full-connections", type=int, default=16, help="wrk connections at full load"
    )
    parser.add_argument(
        "--half-connections",
        type=int,
        default=32,
        help="wrk connections at half load (many, with long think times: the offered rate then "
        "barely depends on the latency)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--primary", default="1", help="the served version")
    parser.add_argument(
        "--shadow", default="5", help="the shadow version (100 %% sample; 5: the transformer)"
    )
    parser.add_argument("--digit", type=int, default=0)
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway (repeatable), e.g. "
        "GATEWAY_EXECUTION_MAX_SHADOW_QUEUE=256",
    )
    parser.add_argument("--gateway-stdout", type=Path, default=Path(os.devnull))
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 120:
        parser.error("--rounds 1..20, --duration 1..120 s")
    env: dict[str, str] = {}
    for item in args.gateway_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"expected KEY=VALUE, got {item!r}")
        env[key] = value
    args.gateway_env = env
    return args


def release_document(primary: str, candidate: str) -> dict[str, Any]:
    """Every request to `primary`; the candidate variant exists (at 0 %) as a release needs."""
    return {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            FLAG_KEY: {
                "state": "ENABLED",
                "defaultVariant": "baseline",
                "variants": {"baseline": {"serve": primary}, "candidate": {"serve": candidate}},
                "targeting": {"fractional": [["baseline", 100], ["candidate", 0]]},
                "metadata": {"model": MODEL, "baseline": "baseline", "candidate": "candidate"},
            }
        },
    }


def request_body(digit: int) -> bytes:
    from gateway.demo.digits import held_out_digits

    pixels, _ = held_out_digits()
    row = pixels[digit]
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]
    }
    return msgspec.json.encode(body)


class Admin:
    """Switches the shadow on and off, and reads the shadow counters, over HTTP."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def set_shadow(self, versions: list[str]) -> None:
        body = msgspec.json.encode({"versions": versions, "percent": 100, "reason": "bench"})
        request = urllib.request.Request(
            f"{self.base}/admin/releases/{MODEL}/shadow",
            data=body,
            method="POST",
            headers={"content-type": "application/json", "authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def shadow_counts(self) -> dict[str, float]:
        text = self.metrics()
        counts = dict.fromkeys(OUTCOMES, 0.0)
        for line in text.splitlines():
            if line.startswith("gateway_shadow_requests_total{"):
                labels, value = line.rsplit(" ", 1)
                for outcome in OUTCOMES:
                    if f'outcome="{outcome}"' in labels:
                        counts[outcome] += float(value)
        return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unwind_on_signals()
    started = time.monotonic()
    models = args.models.resolve()
    if not (models / MODEL / args.shadow / "manifest.json").is_file():
        print(f"no {MODEL}/{args.shadow} under {models}; run `gateway models build-demo`")
        return 2
    if not Path(WRK).is_file():
        print(f"{WRK} not found", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(24)
    body = request_body(args.digit)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        scratch = Path(tmp)
        flags = scratch / "release-flags"
        flags.mkdir()
        (flags / "digits.json").write_bytes(
            msgspec.json.encode(release_document(args.primary, args.shadow))
        )
        env = {
            "GATEWAY_ADMIN_TOKENS": f"bench:release-manager:{token}",
            "GATEWAY_ACCESS_LOG_SAMPLE": "0",
            **args.gateway_env,
        }
        server = gateway_server(
            port=free_port(),
            models=models,
            scratch=scratch,
            flags=flags,
            env=env,
            extra_args=[],
            path=f"/v2/models/{MODEL}/infer",
            stdout=args.gateway_stdout,
            stderr=scratch / "gateway.err",
        )
        stack.callback(server.stop)
        server.start()
        answer = server.wait_ready(body, args.ready_timeout)
        if str(answer["model_version"]) != args.primary:
            raise RuntimeError(f"the release served {answer['model_version']}, not {args.primary}")
        bench = Bench(args, server, Admin(server.url.rsplit("/v2/", 1)[0], token), scratch, body)
        print(f"gateway on :{server.port}; shadow {args.shadow} behind {args.primary}", flush=True)
        calibration = bench.calibrate()
        runs = bench.rounds()

    summary = summarize(
        runs, calibration["max_requests_per_s"], calibration["half_target_requests_per_s"]
    )
    print_summary(summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": environment(args, time.monotonic() - started),
            "calibration": calibration,
            "runs": [run.as_dict() for run in runs],
            "summary": summary,
        }
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        print(f"wrote {args.out}")
    return 0 if summary["pass"] else 1


class Bench:
    """The measured runs against one running gateway."""

    def __init__(
        self, args: argparse.Namespace, server: Server, admin: Admin, scratch: Path, body: bytes
    ) -> None:
        self.args = args
        self.server = server
        self.admin = admin
        self.scratch = scratch
        self.body = body
        self.full_script = scratch / "full.lua"
        write_lua_script(self.full_script, body)
        self.half_script = scratch / "half.lua"

    def measure(
        self, script: Path, connections: int, seconds: float
    ) -> tuple[LoadResult, dict[str, float]]:
        """One wrk run: its result, and the shadow outcomes it caused."""
        before = self.admin.shadow_counts()
        result = run_wrk(
            self.server.url,
            script,
            duration_s=seconds,
            connections=connections,
            threads=min(self.args.threads, connections),
            server_pid=self.server.pid,
        )
        self.server.check_alive()
        after = self.admin.shadow_counts()
        if result.wrk.errors:
            print(f"warning: {result.wrk.errors} errors in {result.wrk.requests} requests")
        return result, {k: after[k] - before[k] for k in OUTCOMES}

    def switch(self, condition: str) -> None:
        self.admin.set_shadow([self.args.shadow] if condition == ON else [])

    def calibrate(self) -> dict[str, float]:
        """Warm both conditions up, measure the maximum without shadow, and tune the think
        time so `half_connections` offer half of it."""
        args = self.args
        for condition in (ON, OFF):
            self.switch(condition)
            self.measure(self.full_script, args.full_connections, args.warmup)
        self.switch(OFF)
        time.sleep(args.pause)
        peak, _ = self.measure(self.full_script, args.full_connections, args.duration)
        target = peak.requests_per_s / 2
        connections = args.half_connections
        mean_ms = max(connections / target * 1000 - 0.5, 0.1)
        rate = 0.0
        for _ in range(4):
            write_lua_script(self.half_script, self.body)
            with self.half_script.open("a") as handle:
                handle.write(_DELAY_LUA.format(mean_ms=f"{mean_ms:.4f}"))
            probe, _ = self.measure(self.half_script, connections, max(3.0, args.duration / 2))
            rate = probe.requests_per_s
            if abs(rate - target) / target < 0.05:
                break
            mean_ms = max(mean_ms * rate / target, 0.1)
        print(
            f"maximum {peak.requests_per_s:.0f} req/s (p50 {peak.wrk.p50_us / 1000:.2f} ms); "
            f"half load: {connections} connections, mean think time {mean_ms:.2f} ms "
            f"-> {rate:.0f} req/s offered",
            flush=True,
        )
        return {
            "max_requests_per_s": peak.requests_per_s,
            "max_p50_ms": peak.wrk.p50_us / 1000,
            "half_target_requests_per_s": target,
            "half_mean_think_ms": mean_ms,
            "half_offered_requests_per_s": rate,
        }

    def rounds(self) -> list[Run]:
        """Half then full load per round, each with and without shadow, order alternating."""
        args = self.args
        runs: list[Run] = []
        for round_index in range(args.rounds):
            order = [OFF, ON] if round_index % 2 == 0 else [ON, OFF]
            for load, script, connections in (
                ("half", self.half_script, args.half_connections),
                ("full", self.full_script, args.full_connections),
            ):
                for condition in order:
                    self.switch(condition)
                    time.sleep(args.pause)
                    result, shadow = self.measure(script, connections, args.duration)
                    run = Run(round_index + 1, load, condition, result, shadow)
                    runs.append(run)
                    print_run(run)
        self.switch(OFF)
        return runs


def summarize(runs: list[Run], max_rps: float, target: float) -> dict[str, Any]:
    def pick(load: str, condition: str) -> list[Run]:
        return [r for r in runs if r.load == load and r.condition == condition]

    def disturbed(load: str, round_index: int) -> bool:
        return any(
            r.result.other_cpus > DISTURBED_CORES
            for r in runs
            if r.load == load and r.round == round_index
        )

    def clean(load: str) -> set[int]:
        """Rounds no other process disturbed (all of them, if none is clean)."""
        rounds = {r.round for r in runs if r.load == load}
        quiet = {i for i in rounds if not disturbed(load, i)}
        return quiet or rounds

    def per_round(load: str, metric: str) -> list[float]:
        ratios = []
        for on in pick(load, ON):
            if on.round not in clean(load):
                continue
            off = next(r for r in pick(load, OFF) if r.round == on.round)
            ratios.append(on.as_dict()[metric] / off.as_dict()[metric])
        return ratios

    def median(load: str, condition: str, metric: str) -> float:
        rounds = clean(load)
        return float(
            statistics.median(
                r.as_dict()[metric] for r in pick(load, condition) if r.round in rounds
            )
        )

    def shadow_totals(load: str) -> dict[str, float]:
        return {k: sum(r.shadow[k] for r in pick(load, ON)) for k in OUTCOMES}

    excluded = {
        load: sorted({r.round for r in runs if r.load == load} - clean(load))
        for load in ("half", "full")
    }
    half_ratios = per_round("half", "p50_ms")
    full_ratios = per_round("full", "requests_per_s")
    half_ratio = statistics.median(half_ratios)
    full_ratio = statistics.median(full_ratios)
    return {
        "max_requests_per_s": max_rps,
        "disturbed_rounds_excluded": excluded,
        "disturbed_threshold_cores": DISTURBED_CORES,
        "half": {
            "target_requests_per_s": target,
            "requests_per_s": {c: median("half", c, "requests_per_s") for c in (OFF, ON)},
            "p50_ms": {c: median("half", c, "p50_ms") for c in (OFF, ON)},
            "p99_ms": {c: median("half", c, "p99_ms") for c in (OFF, ON)},
            "p50_ratio_shadow_over_none": half_ratio,
            "p50_ratio_per_round": half_ratios,
            "shadow_outcomes": shadow_totals("half"),
            "limit": HALF_P50_LIMIT,
            "pass": half_ratio <= HALF_P50_LIMIT,
        },
        "full": {
            "requests_per_s": {c: median("full", c, "requests_per_s") for c in (OFF, ON)},
            "p50_ms": {c: median("full", c, "p50_ms") for c in (OFF, ON)},
            "throughput_ratio_shadow_over_none": full_ratio,
            "throughput_ratio_per_round": full_ratios,
            "shadow_outcomes": shadow_totals("full"),
            "floor": FULL_RPS_FLOOR,
            "pass": full_ratio >= FULL_RPS_FLOOR,
        },
        "pass": half_ratio <= HALF_P50_LIMIT and full_ratio >= FULL_RPS_FLOOR,
    }


def print_run(run: Run) -> None:
    r = run.result
    shadow = run.shadow
    extra = ""
    if run.condition == ON:
        extra = (
            f"  shadow: {shadow['compared']:.0f} compared, {shadow['dropped']:.0f} dropped, "
            f"{shadow['timeout']:.0f} timeouts, {shadow['shadow_error']:.0f} errors"
        )
    print(
        f"  round {run.round} {run.load:4} {run.condition:9} {r.requests_per_s:7.0f} req/s  "
        f"p50 {r.wrk.p50_us / 1000:6.3f} ms  p99 {r.wrk.p99_us / 1000:6.2f} ms  "
        f"cpu {r.server_cpu_us_per_request:5.0f} us/req  "
        f"host {r.host_busy:4.0%}  "
        f"others {r.other_cpus:4.2f} cores{extra}",
        flush=True,
    )


def print_summary(summary: dict[str, Any]) -> None:
    half, full = summary["half"], summary["full"]
    print()
    excluded = summary["disturbed_rounds_excluded"]
    if excluded["half"] or excluded["full"]:
        print(
            f"rounds left out as disturbed (other processes > {DISTURBED_CORES} cores): "
            f"half load {excluded['half'] or 'none'}, full load {excluded['full'] or 'none'}"
        )
    print(f"maximum throughput (no shadow): {summary['max_requests_per_s']:.0f} req/s")
    print(
        f"half load ({half['target_requests_per_s']:.0f} req/s target): p50 "
        f"{half['p50_ms'][OFF]:.3f} ms without shadow, {half['p50_ms'][ON]:.3f} ms with; "
        f"median ratio {half['p50_ratio_shadow_over_none']:.3f} "
        f"(limit {HALF_P50_LIMIT}) {'PASS' if half['pass'] else 'FAIL'}"
    )
    outcomes = half["shadow_outcomes"]
    print(
        f"  shadow at half load: {outcomes['compared']:.0f} compared, "
        f"{outcomes['dropped']:.0f} dropped, {outcomes['timeout']:.0f} timeouts"
    )
    print(
        f"full load: {full['requests_per_s'][OFF]:.0f} req/s without shadow, "
        f"{full['requests_per_s'][ON]:.0f} with; median ratio "
        f"{full['throughput_ratio_shadow_over_none']:.3f} (floor {FULL_RPS_FLOOR}) "
        f"{'PASS' if full['pass'] else 'FAIL'}"
    )
    outcomes = full["shadow_outcomes"]
    print(
        f"  shadow at full load: {outcomes['compared']:.0f} compared, "
        f"{outcomes['dropped']:.0f} dropped, {outcomes['timeout']:.0f} timeouts"
    )


def environment(args: argparse.Namespace, elapsed_s: float) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in ("litestar", "granian", "onnxruntime", "msgspec"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": versions,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "full_connections": args.full_connections,
        "half_connections": args.half_connections,
        "wrk_threads": args.threads,
        "primary": args.primary,
        "shadow": args.shadow,
        "gateway_env": args.gateway_env,
        "elapsed_s": elapsed_s,
    }


if __name__ == "__main__":
    sys.exit(main())
