"""`gateway models list|evaluate|build-demo` on a real repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli.main import main


def test_list_shows_versions_state_and_metrics(
    demo_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models list` prints each version with its runtime, state and offline accuracy."""
    assert main(["models", "--models", str(demo_models), "list"]) == 0
    out = capsys.readouterr().out
    assert "1 *" in out
    assert "torchscript" in out
    assert "0.978" in out


def test_evaluate_reruns_held_out_set(
    demo_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models evaluate` reproduces manifest accuracy; a failing version makes the exit code 1."""
    assert main(["models", "--models", str(demo_models), "evaluate", "digits", "1", "2"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["1"][1] == lines["1"][3]
    assert lines["2"][1] == lines["2"][3]
    assert main(["models", "--models", str(demo_models), "evaluate", "digits", "4"]) == 1
    assert "out of data bounds" in capsys.readouterr().out


def test_build_demo_is_idempotent(demo_models: Path, tmp_path: Path) -> None:
    """`models build-demo` on an intact repository builds nothing and exits 0."""
    copy = Path(shutil.copytree(demo_models, tmp_path / "m"))
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("manifest.json")}
    assert main(["models", "--models", str(copy), "build-demo"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in copy.rglob("manifest.json")}
