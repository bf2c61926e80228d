"""A real `redis-server` for the tests, on a free port of its own (never 6379), no persistence.

`running_redis(directory)` starts one and stops it at the end; `.kill()` kills it (SIGKILL,
as a crash would) and `.start()` starts it again on the same port, empty, as a Redis without
persistence comes back. The `redis_server` fixture is one server per test session: tests
keep apart by a key prefix of their own (`fresh_prefix()`), and never flush a shared Redis.
`redis_cluster` is the same for a single-node Redis Cluster.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.server import free_port

REDIS_SERVER = shutil.which("redis-server")
MISSING = "redis-server is not installed: `make test` installs Debian's redis-server"
START_TIMEOUT_S = 10.0


class RedisServer:
    """One redis-server process on `port`, its working files under `directory`."""

    def __init__(self, directory: Path, port: int, *extra: str) -> None:
        assert port != 6379, "the tests never touch the Redis on the default port"
        self.directory = directory
        self.port = port
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again) on the same port, with no data."""
        assert REDIS_SERVER is not None, MISSING
        assert self.process is None or self.process.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        log = self.directory / "redis.log"
        # The port is free, but a killed server's port may take a moment to be rebound.
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--logfile",
                    str(log),
                    *self.extra,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_for_ping(deadline):
                return
            if self.process.poll() is None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on {self.port}: see {log}")
            time.sleep(0.1)  # exited (port not yet free): try again

    def _wait_for_ping(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline and self.process.poll() is None:
            if ping(self.port):
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """SIGKILL, as a crash: its data is gone (no persistence)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def ping(port: int) -> bool:
    """Whether a Redis answers PING on `port` (RESP over a plain socket)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis(directory: Path, *extra: str, port: int | None = None) -> Iterator[RedisServer]:
    """A redis-server on a free port for the block; `extra` arguments go to the server."""
    server = RedisServer(directory, port or free_port(), *extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@contextmanager
def running_redis_cluster(directory: Path) -> Iterator[RedisServer]:
    """A one-node Redis Cluster (every slot on it) for the block: what a cluster client sees,
    slot routing and the refusal of cross-slot scripts included."""
    import redis

    with running_redis(
        directory,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(directory / "nodes.conf"),
        port=_cluster_port(),
    ) as server:
        client = redis.Redis(port=server.port)
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + START_TIMEOUT_S
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):  # type: ignore[no-untyped-call]
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster did not come up")
                time.sleep(0.05)
        finally:
            client.close()
        yield server


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free and valid too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One single-node Redis Cluster for the session."""
    with running_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session (tests must not kill it: see `running_redis`)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
