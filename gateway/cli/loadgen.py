"""`gateway loadgen`: held-out digits from many users against a running gateway, with feedback.

Shows a release moving: per-version traffic, errors, fallbacks and live accuracy as the
flag changes under it (a ramp advancing, or a rollback).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.cli.client import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE


@dataclass
class Tally:
    """What the generator saw, per serving version."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    feedback_sent: int = 0
    feedback_rejected: int = 0
    sent: int = 0
    unreachable: str = ""
    """Why the gateway could not be reached (the run stops)."""

    def row(self, version: str) -> str:
        served = self.requests[version]
        accuracy = self.correct[version] / served if served else 0.0
        return f"v{version}: {served} ok, acc {accuracy:.3f}, fallbacks {self.fallbacks[version]}"


class _Connection:
    def __init__(self, url: str, timeout_s: float) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 80
        self._timeout_s = timeout_s
        self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

    def post(
        self, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        payload = json.dumps(body).encode()
        for attempt in range(2):
            try:
                self._connection.request(
                    "POST",
                    path,
                    body=payload,
                    headers={"content-type": "application/json", **headers},
                )
                response = self._connection.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None, dict(response.headers)
            except (http.client.HTTPException, OSError):
                self._connection.close()
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout_s
                )
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _users(count: int, skew: float, rng: np.random.Generator) -> list[str]:
    """Targeting keys drawn Zipf-like: a few users come back often, most rarely."""
    weights = 1.0 / np.arange(1, count + 1) ** skew
    picks = rng.choice(count, size=count * 4, p=weights / weights.sum())
    return [f"user-{i}" for i in picks]


def _worker(args: argparse.Namespace, worker: int, stop: threading.Event, tally: Tally) -> None:
    from gateway.demo.digits import held_out_digits

    features, labels = held_out_digits()
    rng = np.random.default_rng(args.seed + worker)
    users = _users(args.users, args.skew, rng)
    connection = _Connection(args.url, timeout_s=10.0)
    pending: list[dict[str, Any]] = []
    while not stop.is_set():
        with tally.lock:
            if tally.sent >= args.requests:
                break
            tally.sent += 1
        index = int(rng.integers(len(features)))
        headers = {"x-targeting-key": users[int(rng.integers(len(users)))]}
        if rng.random() < args.beta_share:
            headers["x-ctx-tier"] = "beta"
        body = {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "data": features[index].tolist(),
                }
            ]
        }
        try:
            status, answer, response_headers = connection.post(
                f"/v2/models/{args.model}/infer", body, headers
            )
        except (http.client.HTTPException, OSError) as exc:
            with tally.lock:
                tally.unreachable = tally.unreachable or f"{args.url}: {exc}"
            stop.set()
            return
        version = response_headers.get("x-model-version", "?")
        with tally.lock:
            if status != 200:
                tally.errors[version] += 1
                continue
            tally.requests[version] += 1
            label_output = next(o for o in answer["outputs"] if o["name"] == "label")
            tally.correct[version] += int(label_output["data"][0] == int(labels[index]))
            if response_headers.get("x-fallback") == "true":
                tally.fallbacks[version] += 1
        if rng.random() < args.feedback:
            pending.append({"id": answer["id"], "label": int(labels[index])})
        if len(pending) >= 20:
            _send_feedback(connection, args.model, pending, tally)
            pending = []
    if pending:
        _send_feedback(connection, args.model, pending, tally)


def _send_feedback(
    connection: _Connection, model: str, items: list[dict[str, Any]], tally: Tally
) -> None:
    status, _, _ = connection.post(f"/v2/models/{model}/feedback", items, {})
    with tally.lock:
        if status == 200:
            tally.feedback_sent += len(items)
        else:
            tally.feedback_rejected += len(items)


def _run(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.concurrency < 1 or not 0 <= args.feedback <= 1:
        print("gateway loadgen: --requests and --concurrency must be positive", file=sys.stderr)
        return EXIT_USAGE
    tally = Tally()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_worker, args=(args, i, stop, tally), daemon=True)
        for i in range(args.concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(args.every)
            elapsed = time.monotonic() - started
            if elapsed > args.duration:
                stop.set()
            with tally.lock:
                versions = sorted(set(tally.requests) | set(tally.errors))
                line = " | ".join(tally.row(v) for v in versions)
                errors = sum(tally.errors.values())
                print(
                    f"[{elapsed:6.1f}s] {tally.sent}/{args.requests} sent, {errors} errors, "
                    f"feedback {tally.feedback_sent} | {line}",
                    flush=True,
                )
    except KeyboardInterrupt:
        stop.set()
    for thread in threads:
        thread.join(timeout=15)
    if tally.unreachable:
        print(f"gateway loadgen: cannot reach the gateway: {tally.unreachable}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not tally.requests and tally.errors:
        return EXIT_UNAVAILABLE
    return EXIT_OK


def add_parser(commands: Any) -> None:
    loadgen = commands.add_parser(
        "loadgen", help="send held-out digits from many users (with feedback) to a gateway"
    )
    loadgen.add_argument(
        "--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"), help="gateway URL"
    )
    loadgen.add_argument("--model", default="digits")
    loadgen.add_argument("--requests", type=int, default=5000, help="stop after this many")
    loadgen.add_argument("--duration", type=float, default=300.0, help="stop after seconds")
    loadgen.add_argument("--concurrency", type=int, default=4)
    loadgen.add_argument("--users", type=int, default=10_000, help="distinct targeting keys")
    loadgen.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of user visits")
    loadgen.add_argument("--beta-share", type=float, default=0.05, help="share with tier=beta")
    loadgen.add_argument("--feedback", type=float, default=0.5, help="share given ground truth")
    loadgen.add_argument("--every", type=float, default=2.0, help="seconds between progress lines")
    loadgen.add_argument("--seed", type=int, default=0)
    loadgen.set_defaults(handler=_run)
