"""Shared fixtures: the demo repository built once per session, and apps built on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

import msgspec
import numpy as np
import pytest
import structlog
from litestar import Litestar
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import build_demo
from tests.redis_support import redis_cluster, redis_server  # noqa: F401  (fixtures)

Client: TypeAlias = TestClient[Litestar]
REPO_ROOT = Path(__file__).resolve().parent.parent
MANAGER_TOKEN = "manager-token-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-0123456789abcdef"
MANAGER = {"authorization": f"Bearer {MANAGER_TOKEN}"}
VIEWER = {"authorization": f"Bearer {VIEWER_TOKEN}"}


def v2_body(pixels: np.ndarray[Any, Any], request_id: str | None = None) -> dict[str, Any]:
    """A V2 infer request for `pixels` (rows of 64 floats)."""
    rows = np.atleast_2d(pixels)
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults (a CLI test may reconfigure it)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the demo `digits` versions, built from the committed recipe."""
    root = tmp_path_factory.mktemp("models")
    (root / "digits").mkdir()
    for name in ("recipe.json", "model.json"):
        shutil.copy(REPO_ROOT / "models" / "digits" / name, root / "digits" / name)
    build_demo(root, progress=lambda _line: None)
    return root


def scratch_settings(
    models: Path, root: Path, flags_dir: Path | None = None, **overrides: Any
) -> Settings:
    """Settings over `models` with the state file in `root` and JSON logs; the release flags
    from `flags_dir`, by default an empty `root/no-flags` (unpinned requests then get each
    model's default version); `overrides` set anything else."""
    if flags_dir is None:
        flags_dir = root / "no-flags"
        flags_dir.mkdir(exist_ok=True)
    return Settings(
        models_dir=models,
        flags_dir=flags_dir,
        state_path=root / "state.db",
        log_format="json",
        **overrides,
    )


@pytest.fixture
def settings(demo_models: Path, tmp_path: Path) -> Settings:
    """Settings over the demo models with no release flags: unpinned requests get the default.
    The shadows' CPU budget is lifted: tests that count shadow runs expect every one to run
    (the budget has tests of its own)."""
    return scratch_settings(
        demo_models,
        tmp_path,
        max_body_bytes=1024 * 1024,
        admin_tokens=f"ada:release-manager:{MANAGER_TOKEN},vic:viewer:{VIEWER_TOKEN}",
        shadow_cpu_share=64.0,
    )


@pytest.fixture
def flags_dir(tmp_path: Path) -> Path:
    """A private copy of the repository's `flags/` that a test may edit."""
    return Path(shutil.copytree(REPO_ROOT / "flags", tmp_path / "flags"))


@pytest.fixture
def release_settings(settings: Settings, flags_dir: Path) -> Settings:
    """Settings with the demo release flags in force."""
    return msgspec.structs.replace(settings, flags_dir=flags_dir)


@pytest.fixture
def release_client(release_settings: Settings) -> Iterator[Client]:
    with TestClient(app=create_app(release_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "litestar-handlers"])
def infer_client(
    request: pytest.FixtureRequest, demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    """A client of an app serving V2 infer through the ASGI fast path, then through the
    Litestar handlers: a test using it checks that both answer alike. One app of each per
    module (building one takes a third of a second): its tests must not change its state."""
    fast = scratch_settings(
        demo_models,
        tmp_path_factory.mktemp("infer-client"),
        max_body_bytes=1024 * 1024,
        inference_fast_path=request.param,
    )
    with TestClient(app=create_app(fast)) as test_client:
        yield test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client
