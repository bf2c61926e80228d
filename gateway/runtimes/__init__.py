"""Runtimes run one artifact behind a narrow load/predict/unload interface.

Each runtime module imports its framework (onnxruntime, torch) itself, so a process that
serves only ONNX never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.runtimes.base import ModelRuntime, RuntimeOptions

if TYPE_CHECKING:  # the repository imports the runtimes: a type only, never a cycle
    from gateway.repository.manifest import Manifest

_RUNTIME_CLASSES = {
    "onnx": ("gateway.runtimes.onnx", "OnnxRuntime"),
    "torchscript": ("gateway.runtimes.torchscript", "TorchScriptRuntime"),
}


def create_runtime(artifact: Path, manifest: Manifest, options: RuntimeOptions) -> ModelRuntime:
    """Build (not yet load) the runtime the manifest names, importing its module on demand."""
    module_name, class_name = _RUNTIME_CLASSES[manifest.runtime]
    runtime_class = getattr(importlib.import_module(module_name), class_name)
    runtime: ModelRuntime = runtime_class(artifact, manifest, options)
    return runtime


__all__ = ["ModelRuntime", "RuntimeOptions", "create_runtime"]
