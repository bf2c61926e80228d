"""Real model versions that fail in the ways serving and shadow mode must survive, and flag
helpers.

`build_fault_repository` copies the demo `digits` versions (1 logistic, 2 MLP, 3 corrupted
labels, 4 raising at inference, and any others the recipe builds) and adds versions built
here, each with the demo's signature and a true manifest:

- `nan` answers NaN probabilities (non-finite output),
- `wide` answers probabilities of shape [rows, 9] (breaks the declared [-1, 10]),
- `slow` runs an ONNX Loop of a calibrated trip count before answering: about SLOW_S seconds
  of real work per call, whatever the machine (one request a call, two shadow runs queued),
- `picky` answers like a linear model but raises when a row's first pixel is above 16 (a
  Gather indexed by it), so one bad request can sit in a batch of good ones.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from gateway.demo.digits import INPUTS, LABELS, OUTPUTS
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest, encode_manifest, sha256_of
from gateway.runtimes import RuntimeOptions
from tests.conftest import REPO_ROOT

RAISES, NAN, WRONG_SHAPE, SLOW, PICKY = "4", "nan", "wide", "slow", "picky"
SLOW_S = 1.0
OPSET = 17


def join_slow_calls(timeout_s: float = SLOW_S * 20) -> None:
    """Wait, up to `timeout_s` in all, for the threads of closed executors of the slow
    version to end. A call abandoned at its deadline goes on computing on its thread; left
    running, it would compete with the next test, and a call still inside onnxruntime when
    its session is unloaded or the interpreter exits can abort the process."""
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if thread.name.startswith(f"gateway-digits-{SLOW}-"):
            thread.join(max(0.0, deadline - time.monotonic()))


@contextlib.contextmanager
def loaded_fault_registry(demo_models: Path, root: Path) -> Iterator[ModelRegistry]:
    """The fault repository built under `root`, loaded; unloaded at the end, once the slow
    version's abandoned calls have ended (the callers close their executors first)."""
    registry = ModelRegistry.load(build_fault_repository(demo_models, root), RuntimeOptions())
    try:
        yield registry
    finally:
        join_slow_calls()
        registry.unload()


def _weights() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(7)
    return (
        rng.normal(0.0, 0.1, (64, 10)).astype(np.float32),
        np.zeros(10, dtype=np.float32),
    )


def _graph_model(nodes: list[Any], initializers: list[Any], name: str) -> bytes:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", None]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def _linear(before: list[Any], after: list[Any], extra_init: list[Any], name: str) -> bytes:
    """pixels @ W + b = 'logits'; `before` makes 'final' of it; 'softmax' of 'final' and its
    argmax 'label'; `after` makes 'probabilities' of 'softmax'."""
    weight, bias = _weights()
    nodes = [
        helper.make_node("MatMul", ["pixels", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "B"], ["logits"]),
        *before,
        helper.make_node("Softmax", ["final"], ["softmax"], axis=1),
        helper.make_node("ArgMax", ["final"], ["label"], axis=1, keepdims=0),
        *after,
    ]
    initializers = [
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(bias, "B"),
        *extra_init,
    ]
    return _graph_model(nodes, initializers, name)


def nan_model() -> bytes:
    """Softmax probabilities times NaN: every probability is NaN."""
    nan = numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "NAN")
    return _linear(
        [helper.make_node("Identity", ["logits"], ["final"])],
        [helper.make_node("Mul", ["softmax", "NAN"], ["probabilities"])],
        [nan],
        "nan-output",
    )


def wrong_shape_model() -> bytes:
    """Probabilities cut to 9 columns, where the manifest declares 10."""
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "STARTS")
    ends = numpy_helper.from_array(np.array([9], dtype=np.int64), "ENDS")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "AXES")
    return _linear(
        [helper.make_node("Identity", ["logits"], ["final"])],
        [helper.make_node("Slice", ["softmax", "STARTS", "ENDS", "AXES"], ["probabilities"])],
        [starts, ends, axes],
        "wrong-shape",
    )


def slow_model(trips: int) -> bytes:
    """A Loop of `trips` iterations whose result (times 0) feeds the logits: real work."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "ONE_INNER"], ["acc_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, []),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
        [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "ONE_INNER")],
    )
    init = [
        numpy_helper.from_array(np.array(trips, dtype=np.int64), "TRIPS"),
        numpy_helper.from_array(np.array(True), "TRUE"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "ZERO"),
    ]
    return _linear(
        [
            helper.make_node("Loop", ["TRIPS", "TRUE", "ZERO"], ["spun"], body=body),
            helper.make_node("Mul", ["spun", "ZERO"], ["nothing"]),
            helper.make_node("Add", ["logits", "nothing"], ["final"]),
        ],
        [helper.make_node("Identity", ["softmax"], ["probabilities"])],
        init,
        "slow",
    )


def picky_model() -> bytes:
    """Gathers a row of a 17-entry table by each row's first pixel (0..16 are in bounds),
    times 0, into the logits: a first pixel above 16 makes the whole call raise."""
    table = numpy_helper.from_array(np.zeros((17, 10), dtype=np.float32), "TABLE")
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "STARTS")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "ENDS")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "AXES")
    return _linear(
        [
            helper.make_node("Slice", ["pixels", "STARTS", "ENDS", "AXES"], ["first"]),
            helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),
            helper.make_node("Squeeze", ["index", "AXES"], ["indices"]),
            helper.make_node("Gather", ["TABLE", "indices"], ["picked"], axis=0),
            helper.make_node("Add", ["logits", "picked"], ["final"]),
        ],
        [helper.make_node("Identity", ["softmax"], ["probabilities"])],
        [table, starts, ends, axes],
        "picky",
    )


def _seconds(model: bytes) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    pixels = np.zeros((1, 64), dtype=np.float32)
    session.run(None, {"pixels": pixels})
    return _fastest(lambda: session.run(None, {"pixels": pixels}))


def _fastest(call: Any, times: int = 3) -> float:
    """The quickest of a few timed calls: the model's own cost, which load on the machine
    only ever adds to (so a model calibrated by it is at least as slow as intended)."""
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


@functools.cache
def slow_trips(target_s: float = SLOW_S) -> int:
    """A trip count that makes `slow_model` take at least `target_s` on this machine."""
    trips = 20_000
    elapsed = _seconds(slow_model(trips))
    while elapsed < 0.05:
        trips *= 8
        elapsed = _seconds(slow_model(trips))
    return max(1, int(trips * target_s / elapsed))


def write_version(
    model_dir: Path,
    version: str,
    artifact: bytes,
    description: str,
    execution: dict[str, Any] | None = None,
) -> None:
    """An ONNX version with the demo's signature and a manifest that tells the truth (and
    declares `execution`, when given)."""
    version_dir = model_dir / version
    version_dir.mkdir(parents=True)
    path = version_dir / "model.onnx"
    path.write_bytes(artifact)
    manifest = Manifest(
        runtime="onnx",
        file="model.onnx",
        sha256=sha256_of(path),
        inputs=INPUTS,
        outputs=OUTPUTS,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        description=description,
        labels=LABELS,
        platform="onnxruntime_onnx",
        execution=execution,
    )
    (version_dir / "manifest.json").write_bytes(encode_manifest(manifest))


def build_fault_repository(demo_models: Path, root: Path) -> Path:
    """The demo versions plus `nan`, `wide`, `slow` and `picky` (see the module docstring)."""
    shutil.copytree(demo_models, root)
    model_dir = root / "digits"
    write_version(model_dir, NAN, nan_model(), "Answers NaN probabilities.")
    write_version(model_dir, WRONG_SHAPE, wrong_shape_model(), "Answers 9 probabilities.")
    write_version(
        model_dir,
        SLOW,
        slow_model(slow_trips()),
        f"Spins about {SLOW_S} s.",
        {"max_batch_size": 1, "max_shadow_queue": 2},
    )
    write_version(model_dir, PICKY, picky_model(), "Raises on a first pixel above 16.")
    return root


def release_flag(
    shadows: list[tuple[str, float]],
    *,
    serve: str = "1",
    metadata: dict[str, Any] | None = None,
    cohort: bool = False,
) -> dict[str, Any]:
    """The demo release flag with every request on the baseline (`serve`), shadowed by
    `shadows` [(version, percent)]; `cohort` adds a named cohort `beta` (tier == beta) that
    also routes to the baseline."""
    doc = json.loads((REPO_ROOT / "flags" / "digits.json").read_text())
    flag: dict[str, Any] = copy.deepcopy(doc["flags"]["digits-release"])
    baseline: dict[str, Any] = {"serve": serve}
    if shadows:
        baseline["shadow"] = [{"version": v, "percent": p} for v, p in shadows]
    flag["variants"]["baseline"] = baseline
    rule = {"in": [{"var": "tier"}, ["beta"]]}
    split = {"fractional": [["baseline", 100], ["candidate", 0]]}
    flag["targeting"] = {"if": [rule, "baseline", split]} if cohort else split
    meta = {k: v for k, v in flag["metadata"].items() if not k.startswith("cohort.")}
    if cohort:
        meta["cohort.beta"] = json.dumps(rule, sort_keys=True, separators=(",", ":"))
    flag["metadata"] = meta | (metadata or {})
    return flag


def write_flags(flags_dir: Path, flag: dict[str, Any]) -> Path:
    """A flags directory holding `flag` as the `digits-release` flag."""
    flags_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {"digits-release": flag},
    }
    (flags_dir / "digits.json").write_text(json.dumps(document, indent=2))
    return flags_dir


def _torchscript_bytes(trips: int | None) -> bytes:
    """A TorchScript linear model over the demo signature that first spins `trips` times in
    scripted code (None: for ever). Scripted code runs without the GIL, as real models do."""
    import io

    import torch

    weight, bias = (torch.from_numpy(array) for array in _weights())

    class Spin(torch.nn.Module):
        def __init__(self, trips: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(weight, requires_grad=False)
            self.bias = torch.nn.Parameter(bias, requires_grad=False)
            self.trips = trips

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            spun = torch.zeros(1)
            done = 0
            while self.trips < 0 or done < self.trips:
                spun = spun + 1.0
                done += 1
            logits = pixels @ self.weight + self.bias + spun * 0.0
            return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Spin(-1 if trips is None else trips)), buffer)
    return buffer.getvalue()


def _torchscript_seconds(trips: int) -> float:
    import io

    import torch

    module = torch.jit.load(io.BytesIO(_torchscript_bytes(trips)))  # type: ignore[no-untyped-call]
    pixels = torch.zeros((1, 64))
    for _ in range(3):  # TorchScript profiles its first calls, then optimises the graph
        module(pixels)
    return _fastest(lambda: module(pixels))


@functools.cache
def torchscript_trips(target_s: float) -> int:
    """A spin count that makes the slow TorchScript model take at least `target_s` here."""
    trips = 2_000
    elapsed = _torchscript_seconds(trips)
    while elapsed < 0.05:
        trips *= 8
        elapsed = _torchscript_seconds(trips)
    return max(1, int(trips * target_s / elapsed))


def write_torchscript_version(
    model_dir: Path, version: str, trips: int | None, description: str
) -> None:
    """A TorchScript version with the demo's signature that spins `trips` times (None: for
    ever) before answering, and a manifest that tells the truth."""
    version_dir = model_dir / version
    version_dir.mkdir(parents=True)
    path = version_dir / "model.pt"
    path.write_bytes(_torchscript_bytes(trips))
    manifest = Manifest(
        runtime="torchscript",
        file="model.pt",
        sha256=sha256_of(path),
        inputs=INPUTS,
        outputs=OUTPUTS,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        description=description,
        labels=LABELS,
        platform="pytorch_libtorch",
    )
    (version_dir / "manifest.json").write_bytes(encode_manifest(manifest))
