"""The access log: sampled `request_served` lines, written in batches in JSON mode."""

from __future__ import annotations

import io
import json
import random
import re

import pytest
from litestar.testing import TestClient
from structlog.testing import capture_logs

from gateway import Settings, create_app
from gateway.observability.access import FLUSH_LINES, AccessLog

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _lines(stream: io.BytesIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_wait_for_a_flush_and_carry_every_field() -> None:
    """Lines are held until `flush`, then written as one JSON object per line with the
    request's fields and an ISO 8601 UTC timestamp."""
    stream = io.BytesIO()
    log = AccessLog(1.0, sink=lambda: stream)
    log.served(
        request_id="r-1",
        model="digits",
        version="2",
        latency_s=0.0012345,
        variant="candidate",
        reason="SPLIT",
    )
    log.served(request_id="r-2", model="digits", version="1", latency_s=0.002)
    assert stream.getvalue() == b""
    log.flush()
    first, second = _lines(stream)
    assert first == {
        "event": "request_served",
        "level": "info",
        "timestamp": first["timestamp"],
        "request_id": "r-1",
        "model": "digits",
        "version": "2",
        "variant": "candidate",
        "reason": "SPLIT",
        "latency_ms": 1.234,
    }
    assert ISO_UTC.fullmatch(str(first["timestamp"]))
    assert (second["request_id"], second["variant"], second["latency_ms"]) == ("r-2", "", 2.0)
    log.flush()
    assert len(_lines(stream)) == 2  # nothing is written twice


def test_a_full_batch_is_written_without_waiting_for_the_timer() -> None:
    """Once FLUSH_LINES lines wait, they are written at once."""
    stream = io.BytesIO()
    log = AccessLog(1.0, sink=lambda: stream)
    for n in range(FLUSH_LINES):
        log.served(request_id=f"r-{n}", model="m", version="1", latency_s=0.001)
    assert [line["request_id"] for line in _lines(stream)] == [f"r-{n}" for n in range(FLUSH_LINES)]


@pytest.mark.parametrize(
    ("rate", "low", "high"), [(0.0, 0, 0), (0.25, 200, 300), (1.0, 1000, 1000)]
)
def test_sampling_keeps_about_the_configured_share(rate: float, low: int, high: int) -> None:
    """A sample rate of r keeps about r of the requests (none at 0, all at 1)."""
    stream = io.BytesIO()
    log = AccessLog(rate, sink=lambda: stream, rng=random.Random(7))
    for n in range(1000):
        log.served(request_id=f"r-{n}", model="m", version="1", latency_s=0.001)
    log.flush()
    assert low <= len(_lines(stream)) <= high


def test_console_mode_goes_through_structlog() -> None:
    """Without a JSON sink a line is a structlog event at once, with the same fields."""
    log = AccessLog(1.0)
    with capture_logs() as events:
        log.served(request_id="r-1", model="digits", version="1", latency_s=0.0005)
    assert events == [
        {
            "event": "request_served",
            "log_level": "info",
            "request_id": "r-1",
            "model": "digits",
            "version": "1",
            "variant": "",
            "reason": "",
            "latency_ms": 0.5,
        }
    ]


def test_served_requests_reach_stdout_by_shutdown(
    settings: Settings, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """In a JSON-logging app, each served request's line is on stdout once the app stops."""
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]
    }
    with TestClient(app=create_app(settings)) as client:
        ids = [
            client.post("/v2/models/digits/infer", json=body | {"id": f"seen-{n}"}).json()["id"]
            for n in range(3)
        ]
    out = capfdbinary.readouterr().out
    served = [json.loads(line) for line in out.splitlines() if b'"request_served"' in line]
    assert [line["request_id"] for line in served] == ids
    assert {line["version"] for line in served} == {"1"}
