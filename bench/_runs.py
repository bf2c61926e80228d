"""Measured runs of servers in alternating rounds: one run, its figures, medians, ratios.

Shared by the benchmarks that compare servers under the same wrk load (`serve_bench.py`,
`batch_bench.py`): what one run records, how a run is measured and printed, and the summary
every comparison reports, medians per server and medians of per-round ratios.
"""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

from bench._load import WRK, LoadResult, run_wrk
from bench._servers import Server

# The figures compared between servers; the others are context (client CPU, machine noise).
METRICS = ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
CONTEXT = ("wrk_cpu_us_per_request", "host_busy", "other_cpus")


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


def measure(
    server: Server, script: Path, *, seconds: float, connections: int, threads: int
) -> LoadResult:
    """One wrk run against `server`, which must be alive before and after; errors warned."""
    server.check_alive()
    result = run_wrk(
        server.url,
        script,
        duration_s=seconds,
        connections=connections,
        threads=threads,
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


def print_run(run: Run, width: int = 8) -> None:
    r = run.result
    print(
        f"  round {run.round} {run.server:{width}} {r.requests_per_s:8.0f} req/s  "
        f"p50 {r.wrk.p50_us / 1000:6.2f} ms  p99 {r.wrk.p99_us / 1000:6.2f} ms  "
        f"cpu {r.server_cpu_us_per_request:6.1f} µs/req  host busy {r.host_busy:4.0%}  "
        f"others {r.other_cpus:4.2f} cores",
        flush=True,
    )


def medians(runs: Iterable[Run], servers: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """Each server's median of every metric over its runs (None for a server with none)."""
    rows: dict[str, list[dict[str, Any]]] = {server: [] for server in servers}
    for run in runs:
        rows[run.server].append(run.as_dict())
    return {
        server: {
            metric: statistics.median(row[metric] for row in server_rows) if server_rows else None
            for metric in (*METRICS, *CONTEXT)
        }
        for server, server_rows in rows.items()
    }


def round_ratios(runs: Iterable[Run], numerator: str, denominator: str) -> dict[str, Any]:
    """numerator / denominator of every metric within each round both ran, and the median,
    min and max of those per-round ratios."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.server] = run.as_dict()
    pairs = [
        (servers[numerator], servers[denominator])
        for _, servers in sorted(by_round.items())
        if numerator in servers and denominator in servers
    ]
    ratios: dict[str, Any] = {}
    for metric in METRICS:
        per_round = [top[metric] / bottom[metric] for top, bottom in pairs if bottom[metric]]
        ratios[metric] = {
            "median": statistics.median(per_round) if per_round else None,
            "min": min(per_round, default=None),
            "max": max(per_round, default=None),
            "per_round": per_round,
        }
    return ratios


def print_table(
    runs: Sequence[Run], server_medians: dict[str, dict[str, float | None]], width: int = 8
) -> None:
    header = (
        f"{'round':>5}  {'server':{width}} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu µs/req':>10} {'wrk µs/req':>10} {'busy':>5} {'others':>6} {'errors':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for run in sorted(runs, key=lambda run: (run.round, run.server)):
        r = run.result
        print(
            f"{run.round:>5}  {run.server:{width}} {r.requests_per_s:8.0f} "
            f"{r.wrk.p50_us / 1000:7.2f} {r.wrk.p99_us / 1000:7.2f} "
            f"{r.server_cpu_us_per_request:10.1f} {r.client_cpu_us_per_request:10.1f} "
            f"{r.host_busy:5.0%} {r.other_cpus:6.2f} {r.wrk.errors:6d}"
        )
    print("-" * len(header))
    for server, figures in server_medians.items():
        if figures["requests_per_s"] is None:
            continue
        print(
            f"{'med':>5}  {server:{width}} {figures['requests_per_s']:8.0f} "
            f"{figures['p50_ms']:7.2f} {figures['p99_ms']:7.2f} "
            f"{figures['server_cpu_us_per_request']:10.1f} "
            f"{figures['wrk_cpu_us_per_request']:10.1f} {figures['host_busy']:5.0%} "
            f"{figures['other_cpus']:6.2f}"
        )


_RATIO_LABELS = {
    "requests_per_s": "requests/s",
    "server_cpu_us_per_request": "CPU/request",
    "p50_ms": "p50",
    "p99_ms": "p99",
}


def print_ratios(title: str, ratios: dict[str, Any]) -> None:
    print(f"{title} (min..max):")
    for metric, label in _RATIO_LABELS.items():
        ratio = ratios[metric]
        if ratio["median"] is not None:
            print(f"  {label:12} {ratio['median']:.3f}  ({ratio['min']:.3f}..{ratio['max']:.3f})")


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


def sources_digest(package: Path) -> str:
    """sha256 over the gateway's .py files (path and content): which code was measured."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in names}


def wrk_version() -> str | None:
    lines = subprocess.run(
        [WRK, "--version"], capture_output=True, text=True, check=False, timeout=10
    ).stdout.splitlines()[:1]
    return lines[0] if lines else None
