"""Starting the benchmarked servers, waiting until they answer, and stopping them for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import msgspec

HOST = "127.0.0.1"
MINIMAL_TARGET = "bench.minimal_app:create_app"


@dataclass
class Server:
    """One server under test: how to start it, and its process once started."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    path: str  # the inference URL path
    stdout: Path  # where its stdout goes (/dev/null is fine)
    stderr: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        if not port_is_free(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} on {HOST} is already in use")
        out = self.stdout.open("ab")
        err = self.stderr.open("ab")
        self._files = [out, err]
        # A session of its own: Ctrl-C in the terminal reaches the runner only, and stop()
        # can signal the whole group (granian's main process and its worker).
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; stderr ends:\n"
                + self.stderr_tail()
            )

    def stderr_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.stderr.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, body: bytes, timeout_s: float) -> dict[str, Any]:
        """POST `body` until a 200 comes back (at most `timeout_s`); return the decoded answer."""
        deadline = time.monotonic() + timeout_s
        last_error = "no attempt"
        for _ in range(int(timeout_s / 0.2) + 1):
            self.check_alive()
            try:
                return post_json(self.url, body, timeout_s=5.0)
            except (OSError, urllib.error.URLError, RuntimeError) as exc:
                last_error = str(exc)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} did not answer {self.url} within {timeout_s:.0f}s "
            f"({last_error}); stderr ends:\n{self.stderr_tail()}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if still there after `timeout_s`."""
        process, self.process = self.process, None
        try:
            if process is not None and process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait(timeout=timeout_s)
            if process is not None:
                # Workers left behind by a main process that died first.
                _signal_group(process.pid, signal.SIGKILL)
        finally:
            for handle in self._files:
                handle.close()
            self._files = []


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def unwind_on_signals() -> None:
    """Unwind (and so stop the servers) on Ctrl-C even when started with SIGINT ignored
    (`&`), and on SIGTERM and SIGHUP."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


def _exit_on_signal(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def post_json(url: str, body: bytes, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(  # only ever http://127.0.0.1
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        answer: dict[str, Any] = msgspec.json.decode(response.read())
        return answer


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def gateway_server(
    *,
    port: int,
    models: Path,
    scratch: Path,
    flags: Path | None,
    env: Mapping[str, str],
    extra_args: Sequence[str],
    path: str,
    stdout: Path,
    stderr: Path,
    name: str = "gateway",
) -> Server:
    """The gateway through its own CLI: `gateway serve --workers 1 --log-format json`.

    Its state store lives in `scratch`, and its release flags come from `flags` (default: an
    empty directory in `scratch`, so the routed endpoint serves the model's default version
    with no split and no shadow traffic); `env` can override both (GATEWAY_STATE_PATH,
    GATEWAY_FLAGS_DIR).
    """
    gateway = Path(sys.executable).with_name("gateway")
    if flags is None:
        flags = scratch / "flags"
        flags.mkdir(exist_ok=True)
    command = [
        str(gateway),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--models",
        str(models),
        "--log-format",
        "json",
        *extra_args,
    ]
    return Server(
        name=name,
        command=command,
        env={
            "GATEWAY_STATE_PATH": str(scratch / "state.db"),
            "GATEWAY_FLAGS_DIR": str(flags),
            **env,
        },
        cwd=scratch,
        port=port,
        path=path,
        stdout=stdout,
        stderr=stderr,
    )


def minimal_server(
    *,
    port: int,
    model_file: Path,
    model_name: str,
    model_version: str,
    env: Mapping[str, str],
    path: str,
    stdout: Path,
    stderr: Path,
    target: str = MINIMAL_TARGET,
    working_dir: Path | None = None,
) -> Server:
    """bench/minimal_app.py (or another factory) under granian's CLI: 1 worker, ASGI, uvloop,
    factory."""
    repo_root = Path(__file__).resolve().parent.parent
    working_dir = working_dir or repo_root
    command = [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--loop",
        "uvloop",  # the gateway's loop: the two differ in their app only
        "--factory",
        "--workers",
        "1",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "info",
        "--working-dir",
        str(working_dir),
        target,
    ]
    return Server(
        name="minimal",
        command=command,
        env={
            "MINIMAL_MODEL_PATH": str(model_file),
            "MINIMAL_MODEL_NAME": model_name,
            "MINIMAL_MODEL_VERSION": model_version,
            **env,
        },
        cwd=working_dir,
        port=port,
        path=path,
        stdout=stdout,
        stderr=stderr,
    )


MLSERVER_RUNTIME_DIR = Path(__file__).resolve().parent / "mlserver"


def mlserver_server(
    *,
    venv: Path,
    port: int,
    grpc_port: int,
    model_file: Path,
    model_name: str,
    model_version: str,
    max_batch_size: int,
    max_batch_time_s: float,
    parallel_workers: int,
    metrics: bool,
    scratch: Path,
    path: str,
    stdout: Path,
    stderr: Path,
) -> Server:
    """MLServer from its own venv (bench/mlserver/setup.sh), serving `model_file` through
    bench/mlserver/onnx_runtime.py with adaptive batching.

    Its settings are written to `scratch`: settings.json (ports, workers, no debug logging, no
    gzip, metrics server only with `metrics`) and one model folder with model-settings.json.
    The runtime module is found through PYTHONPATH, in the worker processes too.
    """
    mlserver = venv / "bin" / "mlserver"
    if not mlserver.is_file():
        raise RuntimeError(f"no {mlserver}: run bash bench/mlserver/setup.sh first")
    repository = scratch / "mlserver"
    model_dir = repository / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": HOST,
        "http_port": port,
        "grpc_port": grpc_port,
        "parallel_workers": parallel_workers,
        # debug (the default) logs at DEBUG level and every request through uvicorn's access
        # log; metrics add a third server and per-request middleware. Neither is what this
        # benchmark compares, so both are off unless asked for.
        "debug": False,
        "gzip_enabled": False,
        "metrics_endpoint": "/metrics" if metrics else None,
        "metrics_port": free_port(),
        "metrics_dir": str(scratch / "mlserver-metrics"),
        "environments_dir": str(scratch / "mlserver-envs"),
        "model_repository_root": str(repository),
        "load_models_at_startup": True,
    }
    model_settings = {
        "name": model_name,
        "implementation": "onnx_runtime.OnnxRuntime",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_s,
        "parameters": {"uri": str(model_file), "version": model_version},
    }
    (repository / "settings.json").write_bytes(msgspec.json.encode(settings))
    (model_dir / "model-settings.json").write_bytes(msgspec.json.encode(model_settings))
    return Server(
        name="mlserver",
        command=[str(mlserver), "start", str(repository)],
        env={"PYTHONPATH": str(MLSERVER_RUNTIME_DIR), "PYTHONUNBUFFERED": "1"},
        cwd=scratch,
        port=port,
        path=path,
        stdout=stdout,
        stderr=stderr,
    )
