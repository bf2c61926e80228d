"""Shared fixtures: the demo repository built once per session, and apps built on it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.demo.digits import build_demo

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the demo `digits` versions, built from the committed recipe."""
    root = tmp_path_factory.mktemp("models")
    (root / "digits").mkdir()
    for name in ("recipe.json", "model.json"):
        shutil.copy(REPO_ROOT / "models" / "digits" / name, root / "digits" / name)
    build_demo(root, progress=lambda _line: None)
    return root


def copy_repository(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture
def settings(demo_models: Path) -> Settings:
    return Settings(models_dir=demo_models, log_format="json", max_body_bytes=1024 * 1024)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:  # type: ignore[type-arg]
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client
