"""A control load for the shadow benchmark: onnxruntime work in a separate process.

It runs version 2 of the demo model in 1 ms bursts with pauses between them, so that it
uses about `--duty` of one core until stopped. Run beside `bench.shadow_bench` to see what
the same amount of CPU costs the primary when it is spent outside the gateway's process:

    .venv/bin/python -m bench.cpu_burner --duty 0.2 &
    .venv/bin/python -m bench.shadow_bench --rounds 2 --duration 4
    kill %1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

BURST_S = 0.001


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duty", type=float, default=0.2, help="share of one core (0..1)")
    parser.add_argument("--model", type=Path, default=Path("models/digits/2/model.onnx"))
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after this long")
    args = parser.parse_args(argv)
    if not 0.0 < args.duty <= 1.0:
        parser.error("--duty must be in (0, 1]")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = np.random.default_rng(0).random((8, 64), dtype=np.float32)
    pause_s = BURST_S * (1.0 - args.duty) / args.duty
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        burst_end = time.perf_counter() + BURST_S
        while time.perf_counter() < burst_end:
            session.run(None, {name: rows})
        time.sleep(pause_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
