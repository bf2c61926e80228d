"""What one call of a model version costs at batch 1 and per row in larger batches.

The version runs through the gateway's own runtime for its manifest (for ONNX: onnxruntime's
CPU provider, one intra-op and one inter-op thread), in this process, on held-out digits. The
batch sizes take turns call by call, so noise from other processes on the machine spreads over
all of them alike; each figure is a median over many calls. Beside wall time it reports the
calling thread's CPU time, which a shared machine disturbs less: with one intra-op thread the
model runs on the calling thread.

    .venv/bin/python -m bench.model_latency                      # version 5 of models/digits
    .venv/bin/python -m bench.model_latency --version 2 --calls 500 --out var/bench/latency.json

`batch_gain_32` is what batching can win: the per-row cost of 32 single calls over the
per-row cost of one call of 32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gateway.demo.digits import held_out_digits
from gateway.repository.manifest import read_manifest, verified_artifact
from gateway.runtimes import RuntimeOptions, create_runtime

DEFAULT_BATCHES = (1, 8, 32, 64)
MAX_CALLS = 100_000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.model_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--models", type=Path, default=Path("models"), help="model repository")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--version", default="5")
    parser.add_argument(
        "--batches",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(DEFAULT_BATCHES),
        help="comma-separated batch sizes (default 1,8,32,64)",
    )
    parser.add_argument("--calls", type=int, default=300, help="measured calls per batch size")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured calls per batch size")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= MAX_CALLS or not 0 <= args.warmup <= MAX_CALLS:
        parser.error(f"--calls must be 1..{MAX_CALLS}, --warmup 0..{MAX_CALLS}")
    if not args.batches or any(not 1 <= batch <= 1024 for batch in args.batches):
        parser.error("--batches must be sizes 1..1024")
    return args


def measure(
    predict: Any, rows: np.ndarray[Any, Any], batches: Sequence[int], calls: int, warmup: int
) -> dict[int, dict[str, float]]:
    """Median wall and thread-CPU milliseconds per call for each batch size, interleaved."""
    inputs = {batch: np.ascontiguousarray(rows[np.arange(batch) % len(rows)]) for batch in batches}
    for _ in range(warmup):
        for batch in batches:
            predict({"pixels": inputs[batch]})
    wall: dict[int, list[float]] = {batch: [] for batch in batches}
    cpu: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(calls):
        for batch in batches:
            cpu_start, wall_start = time.thread_time(), time.perf_counter()
            predict({"pixels": inputs[batch]})
            wall[batch].append(time.perf_counter() - wall_start)
            cpu[batch].append(time.thread_time() - cpu_start)
    results: dict[int, dict[str, float]] = {}
    for batch in batches:
        call_ms = statistics.median(wall[batch]) * 1e3
        cpu_ms = statistics.median(cpu[batch]) * 1e3
        results[batch] = {
            "call_ms": call_ms,
            "row_ms": call_ms / batch,
            "call_cpu_ms": cpu_ms,
            "row_cpu_ms": cpu_ms / batch,
            "p90_call_ms": float(np.percentile(wall[batch], 90)) * 1e3,
        }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    version_dir = args.models / args.model / args.version
    manifest = read_manifest(version_dir)
    runtime = create_runtime(verified_artifact(version_dir, manifest), manifest, RuntimeOptions())
    runtime.load()
    pixels, _ = held_out_digits()
    try:
        results = measure(runtime.predict, pixels, args.batches, args.calls, args.warmup)
    finally:
        runtime.unload()

    print(f"{args.model}/{args.version} ({manifest.runtime}), {args.calls} calls per batch size:")
    print(f"{'batch':>6} {'ms/call':>9} {'ms/row':>9} {'cpu ms/row':>11} {'p90 ms/call':>12}")
    for batch, figures in results.items():
        print(
            f"{batch:>6} {figures['call_ms']:9.3f} {figures['row_ms']:9.4f} "
            f"{figures['row_cpu_ms']:11.4f} {figures['p90_call_ms']:12.3f}"
        )
    summary: dict[str, Any] = {}
    if 1 in results:
        for batch in results:
            if batch > 1:
                gain = results[1]["row_ms"] / results[batch]["row_ms"]
                summary[f"batch_gain_{batch}"] = gain
                print(f"{batch} single calls cost {gain:.1f}x one call of {batch}, per row")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "model": args.model,
            "version": args.version,
            "runtime": manifest.runtime,
            "sha256": manifest.sha256,
            "calls": args.calls,
            "batches": {str(batch): figures for batch, figures in results.items()},
            "summary": summary,
        }
        args.out.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
