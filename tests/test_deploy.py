"""The Docker image, checked without an engine: the Dockerfile as Docker reads it, and the image's
command run the way the image runs it (its /app layout, ENV, WORKDIR and CMD) against which its
HEALTHCHECK and the deployment files' probes are executed.

This is not the image itself: the real check is `docker-local.sh build` and `run` (README,
Docker), which builds and runs it on a local engine.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from gateway.cli.client import DEFAULT_TOKEN_FILE
from gateway.cli.main import build_parser
from gateway.settings import PREFIX, Settings
from tests.conftest import REPO_ROOT
from tests.deploy_support import (
    COMPOSE,
    KUBERNETES,
    Instruction,
    dockerfile,
    dockerignore,
    env_of,
    image_path,
    in_build_context,
    last,
    runtime_stage,
    setting_names,
    yaml_documents,
)
from tests.server import free_port, stop_process

READY_PATH = "/v2/health/ready"


def _stage(index: int) -> list[Instruction]:
    return [i for i in dockerfile() if i.stage == index]


def _user_uid(stage: list[Instruction]) -> tuple[str, int]:
    """The runtime USER and the uid the stage's useradd gives it."""
    user = last(stage, "USER").args
    for instruction in stage:
        if instruction.keyword == "RUN" and "useradd" in instruction.args:
            match = re.search(
                r"useradd\b[^&;]*--uid[ =](\d+)[^&;]*\s" + re.escape(user) + r"\b", instruction.args
            )
            if match:
                return user, int(match.group(1))
    raise AssertionError(f"no useradd --uid for USER {user}")


def _healthcheck_command(stage: list[Instruction]) -> str:
    _options, sep, command = last(stage, "HEALTHCHECK").args.partition(" CMD ")
    assert sep, "HEALTHCHECK has no CMD"
    assert not command.lstrip().startswith("["), "expected the shell form (it reads $GATEWAY_PORT)"
    return command.strip()


# --- the Dockerfile as Docker reads it -------------------------------------------------------


def test_image_runs_as_a_non_root_user() -> None:
    """The runtime stage runs as a named user (its last USER) whose uid is not 0."""
    stage = runtime_stage(dockerfile())
    user, uid = _user_uid(stage)
    assert user not in {"root", "0"}
    assert uid != 0


def test_state_directory_is_a_volume_the_runtime_user_owns() -> None:
    """The settings' default state file and the generated token's directory, resolved against the
    image's WORKDIR, are one declared VOLUME, made and chowned to the USER before it is declared
    (a new volume starts as a copy of it) and untouched by any RUN after it (Docker drops those)."""
    stage = runtime_stage(dockerfile())
    workdir = last(stage, "WORKDIR").args
    state_dir = image_path(workdir, Settings().state_path).parent
    assert image_path(workdir, DEFAULT_TOKEN_FILE).parent == state_dir
    volume = last(stage, "VOLUME")
    assert str(state_dir) in volume.exec_form()

    user, _ = _user_uid(stage)
    volume_at = stage.index(volume)
    owning = [
        i
        for i in stage[:volume_at]
        if i.keyword == "RUN"
        and re.search(rf"mkdir -p {state_dir}\b", i.args)
        and re.search(rf"chown {user}:{user} {state_dir}\b", i.args)
    ]
    assert owning, f"no RUN makes {state_dir} and gives it to {user} before the VOLUME"
    assert not [i for i in stage[volume_at:] if i.keyword == "RUN" and str(state_dir) in i.args]


def test_image_is_multi_stage_and_builds_the_demo_models() -> None:
    """A build stage installs the package and trains the demo models with the CLI's own command;
    the runtime stage takes the venv and the models from it and installs nothing itself."""
    instructions = dockerfile()
    stages = {i.stage for i in instructions}
    assert len(stages) >= 2
    build, runtime = _stage(0), runtime_stage(instructions)
    build_name = build[0].args.split()[-1]
    assert build[0].args.split()[-2].upper() == "AS"

    demo = [i for i in build if i.keyword == "RUN" and "build-demo" in i.args]
    assert demo, "the build stage does not build the demo models"
    argv = demo[0].args.split()
    assert argv[0] == "gateway"
    parsed = build_parser().parse_args(argv[1:])
    assert (parsed.command, parsed.models_command) == ("models", "build-demo")

    copied = {tuple(i.operands()) for i in runtime if i.keyword == "COPY"}
    froms = {i.flags().get("from") for i in runtime if i.keyword == "COPY"}
    assert froms == {build_name}, "the runtime stage copies only from the build stage"
    assert ("/opt/venv", "/opt/venv") in copied
    assert any(src.endswith("/" + parsed.models) for src, _ in copied)
    assert not [i for i in runtime if i.keyword == "RUN" and "pip install" in i.args]


def test_image_command_parses_with_the_cli() -> None:
    """CMD runs the package's console script, and the CLI's parser reads it as `serve`."""
    command = last(runtime_stage(dockerfile()), "CMD").exec_form()
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[command[0]] == "gateway.cli.main:main"
    parsed = build_parser().parse_args(command[1:])
    assert parsed.command == "serve"
    assert parsed.handler.__name__ == "_serve"


def test_image_environment_holds_real_settings() -> None:
    """Every GATEWAY_* the image sets is a setting and parses; its port is the EXPOSEd one."""
    env = env_of(runtime_stage(dockerfile()))
    names = {name for name in env if name.startswith(PREFIX)}
    assert names <= setting_names(), names - setting_names()
    settings = Settings.from_mapping(env)
    assert settings.host == "0.0.0.0"  # reachable through a published port
    assert last(runtime_stage(dockerfile()), "EXPOSE").args.split() == [str(settings.port)]


def test_build_context_holds_every_file_the_image_copies() -> None:
    """Each COPY source of the build exists, and .dockerignore keeps every tracked file under it."""
    rules = dockerignore()
    sources = [
        src
        for i in dockerfile()
        if i.keyword == "COPY" and "from" not in i.flags()
        for src in i.operands()[:-1]
    ]
    assert sources
    tracked = subprocess.run(
        ["git", "ls-files", "--", *sources],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert any(path == source or path.startswith(source + "/") for path in tracked), source
    dropped = [path for path in tracked if not in_build_context(path, rules)]
    assert not dropped, f".dockerignore drops files the image copies: {dropped}"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/state.db",
        "var/admin-token",
        "models/digits/1/model.onnx",
        "models/digits/5/manifest.json",
        "gateway/__pycache__/app.cpython-311.pyc",
        ".git",
        "tests/test_api.py",
        "deploy/admin-tokens.json",
    ],
)
def test_build_context_leaves_out_this_machine_s_files(path: str) -> None:
    """The venv, local state and tokens, built demo versions and caches never reach the image."""
    assert not in_build_context(path, dockerignore())


# --- the image's command, run as the image runs it -------------------------------------------


@dataclass(frozen=True)
class Served:
    root: Path  # stands for the image's WORKDIR
    port: int
    env: Mapping[str, str]
    files_before: frozenset[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextmanager
def _image_command(root: Path, env: Mapping[str, str], wait_path: str) -> Iterator[None]:
    """The image's CMD from its WORKDIR with `env`, until `wait_path` answers (90 s at most)."""
    command = last(runtime_stage(dockerfile()), "CMD").exec_form()
    executable = Path(sys.executable).parent / command[0]
    assert executable.is_file(), f"{command[0]} is not installed beside {sys.executable}"
    log = root.parent / "gateway.log"
    url = f"http://127.0.0.1:{env['GATEWAY_PORT']}{wait_path}"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [str(executable), *command[1:]], cwd=root, env=dict(env), stdout=stream, stderr=stream
        )
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, f"exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"never answered:\n{log.read_text()[-3000:]}"
                try:
                    if _status(url) == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            yield
        finally:
            stop_process(process)


def _image_env(port: int, **extra: str) -> dict[str, str]:
    """The image's ENV over this machine's (none of its GATEWAY_* settings), on loopback, as
    docker-local.sh runs the container on the host network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update({k: v for k, v in env_of(runtime_stage(dockerfile())).items() if k != "PATH"})
    env.update(GATEWAY_HOST="127.0.0.1", GATEWAY_PORT=str(port), **extra)
    return env


def _files(root: Path) -> frozenset[str]:
    return frozenset(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def image_gateway(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[Served]:
    """The runtime stage's WORKDIR rebuilt from its COPYs (the demo models built by the same
    command the build stage runs), served by the image's CMD with its ENV and no admin token."""
    instructions = dockerfile()
    build_workdir = last(_stage(0), "WORKDIR").args
    stage = runtime_stage(instructions)
    workdir = PurePosixPath(last(stage, "WORKDIR").args)
    root = tmp_path_factory.mktemp("image") / "app"
    root.mkdir()
    for copy in (i for i in stage if i.keyword == "COPY"):
        source, destination = map(PurePosixPath, copy.operands())
        if not destination.is_relative_to(workdir):
            continue  # the venv: the test's own stands for it
        origin = source.relative_to(build_workdir)
        built = origin == PurePosixPath(Settings().models_dir.as_posix())
        shutil.copytree(
            demo_models if built else REPO_ROOT / origin, root / destination.relative_to(workdir)
        )
    (root / "var").mkdir()  # the volume, as the image makes it
    before = _files(root)
    port = free_port()
    env = _image_env(port)
    with _image_command(root, env, READY_PATH):
        yield Served(root, port, env, before)


@pytest.fixture(scope="module")
def unready_gateway(
    tmp_path_factory: pytest.TempPathFactory, demo_models: Path
) -> Iterator[Served]:
    """The image's command on a repository whose only model's default version fails to load
    (its artifact does not match its manifest's sha256): up, but not ready."""
    root = tmp_path_factory.mktemp("unready") / "app"
    (root / "models" / "digits").mkdir(parents=True)
    (root / "flags").mkdir()
    shutil.copy(demo_models / "digits" / "model.json", root / "models" / "digits")
    version = shutil.copytree(demo_models / "digits" / "1", root / "models" / "digits" / "1")
    (version / "model.onnx").write_bytes(b"not the artifact the manifest hashed")
    port = free_port()
    env = _image_env(port)
    with _image_command(root, env, "/v2/health/live"):
        yield Served(root, port, env, frozenset())


def _run_healthcheck(command: str, env: Mapping[str, str]) -> int:
    return subprocess.run(
        ["/bin/sh", "-c", command],
        env={**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


@pytest.mark.e2e
def test_image_command_writes_state_and_token_only_in_the_volume(image_gateway: Served) -> None:
    """Served as the image serves it, the gateway writes its store and its generated admin token
    (mode 0600) under the volume's directory and nowhere else in its working directory."""
    var = image_gateway.root / "var"
    assert (var / Settings().state_path.name).is_file()
    token = image_gateway.root / DEFAULT_TOKEN_FILE
    assert token.is_file()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    created = _files(image_gateway.root) - image_gateway.files_before
    assert created, "nothing was written"
    outside = [path for path in created if not path.startswith("var/")]
    assert not outside, f"written outside var/: {outside}"


@pytest.mark.e2e
def test_cli_in_the_image_workdir_reads_the_generated_token(image_gateway: Served) -> None:
    """`docker exec ... gateway ...` runs in the WORKDIR: the README's CLI commands find the
    token the server generated in var/ and the model repository, with no token given."""
    cli = str(Path(sys.executable).parent / "gateway")
    env = {**image_gateway.env, "GATEWAY_URL": image_gateway.url}
    env.pop("GATEWAY_TOKEN", None)
    for args, expected in [
        (["release", "status", "digits"], "digits"),
        (["models", "list"], "digits"),
        (
            [
                "release",
                "rollout",
                "digits",
                "--version",
                "2",
                "--percent",
                "25",
                "--reason",
                "test",
            ],
            "25",
        ),
        (["audit", "--model", "digits"], "rollout"),
        (["shadow", "report", "digits"], "model digits"),
    ]:
        done = subprocess.run(
            [cli, *args],
            check=False,
            cwd=image_gateway.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert expected in done.stdout, (args, done.stdout)


@pytest.mark.e2e
def test_healthcheck_passes_on_a_ready_gateway(image_gateway: Served) -> None:
    """The HEALTHCHECK command, run by a shell with the container's GATEWAY_PORT, exits 0."""
    command = _healthcheck_command(runtime_stage(dockerfile()))
    assert READY_PATH in command
    assert _run_healthcheck(command, image_gateway.env) == 0


@pytest.mark.e2e
def test_healthcheck_fails_while_a_model_is_not_ready(unready_gateway: Served) -> None:
    """Against a gateway that is up but whose default version did not load, it exits non-zero."""
    assert _status(unready_gateway.url + "/v2/health/live") == 200
    command = _healthcheck_command(runtime_stage(dockerfile()))
    assert _run_healthcheck(command, unready_gateway.env) != 0


def test_healthcheck_fails_when_nothing_answers() -> None:
    """With nothing listening on GATEWAY_PORT, it exits non-zero (within its own timeout)."""
    command = _healthcheck_command(runtime_stage(dockerfile()))
    assert _run_healthcheck(command, {"GATEWAY_PORT": str(free_port())}) != 0


def _probes() -> dict[str, set[str]]:
    """kind ('readiness', 'liveness', 'startup') -> the HTTP paths the deployment files probe."""
    found: dict[str, set[str]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml_documents(path):
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                for key, probe in container.items():
                    if key.endswith("Probe") and "httpGet" in probe:
                        found.setdefault(key.removesuffix("Probe"), set()).add(
                            probe["httpGet"]["path"]
                        )
    for path in sorted(COMPOSE.parent.glob("compose*.yaml")):
        for service in yaml_documents(path)[0]["services"].values():
            test = " ".join(service.get("healthcheck", {}).get("test", []))
            found.setdefault("readiness", set()).update(
                re.findall(r"https?://[^/'\"]+(/[^'\" ]*)", test)
            )
    return found


@pytest.mark.e2e
def test_probe_paths_answer_as_their_probes_need(
    image_gateway: Served, unready_gateway: Served
) -> None:
    """Every path the compose and Kubernetes files probe is a route of the gateway: readiness paths
    answer 200 when ready and 503 while a model is not; liveness paths 200 in both cases."""
    probes = _probes()
    assert probes.get("readiness"), probes
    assert probes.get("liveness"), probes
    for path in probes["readiness"]:
        assert _status(image_gateway.url + path) == 200, path
        assert _status(unready_gateway.url + path) == 503, path
    for path in probes["liveness"] | probes.get("startup", set()):
        assert _status(image_gateway.url + path) == 200, path
        assert _status(unready_gateway.url + path) == 200, path
