"""What one shadow run costs the gateway's process in CPU, measured in-process.

Two apps over the demo models, built by `create_app` like the server's: one whose release
shadows version 2 behind version 1 on 100 % of requests, one without the shadow. Each serves
the same paced stream of V2 infer requests through `answer_infer` (the request path without
the network), then waits for the shadow work to settle and its records to reach the store.
The process's CPU time over the requests served, with shadow minus without, is the CPU one
shadow run costs: the hand-off to the shadow's executor, its share of a call, comparison,
record, store write, and the threads' hand-offs. Rounds alternate the two apps; the result
is the median.

    .venv/bin/python -m bench.shadow_cpu --rounds 5 --requests 4000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
import numpy as np
from litestar.di import Provide

from gateway.app import create_app
from gateway.demo.digits import held_out_digits
from gateway.http.inference import answer_infer
from gateway.serving import Serving
from gateway.settings import Settings

MODEL = "digits"
HEADERS = {"content-type": "application/json"}


def _flags(shadow_percent: int) -> dict[str, object]:
    baseline: dict[str, object] = {"serve": "1"}
    if shadow_percent:
        baseline["shadow"] = [{"version": "2", "percent": shadow_percent}]
    return {
        "flags": {
            "digits-release": {
                "state": "ENABLED",
                "defaultVariant": "baseline",
                "variants": {"baseline": baseline, "candidate": {"serve": "2"}},
                "metadata": {"model": MODEL, "baseline": "baseline", "candidate": "candidate"},
            }
        }
    }


def _bodies(count: int) -> list[bytes]:
    rows, _ = held_out_digits()
    return [
        msgspec.json.encode(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 64],
                        "datatype": "FP32",
                        "data": rows[i % len(rows)].tolist(),
                    }
                ]
            }
        )
        for i in range(count)
    ]


async def _serve(serving: Serving, bodies: Sequence[bytes], rate: float) -> None:
    """Answer every body at about `rate` requests per second, as the event loop would."""
    started = time.perf_counter()
    for index, body in enumerate(bodies):
        await answer_infer(serving, MODEL, None, body, HEADERS)
        due = started + (index + 1) / rate
        delay = due - time.perf_counter()
        if delay > 0 or index % 16 == 15:
            await asyncio.sleep(max(delay, 0.0))


async def _one_run(
    root: Path,
    shadow_percent: int,
    bodies: Sequence[bytes],
    rate: float,
    environment: Mapping[str, str],
) -> float:
    """CPU seconds of the process per request for one app serving `bodies`."""
    flags = root / f"flags-{shadow_percent}"
    flags.mkdir(exist_ok=True)
    (flags / "digits.json").write_text(json.dumps(_flags(shadow_percent)))
    settings = Settings.from_mapping(
        environment,
        models_dir="models",
        flags_dir=str(flags),
        state_path=str(root / f"state-{shadow_percent}-{time.monotonic_ns()}.db"),
        log_format="console",
        log_level="warning",
        access_log_sample=0.0,
    )
    app = create_app(settings)
    provide = app.dependencies["serving"]
    assert isinstance(provide, Provide)
    serving = provide.dependency()
    assert isinstance(serving, Serving)
    async with app.lifespan():
        await _serve(serving, bodies[:200], rate)  # warm-up: threads, caches, first batch
        await _settle(serving)
        cpu = time.process_time()
        await _serve(serving, bodies, rate)
        await _settle(serving)
        return (time.process_time() - cpu) / len(bodies)


async def _settle(serving: Serving) -> None:
    while any(executor.shadows_pending for executor in serving.dataplane.executors):
        await asyncio.sleep(0.005)
    await serving.shadows.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=1600.0, help="requests per second")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="GATEWAY_NAME=VALUE",
        help="a gateway setting for both apps, as in the environment (repeatable)",
    )
    args = parser.parse_args(argv)
    environment = dict(item.split("=", 1) for item in args.env)
    bodies = _bodies(args.requests)
    costs: dict[int, list[float]] = {0: [], 100: []}
    with tempfile.TemporaryDirectory(prefix="shadow-cpu-") as tmp:
        for round_ in range(args.rounds):
            order = (0, 100) if round_ % 2 == 0 else (100, 0)
            for percent in order:
                cost = asyncio.run(_one_run(Path(tmp), percent, bodies, args.rate, environment))
                costs[percent].append(cost)
                print(f"round {round_ + 1} shadow {percent:3d} %: {cost * 1e6:7.1f} us/request")
    base, shadow = (statistics.median(costs[p]) for p in (0, 100))
    extra = np.array(costs[100]) - np.array(costs[0])
    print(
        f"median CPU per request: {base * 1e6:.1f} us without shadow, {shadow * 1e6:.1f} us "
        f"with; a shadow run costs {statistics.median(extra.tolist()) * 1e6:.1f} us "
        f"(rounds {min(extra) * 1e6:.1f}..{max(extra) * 1e6:.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
