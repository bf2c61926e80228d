"""`gateway serve` refuses what would make it misbehave before it starts."""

from __future__ import annotations

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
