"""deploy/compose.yaml and deploy/kubernetes: several replicas of the image sharing one Redis.

Checked statically against what is real here: the gateway's settings (the env names and values
they set), the image (its port, user, volume), the Redis image's port and the gateway's token
loader. That their probes are real routes that answer as a probe needs is checked on a running
gateway in tests/test_deploy.py. Running them is `docker compose` / `kubectl` (README).
"""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from gateway.security.tokens import TokenConfigError, load_token_table
from gateway.settings import Settings
from tests.conftest import REPO_ROOT
from tests.deploy_support import (
    COMPOSE,
    DEPLOY,
    KUBERNETES,
    dockerfile,
    env_of,
    last,
    runtime_stage,
    setting_names,
    yaml_documents,
)

IMAGE = "release-gateway"
REPLICAS = 3


def _image_port() -> int:
    return Settings.from_mapping(env_of(runtime_stage(dockerfile()))).port


def _image_uid() -> int:
    stage = runtime_stage(dockerfile())
    runs = " ".join(i.args for i in stage if i.keyword == "RUN")
    match = re.search(r"--uid (\d+)", runs)
    assert match
    return int(match.group(1))


def _check_env(env: dict[str, str], where: str) -> None:
    """Names are settings; their values parse."""
    unknown = set(env) - setting_names()
    assert not unknown, f"{where}: not settings of the gateway: {sorted(unknown)}"
    Settings.from_mapping(env)


def _check_store(url: str, host: str, port: int) -> None:
    parsed = urllib.parse.urlsplit(url)
    assert (parsed.scheme, parsed.hostname, parsed.port, parsed.path) == ("redis", host, port, "/0")


def _refuses_placeholders(tokens_json: str, tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    file.write_text(tokens_json)
    with pytest.raises(TokenConfigError, match="at least 16 characters"):
        load_token_table("", file)


# --- compose -----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml_documents(COMPOSE)[0]


def _image_name(service: dict[str, Any]) -> str:
    """`${VAR:-default}` as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(service.get("image", "")))


def _replicas() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: s for name, s in services.items() if _image_name(s) == IMAGE}


def test_compose_runs_three_replicas_and_one_redis() -> None:
    """Three services run the gateway image; one more runs Redis, built from a file that exists."""
    services = _compose()["services"]
    assert len(_replicas()) == REPLICAS
    others = {name: s for name, s in services.items() if name not in _replicas()}
    assert list(others) == ["redis"]
    build = others["redis"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_compose_replicas_answer_on_ports_8001_to_8003() -> None:
    """Each replica publishes the image's port on loopback, on 8001, 8002 and 8003."""
    published = set()
    for service in _replicas().values():
        (port,) = service["ports"]
        address, host_port, container_port = port.split(":")
        assert (address, int(container_port)) == ("127.0.0.1", _image_port())
        published.add(int(host_port))
    assert published == {8001, 8002, 8003}


def test_compose_replicas_share_one_redis_store() -> None:
    """Every replica has the same environment; its store is the redis service on the port the
    Redis image exposes, and each waits for Redis to be healthy."""
    replicas = list(_replicas().values())
    environments = [r["environment"] for r in replicas]
    assert all(env == environments[0] for env in environments)
    redis_port = int(last(dockerfile(DEPLOY / "redis.Dockerfile"), "EXPOSE").args)
    _check_store(environments[0]["GATEWAY_STORE"], "redis", redis_port)
    assert environments[0]["GATEWAY_REDIS_PREFIX"]
    for replica in replicas:
        assert replica["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # service_healthy needs a health check; compose's own, whatever image runs Redis
    redis_check = _compose()["services"]["redis"]["healthcheck"]["test"]
    assert redis_check[:2] == ["CMD", "redis-cli"]
    assert redis_check[-1] == "ping"


def test_compose_environment_holds_real_settings() -> None:
    """Every variable a compose service sets is a gateway setting whose value parses."""
    for name, service in _replicas().items():
        _check_env({k: str(v) for k, v in service["environment"].items()}, f"compose {name}")


def test_compose_admin_tokens_come_from_an_uncommitted_secret(tmp_path: Path) -> None:
    """No token is in the file: each replica reads the same secret file, which git ignores;
    the example to copy it from holds placeholders the gateway refuses to start with."""
    compose = _compose()
    for service in _replicas().values():
        env = service["environment"]
        assert "GATEWAY_ADMIN_TOKENS" not in env
        (secret,) = service["secrets"]
        assert PurePosixPath(env["GATEWAY_ADMIN_TOKENS_FILE"]) == PurePosixPath(
            "/run/secrets", secret
        )
    secret_file = COMPOSE.parent / compose["secrets"][secret]["file"]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(secret_file)], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, f"{secret_file} is not ignored by git"
    _refuses_placeholders((DEPLOY / "admin-tokens.example.json").read_text(), tmp_path)


def test_compose_health_checks_probe_readiness_on_the_container_port() -> None:
    """Each replica's health check requests /v2/health/ready on the port the gateway listens on."""
    for service in _replicas().values():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        urls = re.findall(r"http://[^'\" ]+", " ".join(test))
        assert [urllib.parse.urlsplit(u).path for u in urls] == ["/v2/health/ready"]
        assert [urllib.parse.urlsplit(u).port for u in urls] == [_image_port()]


def test_redis_image_runs_as_its_own_user() -> None:
    """The Redis image is not root and keeps its data in a volume."""
    stage = runtime_stage(dockerfile(DEPLOY / "redis.Dockerfile"))
    assert last(stage, "USER").args == "redis"
    assert "/data" in last(stage, "VOLUME").exec_form()


# --- kubernetes --------------------------------------------------------------------------------


def _objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += yaml_documents(path)
    return found


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in _objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (found,) = [c for c in containers if c["name"] == name]
    return found


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def _container_port(container: dict[str, Any], port: str | int) -> int:
    """A probe's or a Service's target port (a name or a number) as the container's port."""
    for item in container["ports"]:
        if port in (item.get("name"), item["containerPort"]):
            number: int = item["containerPort"]
            return number
    raise AssertionError(f"{container['name']} has no port {port}")


def test_kustomization_lists_every_manifest() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every manifest in the folder."""
    kustomization = yaml_documents(KUBERNETES / "kustomization.yaml")[0]
    manifests = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


def test_gateway_deployment_probes_the_v2_health_endpoints() -> None:
    """Three replicas; readiness on /v2/health/ready, liveness (and start-up) on
    /v2/health/live, all on the container port the image listens on."""
    deployment = _one("Deployment", IMAGE)
    assert deployment["spec"]["replicas"] == REPLICAS
    gateway = _container(deployment, "gateway")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    port = Settings.from_mapping(_env(gateway)).port
    assert port == _image_port()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert _container_port(gateway, gateway[probe]["httpGet"]["port"]) == port


def test_every_container_requests_resources() -> None:
    """Each container asks for CPU and memory and caps its memory."""
    for workload in (o for o in _objects() if o["kind"] in {"Deployment", "StatefulSet"}):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert "memory" in resources["limits"], container["name"]


def test_services_select_their_pods_and_target_real_ports() -> None:
    """Each Service's selector matches exactly one workload's pod labels, and its target port is
    one of that pod's container ports."""
    workloads = [o for o in _objects() if o["kind"] in {"Deployment", "StatefulSet"}]
    for service in (o for o in _objects() if o["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        (workload,) = [
            w for w in workloads if selector <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert workload["spec"]["selector"]["matchLabels"].items() <= selector
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            _container_port(container, port["targetPort"])


def test_gateway_store_is_the_redis_service() -> None:
    """GATEWAY_STORE names the redis Service and its port, which reaches Redis's own port."""
    service = _one("Service", "redis")
    (port,) = service["spec"]["ports"]
    _check_store(
        _env(_container(_one("Deployment", IMAGE), "gateway"))["GATEWAY_STORE"],
        "redis",
        port["port"],
    )
    assert (
        _container_port(_container(_one("StatefulSet", "redis"), "redis"), port["targetPort"])
        == 6379
    )


def test_admin_tokens_secret_is_mounted_and_its_placeholder_refused(tmp_path: Path) -> None:
    """GATEWAY_ADMIN_TOKENS_FILE is the Secret's key where its volume is mounted; the committed
    Secret holds only placeholders, which the gateway refuses to start with."""
    deployment = _one("Deployment", IMAGE)
    gateway = _container(deployment, "gateway")
    assert "GATEWAY_ADMIN_TOKENS" not in _env(gateway)
    tokens_file = PurePosixPath(_env(gateway)["GATEWAY_ADMIN_TOKENS_FILE"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [
        m for m in gateway["volumeMounts"] if PurePosixPath(m["mountPath"]) == tokens_file.parent
    ]
    secret = _one("Secret", volumes[mount["name"]]["secret"]["secretName"])
    _refuses_placeholders(secret["stringData"][tokens_file.name], tmp_path)


def test_state_volume_is_an_empty_dir_at_the_image_volume() -> None:
    """The image's VOLUME is mounted as an emptyDir (state lives in Redis in this mode), and the
    pod runs as the image's user, whose group owns the volume."""
    deployment = _one("Deployment", IMAGE)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    image_volumes = last(runtime_stage(dockerfile()), "VOLUME").exec_form()
    mounts = {m["mountPath"]: m["name"] for m in _container(deployment, "gateway")["volumeMounts"]}
    for path in image_volumes:
        assert volumes[mounts[path]]["emptyDir"] == {}
    uid = _image_uid()
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["fsGroup"] == uid
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_environment_holds_real_settings() -> None:
    """Every variable a container sets is a gateway setting whose value parses."""
    _check_env(_env(_container(_one("Deployment", IMAGE), "gateway")), "kubernetes gateway")


def test_replicas_run_in_redis_mode() -> None:
    """The replica manifests (compose and Kubernetes) set GATEWAY_STORE and
    GATEWAY_REDIS_PREFIX, which the gateway reads as one Redis shared by every replica."""
    compose = _compose()["services"]
    environments = [
        {k: str(v) for k, v in service["environment"].items()}
        for service in compose.values()
        if "GATEWAY_STORE" in service.get("environment", {})
    ]
    kubernetes = _env(_container(_one("Deployment", IMAGE), "gateway"))
    for env in [*environments, kubernetes]:
        settings = Settings.from_mapping(env)
        assert settings.store_kind == "redis"
        assert settings.shared_state
        assert settings.redis_prefix == env["GATEWAY_REDIS_PREFIX"]
    assert environments
