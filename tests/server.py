"""Start the real gateway as a subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run_cli(url: str, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS` as an operator runs it against the gateway at `url` with `token`."""
    env = {**os.environ, "GATEWAY_URL": url, "GATEWAY_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str,
    timeout_s: float = 30.0,
) -> tuple[int, Any, dict[str, str]]:
    """One JSON request on a connection of its own (so the kernel spreads connections over
    a server's worker processes): its status, its body (decoded when JSON) and its headers."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        raw = response.read()
        payload = (
            json.loads(raw)
            if raw and response.getheader("content-type", "").startswith("application/json")
            else raw.decode()
        )
        return response.status, payload, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@dataclass(frozen=True)
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def running_gateway(
    models_dir: Path,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    *extra: str,
    flags_dir: Path | None = None,
    port: int | None = None,
) -> Iterator[RunningServer]:
    """`gateway serve` on a free port until the block ends; fails loudly if it never gets ready.

    State, the log and the local admin token live in `workdir`; without `flags_dir` the
    gateway runs with no release flags (an empty flags directory).
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"gateway-{port}.log"
    if flags_dir is None:
        flags_dir = workdir / "no-flags"
        flags_dir.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--models", str(models_dir), "--log-format", "json", *extra]
    defaults = {
        "GATEWAY_STATE_PATH": str(workdir / "state.db"),
        "GATEWAY_FLAGS_DIR": str(flags_dir),
    }
    with log.open("wb") as log_stream:
        process = subprocess.Popen(
            command,
            stdout=log_stream,
            stderr=subprocess.STDOUT,
            env={**os.environ, **defaults, **(env or {})},
            cwd=workdir,
        )
        server = RunningServer(process, port, log)
        try:
            _wait_ready(server)
            yield server
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as a supervisor stops a server; SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for(check: Callable[[], T | None], timeout_s: float = 10.0, what: str = "") -> T:
    """`check()`'s first truthy answer, asked every 50 ms; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout_s}s: {what or 'condition'}")


def _wait_ready(server: RunningServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gateway exited early:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gateway not ready after {timeout_s}s:\n{server.log.read_text()[-3000:]}")
