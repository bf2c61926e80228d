"""The demo's heavier version: a small transformer encoder over the digit's eight pixel rows.

Token t is row t of the 8x8 image (eight pixels), embedded linearly, plus a learned position
embedding; pre-norm encoder blocks (multi-head self-attention, then a ReLU feed-forward, each
behind a layer norm and a residual); the tokens mean-pooled, normalised and projected to the
ten classes. It exists to give the gateway a model whose single-row call costs about a
millisecond and whose batched call costs several times less per row, so that batching has
something to win. Deep and narrow on purpose: on one CPU thread a single row then costs
mostly onnxruntime's fixed cost per operator, which a batch pays once, while a wide shallow
transformer of the same latency is compute-bound and gains little from batching (figures in
models/README.md).

Like `networks.py`, imported only by `gateway.demo.digits` when building, never by the
server; the ONNX graph is written with `onnx.helper` from the trained weights (operator by
operator, so rebuilds are byte-for-byte identical and nothing beyond onnx is needed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from gateway.demo.networks import (
    CLASSES,
    IR_VERSION,
    OPSET,
    PIXEL_SCALE,
    PIXELS,
    single_thread,
)

TOKENS = 8  # image rows
TOKEN_PIXELS = PIXELS // TOKENS  # pixels per row
LAYER_NORM_EPSILON = 1e-5
_BATCH_SIZE = 128  # fewer, larger steps: the narrow blocks cost torch more per step than per row
_POSITION_INIT_STD = 0.02


class EncoderBlock(torch.nn.Module):
    """Pre-norm transformer encoder block: x + attention(norm(x)), then + feed_forward(norm)."""

    def __init__(self, width: int, heads: int, feed_forward: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.attention_norm = torch.nn.LayerNorm(width, eps=LAYER_NORM_EPSILON)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.attention_out = torch.nn.Linear(width, width)
        self.feed_forward_norm = torch.nn.LayerNorm(width, eps=LAYER_NORM_EPSILON)
        self.feed_forward_in = torch.nn.Linear(width, feed_forward)
        self.feed_forward_out = torch.nn.Linear(feed_forward, width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = hidden.shape
        head_width = width // self.heads
        qkv = self.qkv(self.attention_norm(hidden))
        # (batch, tokens, 3, heads, head_width) -> three of (batch, heads, tokens, head_width)
        query, key, value = qkv.reshape(batch, tokens, 3, self.heads, head_width).permute(
            2, 0, 3, 1, 4
        )
        scores = (query @ key.transpose(-2, -1)) * (1.0 / math.sqrt(head_width))
        attended = torch.softmax(scores, dim=-1) @ value
        merged = attended.transpose(1, 2).reshape(batch, tokens, width)
        hidden = hidden + self.attention_out(merged)
        feed_forward = torch.relu(self.feed_forward_in(self.feed_forward_norm(hidden)))
        output: torch.Tensor = hidden + self.feed_forward_out(feed_forward)
        return output


class DigitsTransformer(torch.nn.Module):
    """Scaled pixels (batch, 64) in, class logits (batch, 10) out."""

    def __init__(self, *, width: int, heads: int, layers: int, feed_forward: int) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(TOKEN_PIXELS, width)
        self.position = torch.nn.Parameter(torch.randn(TOKENS, width) * _POSITION_INIT_STD)
        self.blocks = torch.nn.ModuleList(
            EncoderBlock(width, heads, feed_forward) for _ in range(layers)
        )
        self.norm = torch.nn.LayerNorm(width, eps=LAYER_NORM_EPSILON)
        self.classify = torch.nn.Linear(width, CLASSES)

    def forward(self, scaled: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(scaled.reshape(-1, TOKENS, TOKEN_PIXELS)) + self.position
        for block in self.blocks:
            hidden = block(hidden)
        logits: torch.Tensor = self.classify(self.norm(hidden.mean(dim=1)))
        return logits


def train_transformer(
    pixels: NDArray[np.float32],
    labels: NDArray[np.int64],
    *,
    width: int,
    heads: int,
    layers: int,
    feed_forward: int,
    epochs: int,
    learning_rate: float,
    seed: int,
) -> DigitsTransformer:
    """Train with AdamW and a one-cycle learning rate (warm-up, then cosine decay), seeded and
    on one thread.

    The same inputs give bit-identical weights on one machine: one thread keeps float sums in
    one order, and every op used is deterministic on the CPU.
    """
    with single_thread():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = DigitsTransformer(
            width=width, heads=heads, layers=layers, feed_forward=feed_forward
        )
        inputs = torch.from_numpy(pixels) / PIXEL_SCALE
        targets = torch.from_numpy(labels)
        steps = epochs * math.ceil(len(inputs) / _BATCH_SIZE)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=learning_rate, weight_decay=0.01, fused=True
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), _BATCH_SIZE):
                batch = order[start : start + _BATCH_SIZE]
                optimizer.zero_grad()
                loss_fn(model(inputs[batch]), targets[batch]).backward()
                optimizer.step()
                schedule.step()
        model.eval()
    return model


class _Graph:
    """Nodes and initializers of the graph being written, with unique names per prefix."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def tensor(self, name: str, value: torch.Tensor) -> str:
        return self.constant(name, value.detach().numpy().astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def linear(self, prefix: str, source: str, layer: torch.nn.Linear) -> str:
        weight = self.tensor(f"{prefix}.weight", layer.weight.T)
        bias = self.tensor(f"{prefix}.bias", layer.bias)
        product = self.node("MatMul", [source, weight], f"{prefix}.matmul")
        return self.node("Add", [product, bias], prefix)

    def layer_norm(self, prefix: str, source: str, norm: torch.nn.LayerNorm) -> str:
        scale = self.tensor(f"{prefix}.weight", norm.weight)
        bias = self.tensor(f"{prefix}.bias", norm.bias)
        return self.node(
            "LayerNormalization", [source, scale, bias], prefix, axis=-1, epsilon=norm.eps
        )


def _encoder_block(graph: _Graph, prefix: str, source: str, block: EncoderBlock) -> str:
    width = block.qkv.in_features
    heads = block.heads
    head_width = width // heads
    normed = graph.layer_norm(f"{prefix}.attention_norm", source, block.attention_norm)
    qkv = graph.linear(f"{prefix}.qkv", normed, block.qkv)
    split_shape = graph.constant(
        f"{prefix}.split_shape", np.array([0, 0, 3, heads, head_width], dtype=np.int64)
    )
    heads_split = graph.node("Reshape", [qkv, split_shape], f"{prefix}.qkv_heads")
    # (3, batch, heads, tokens, head_width), as the torch module permutes it
    per_head = graph.node(
        "Transpose", [heads_split], f"{prefix}.qkv_per_head", perm=[2, 0, 3, 1, 4]
    )
    parts = []
    for index, name in enumerate(("query", "key", "value")):
        position = graph.constant(f"{prefix}.{name}_index", np.array(index, dtype=np.int64))
        parts.append(graph.node("Gather", [per_head, position], f"{prefix}.{name}", axis=0))
    query, key, value = parts
    key_t = graph.node("Transpose", [key], f"{prefix}.key_t", perm=[0, 1, 3, 2])
    raw_scores = graph.node("MatMul", [query, key_t], f"{prefix}.raw_scores")
    scale = graph.constant(
        f"{prefix}.score_scale", np.array(1.0 / math.sqrt(head_width), dtype=np.float32)
    )
    scores = graph.node("Mul", [raw_scores, scale], f"{prefix}.scores")
    weights = graph.node("Softmax", [scores], f"{prefix}.attention_weights", axis=-1)
    attended = graph.node("MatMul", [weights, value], f"{prefix}.attended")
    token_major = graph.node("Transpose", [attended], f"{prefix}.token_major", perm=[0, 2, 1, 3])
    merge_shape = graph.constant(f"{prefix}.merge_shape", np.array([0, 0, width], dtype=np.int64))
    merged = graph.node("Reshape", [token_major, merge_shape], f"{prefix}.merged")
    attention = graph.linear(f"{prefix}.attention_out", merged, block.attention_out)
    hidden = graph.node("Add", [source, attention], f"{prefix}.attention_residual")
    normed = graph.layer_norm(f"{prefix}.feed_forward_norm", hidden, block.feed_forward_norm)
    expanded = graph.linear(f"{prefix}.feed_forward_in", normed, block.feed_forward_in)
    activated = graph.node("Relu", [expanded], f"{prefix}.feed_forward_relu")
    contracted = graph.linear(f"{prefix}.feed_forward_out", activated, block.feed_forward_out)
    return graph.node("Add", [hidden, contracted], f"{prefix}.output")


def transformer_onnx_bytes(model: DigitsTransformer) -> bytes:
    """The serialised ONNX model of `model` behind the digits signature, checked by onnx.

    Raw 0..16 pixels in; `probabilities` (softmax of the logits) and `label` (their argmax)
    out; the batch dimension is symbolic, so N rows are one call.
    """
    graph = _Graph()
    scale = graph.constant("pixel_scale", np.array(PIXEL_SCALE, dtype=np.float32))
    scaled = graph.node("Div", ["pixels", scale], "scaled")
    token_shape = graph.constant("token_shape", np.array([-1, TOKENS, TOKEN_PIXELS], np.int64))
    tokens = graph.node("Reshape", [scaled, token_shape], "tokens")
    embedded = graph.linear("embed", tokens, model.embed)
    position = graph.tensor("position", model.position)
    hidden = graph.node("Add", [embedded, position], "positioned")
    for index, block in enumerate(model.blocks):
        if not isinstance(block, EncoderBlock):
            raise TypeError(f"cannot export {type(block).__name__} to ONNX")
        hidden = _encoder_block(graph, f"block{index}", hidden, block)
    pooled = graph.node("ReduceMean", [hidden], "pooled", axes=[1], keepdims=0)
    normed = graph.layer_norm("norm", pooled, model.norm)
    logits = graph.linear("classify", normed, model.classify)
    graph.node("Softmax", [logits], "probabilities", axis=1)
    graph.node("ArgMax", [logits], "label", axis=1, keepdims=0)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "digits-transformer",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", PIXELS])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        graph.initializers,
    )
    onnx_model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="release-gateway demo",
    )
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model, full_check=True)
    data: bytes = onnx_model.SerializeToString()
    return data


def torch_outputs(
    model: DigitsTransformer, pixels: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """What `model` answers in torch for raw pixels: (probabilities, label), as the graph does."""
    with torch.no_grad(), single_thread():
        logits = model(torch.from_numpy(pixels) / PIXEL_SCALE)
        return torch.softmax(logits, dim=1).numpy(), torch.argmax(logits, dim=1).numpy()
