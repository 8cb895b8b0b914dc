#!/usr/bin/env python3
"""MobileNetV3-small-style ONNX with random weights, for CPU benchmarks and parity tests.

    python3 scripts/make_mobilenet.py OUT.onnx [--width 1.0] [--height 224 --image-width 224]
                                      [--classes 1000] [--seed 0]

Needs only numpy and onnx (the repository's .venv). The graph follows MobileNetV3-small
(Howard et al. 2019, table 2): a 3x3 stride-2 stem, eleven inverted-residual blocks
(1x1 expand, kxk depthwise, optional squeeze-excitation, 1x1 project, residual Add where
shapes allow) with ReLU or HardSwish, a 1x1 576-wide head, GlobalAveragePool, a 1x1 1024 conv
and the classifier (head widths scale with --width like torchvision's). Every conv is followed by an (unfolded) BatchNormalization, as exporters
write them in training mode. Squeeze-excitation is GlobalAveragePool -> 1x1 conv -> Relu ->
1x1 conv -> HardSigmoid -> Mul. The batch dimension is symbolic ("N"); the spatial size is
fixed at generation time (224x224 camera-like, 48x192 OCR-like).

Weights are He-scaled random normals and BatchNorm statistics are near identity, so
activations keep a unit-ish scale through the network (no overflow, no vanishing): outputs
are meaningful for 1e-4 parity checks between engines. Deterministic for a given seed.
"""

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (kernel, expanded channels, out channels, squeeze-excitation, activation, stride)
BLOCKS = [
    (3, 16, 16, True, "Relu", 2),
    (3, 72, 24, False, "Relu", 2),
    (3, 88, 24, False, "Relu", 1),
    (5, 96, 40, True, "HardSwish", 2),
    (5, 240, 40, True, "HardSwish", 1),
    (5, 240, 40, True, "HardSwish", 1),
    (5, 120, 48, True, "HardSwish", 1),
    (5, 144, 48, True, "HardSwish", 1),
    (5, 288, 96, True, "HardSwish", 2),
    (5, 576, 96, True, "HardSwish", 1),
    (5, 576, 96, True, "HardSwish", 1),
]


def divisible(v, d=8):
    """Channel rounding of the reference implementation (never below 90% of v)."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix, arr):
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def node(self, op, inputs, **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, group=1, bias=False):
        fan_in = cin // group * k * k
        w = self.rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(cout, cin // group, k, k))
        ins = [x, self.const("w", w)]
        if bias:
            ins.append(self.const("b", self.rng.normal(0.0, 0.1, size=cout)))
        p = k // 2
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p], group=group)

    def bn(self, x, c):
        scale = self.const("bn_scale", self.rng.uniform(0.8, 1.2, size=c))
        shift = self.const("bn_shift", self.rng.normal(0.0, 0.1, size=c))
        mean = self.const("bn_mean", self.rng.normal(0.0, 0.1, size=c))
        var = self.const("bn_var", self.rng.uniform(0.8, 1.2, size=c))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=1e-3)

    def act(self, x, kind):
        return x if kind is None else self.node(kind, [x])

    def conv_bn_act(self, x, cin, cout, k, stride=1, group=1, act=None):
        return self.act(self.bn(self.conv(x, cin, cout, k, stride, group), cout), act)

    def squeeze_excite(self, x, c):
        mid = divisible(c // 4)
        s = self.node("GlobalAveragePool", [x])
        s = self.node("Relu", [self.conv(s, c, mid, 1, bias=True)])
        s = self.node("HardSigmoid", [self.conv(s, mid, c, 1, bias=True)], alpha=1.0 / 6.0, beta=0.5)
        return self.node("Mul", [x, s])


def build(width, height, image_width, classes, seed):
    b = Builder(seed)
    x = "input"
    cin = divisible(16 * width)
    h = b.conv_bn_act(x, 3, cin, 3, stride=2, act="HardSwish")
    for k, exp, out, se, act, stride in BLOCKS:
        exp, out = divisible(exp * width), divisible(out * width)
        y = h if exp == cin else b.conv_bn_act(h, cin, exp, 1, act=act)
        y = b.conv_bn_act(y, exp, exp, k, stride=stride, group=exp, act=act)
        if se:
            y = b.squeeze_excite(y, exp)
        y = b.conv_bn_act(y, exp, out, 1)
        h = b.node("Add", [h, y]) if stride == 1 and cin == out else y
        cin = out
    last = divisible(576 * width)
    h = b.conv_bn_act(h, cin, last, 1, act="HardSwish")
    h = b.node("GlobalAveragePool", [h])
    head = divisible(1024 * width)
    h = b.node("HardSwish", [b.conv(h, last, head, 1, bias=True)])
    h = b.node("Flatten", [h], axis=1)
    wfc = b.rng.normal(0.0, np.sqrt(1.0 / head), size=(head, classes))
    bfc = b.rng.normal(0.0, 0.01, size=classes)
    logits = "logits"
    b.nodes.append(helper.make_node("Gemm", [h, b.const("fc_w", wfc), b.const("fc_b", bfc)], [logits], name="fc"))
    graph = helper.make_graph(
        b.nodes,
        f"mobilenetv3_small_w{width}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, image_width])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="alembic-bench")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = MobileNetV3-small)")
    ap.add_argument("--height", type=int, default=224)
    ap.add_argument("--image-width", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = build(a.width, a.height, a.image_width, a.classes, a.seed)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
