"""`gateway models list|evaluate|build-demo`: look after the model repository on disk."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gateway.cli.table import print_table
from gateway.repository import ModelRegistry, VersionState
from gateway.runtimes import RuntimeOptions


def _list(args: argparse.Namespace) -> int:
    registry = ModelRegistry.load(Path(args.models), RuntimeOptions())
    rows = []
    for entry in registry:
        for version in entry.sorted_versions():
            loaded = entry.versions[version]
            manifest = loaded.manifest
            metrics = manifest.metrics if manifest else None
            rows.append(
                [
                    entry.name,
                    version + (" *" if version == entry.default_version else ""),
                    manifest.runtime if manifest else "?",
                    loaded.state.value,
                    f"{metrics.accuracy:.3f}" if metrics else "-",
                    f"{metrics.macro_f1:.3f}" if metrics else "-",
                    loaded.reason or (manifest.description if manifest else ""),
                ]
            )
    if not rows:
        print(f"no models under {args.models}", file=sys.stderr)
        return 1
    print_table(["MODEL", "VERSION", "RUNTIME", "STATE", "ACCURACY", "MACRO-F1", "NOTE"], rows)
    print("* serves by default")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Rerun the held-out set through each version and compare with its manifest."""
    from gateway.demo.evaluation import evaluate_version

    if args.model != "digits":
        print(
            "gateway models evaluate: held-out data exists for the demo model 'digits' only",
            file=sys.stderr,
        )
        return 2
    registry = ModelRegistry.load(Path(args.models), RuntimeOptions())
    entry = registry.model(args.model)
    versions = args.versions or entry.sorted_versions()
    rows: list[list[Any]] = []
    worst = 0
    for version in versions:
        loaded = registry.version(args.model, version)
        if loaded.state is not VersionState.READY:
            rows.append([version, "-", "-", "-", f"not ready: {loaded.reason}"])
            worst = max(worst, 1)
            continue
        result = evaluate_version(loaded)
        offline = loaded.manifest.metrics if loaded.manifest else None
        rows.append(
            [
                version,
                f"{result.accuracy:.4f}" if result.error is None else "-",
                f"{result.macro_f1:.4f}" if result.error is None else "-",
                f"{offline.accuracy:.4f}" if offline else "-",
                result.error or f"{result.samples} held-out samples",
            ]
        )
        if result.error is not None:
            worst = max(worst, 1)
    print_table(["VERSION", "ACCURACY", "MACRO-F1", "MANIFEST ACC.", "NOTE"], rows)
    return worst


def _build_demo(args: argparse.Namespace) -> int:
    from gateway.demo.digits import build_demo

    started = time.perf_counter()
    built = build_demo(
        Path(args.models), force=args.force, progress=lambda line: print(line, flush=True)
    )
    took = time.perf_counter() - started
    print(
        f"built {len(built)} version(s) in {took:.1f}s" if built else "demo models are up to date"
    )
    return 0


def add_parser(commands: Any) -> None:
    models = commands.add_parser("models", help="the model repository on disk")
    models.add_argument("--models", default="models", help="model repository (default ./models)")
    sub = models.add_subparsers(dest="models_command", required=True)
    sub.add_parser("list", help="versions, their state and offline metrics").set_defaults(
        handler=_list
    )
    evaluate = sub.add_parser("evaluate", help="rerun the held-out set and compare with manifests")
    evaluate.add_argument("model")
    evaluate.add_argument("versions", nargs="*")
    evaluate.set_defaults(handler=_evaluate)
    build = sub.add_parser("build-demo", help="train the demo 'digits' versions when missing")
    build.add_argument("--force", action="store_true", help="rebuild even when present and intact")
    build.set_defaults(handler=_build_demo)
