"""Training and export of the demo digits networks: torch in, ONNX or TorchScript bytes out.

Imported only by `gateway.demo.digits.build_demo` (the CLI's `models build-demo` and tests),
never by the server. ONNX graphs are written with `onnx.helper` from the trained weights
rather than `torch.onnx.export`, which needs packages the gateway does not install.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

PIXELS = 64
CLASSES = 10
PIXEL_SCALE = 16.0  # load_digits pixels are 0..16; every artifact scales inside its graph
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; old enough for any onnxruntime >= 1.18
_BATCH_SIZE = 64
_LEARNING_RATE = 0.01

Layer = tuple[NDArray[np.float32], NDArray[np.float32]]


class DigitsModule(torch.nn.Module):
    """Raw 0..16 pixels in; (softmax probabilities, argmax label) out, as the manifest declares."""

    def __init__(self, body: torch.nn.Sequential) -> None:
        super().__init__()
        self.body = body
        self.pixel_scale = PIXEL_SCALE  # an attribute: TorchScript cannot read module globals

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(pixels / self.pixel_scale)
        return torch.softmax(logits, dim=1), torch.argmax(logits, dim=1)


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread while training, so float sums do not depend on the machine's core count.

    The ops used (Linear, ReLU, cross-entropy, Adam) are deterministic on the CPU already;
    `torch.use_deterministic_algorithms` would add nothing but a 2 s import of torch._inductor.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def corrupt_labels(labels: NDArray[np.int64], rate: float, seed: int) -> NDArray[np.int64]:
    """Relabel whole digits, in a seeded order, until about `rate` of the labels are wrong.

    A relabelled digit d becomes (d + 1) % 10: a fixed wrong permutation, so the network
    learns it consistently and disagrees with a clean one on those digits, as a training set
    with a broken label mapping would.
    """
    if rate <= 0.0:
        return labels.copy()
    counts = np.bincount(labels, minlength=CLASSES)
    chosen: list[int] = []
    relabelled = 0
    target = rate * len(labels)
    for digit in np.random.default_rng(seed).permutation(CLASSES):
        if abs(relabelled + counts[digit] - target) >= abs(relabelled - target):
            break  # one more digit would overshoot the rate by more than stopping here misses it
        chosen.append(int(digit))
        relabelled += int(counts[digit])
    corrupted = labels.copy()
    mask = np.isin(labels, chosen)
    corrupted[mask] = (labels[mask] + 1) % CLASSES
    return corrupted


def train_network(
    pixels: NDArray[np.float32],
    labels: NDArray[np.int64],
    *,
    hidden: int,
    epochs: int,
    seed: int,
) -> torch.nn.Sequential:
    """Train logistic regression (hidden=0) or a one-hidden-layer ReLU MLP with Adam.

    Seeded and single-threaded, so the same inputs give bit-identical weights on one machine.
    """
    with single_thread():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        if hidden > 0:
            layers: list[torch.nn.Module] = [
                torch.nn.Linear(PIXELS, hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden, CLASSES),
            ]
        else:
            layers = [torch.nn.Linear(PIXELS, CLASSES)]
        body = torch.nn.Sequential(*layers)
        inputs = torch.from_numpy(pixels) / PIXEL_SCALE
        targets = torch.from_numpy(labels)
        optimizer = torch.optim.Adam(body.parameters(), lr=_LEARNING_RATE)
        loss_fn = torch.nn.CrossEntropyLoss()
        body.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), _BATCH_SIZE):
                batch = order[start : start + _BATCH_SIZE]
                optimizer.zero_grad()
                loss = loss_fn(body(inputs[batch]), targets[batch])
                loss.backward()
                optimizer.step()
        body.eval()
    return body


def _linear_layers(body: torch.nn.Sequential) -> list[Layer]:
    """(W^T, b) of each Linear in order, ready for MatMul + Add; ReLU is assumed between them."""
    layers: list[Layer] = []
    for module in body:
        if isinstance(module, torch.nn.Linear):
            weight = module.weight.detach().numpy().T.astype(np.float32)
            bias = module.bias.detach().numpy().astype(np.float32)
            layers.append((np.ascontiguousarray(weight), bias))
        elif not isinstance(module, torch.nn.ReLU):
            raise TypeError(f"cannot export {type(module).__name__} to ONNX")
    return layers


def onnx_bytes(body: torch.nn.Sequential, *, pixel_order: NDArray[np.int64] | None = None) -> bytes:
    """The serialised ONNX model of `DigitsModule(body)`, checked by `onnx.checker`.

    `pixel_order`, when given, puts a Gather on the pixel axis in front: a preprocessing step.
    Indices outside 0..63 pass every load-time check and fail on every request.
    """
    nodes: list[Any] = []
    initializers: list[Any] = [
        numpy_helper.from_array(np.array(PIXEL_SCALE, dtype=np.float32), "pixel_scale"),
    ]
    current = "pixels"
    if pixel_order is not None:
        initializers.append(numpy_helper.from_array(pixel_order.astype(np.int64), "pixel_order"))
        nodes.append(helper.make_node("Gather", [current, "pixel_order"], ["ordered"], axis=1))
        current = "ordered"
    nodes.append(helper.make_node("Div", [current, "pixel_scale"], ["scaled"]))
    current = "scaled"
    layers = _linear_layers(body)
    for index, (weight, bias) in enumerate(layers):
        initializers += [
            numpy_helper.from_array(weight, f"dense{index}_weight"),
            numpy_helper.from_array(bias, f"dense{index}_bias"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"dense{index}_weight"], [f"dense{index}_mm"]),
            helper.make_node("Add", [f"dense{index}_mm", f"dense{index}_bias"], [f"dense{index}"]),
        ]
        current = f"dense{index}"
        if index < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{index}"]))
            current = f"relu{index}"
    nodes += [
        helper.make_node("Softmax", [current], ["probabilities"], axis=1),
        helper.make_node("ArgMax", [current], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", PIXELS])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="release-gateway demo",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString()
    return data


def torchscript_bytes(body: torch.nn.Sequential) -> bytes:
    """`DigitsModule(body)` scripted and saved to memory.

    Saved through a buffer because the archive's inner folder takes the file's name, and the
    builder writes to a temporary name first. torch 2.13 deprecates `torch.jit.script`,
    `torch.jit.save` (and `torch.jit.load`) in favour of torch.export; the archive still loads
    and runs, so the build silences those two warnings rather than repeat them on every run.
    """
    module = DigitsModule(body).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.(script|save)` is deprecated",
            category=DeprecationWarning,
        )
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()
