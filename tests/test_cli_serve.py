"""The operator commands fail plainly: `gateway serve` before it would misbehave, `gateway
loadgen` when it cannot reach the gateway."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def test_serve_refuses_a_port_another_process_listens_on(tmp_path: Path) -> None:
    """On a port something already listens on, serve exits with a usage error naming the
    address instead of starting beside it (granian's SO_REUSEPORT would share the traffic)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--port",
                str(port),
                "--models",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_loadgen_says_plainly_when_the_gateway_is_unreachable(tmp_path: Path) -> None:
    """loadgen against an address nothing listens on (GATEWAY_URL, as the other commands read
    it) stops with exit code 4 and one line saying so, not a traceback per thread."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "loadgen", "--requests", "3", "--every", "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_URL": f"http://127.0.0.1:{port}"},
        check=False,
    )
    assert done.returncode == 4
    assert f"cannot reach the gateway: http://127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
