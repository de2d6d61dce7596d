"""ResNet-50 (He et al. 2016, "Deep Residual Learning for Image Recognition", Table 1;
torchvision's v1.5 layout with the stride on the 3x3 convolution).

One node per bottleneck block, plus the stem and the classifier. A convolution of
C_in -> C_out with a k x k kernel on an H x W output costs 2 C_in C_out k^2 H W FLOPs
forward. Saved for backward, per convolution: its input and its output twice
(batch-norm input and ReLU output), 16-bit. ResNet has no tensor-parallel form here:
its layers are ``none``-sharded, so data and pipeline parallelism are its choices.
"""

from __future__ import annotations

from simplan.model.graph import LayerGraph
from simplan.model.layer import Layer, Op
from simplan.model.spec import ModelSpec

ACT = 2
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (width, blocks): ResNet-50, Table 1


def _conv(name: str, c_in: int, c_out: int, k: int, side_out: int, side_in: int) -> tuple[Op, Op, float, int]:
    pixels = side_out * side_out
    conv = Op(name=name, kind="matmul", flops=2.0 * c_in * c_out * k * k * pixels,
              act_bytes=ACT * (c_in * side_in * side_in + c_out * pixels), weight_bytes=ACT * c_in * c_out * k * k,
              sharding="none")
    bn_relu = Op(name=f"{name}.bn_relu", kind="elementwise", flops=0.0, act_bytes=4 * ACT * c_out * pixels,
                 sharding="none")
    saved = ACT * (c_in * side_in * side_in + 2 * c_out * pixels)
    params = c_in * c_out * k * k + 2 * c_out  # weights + batch-norm scale and shift
    return conv, bn_relu, saved, params


def _block(name: str, c_in: int, width: int, side_in: int, stride: int) -> Layer:
    side = side_in // stride
    parts = [
        _conv("conv1", c_in, width, 1, side_in, side_in),
        _conv("conv2", width, width, 3, side, side_in),
        _conv("conv3", width, 4 * width, 1, side, side),
    ]
    if stride != 1 or c_in != 4 * width:
        parts.append(_conv("downsample", c_in, 4 * width, 1, side, side_in))
    ops = tuple(op for conv, bn, _, _ in parts for op in (conv, bn))
    return Layer(
        name=name, kind="conv", ops=ops, params=sum(p[3] for p in parts), params_sharding="none",
        act_saved_bytes={"none": sum(p[2] for p in parts)},
        input_bytes=ACT * c_in * side_in * side_in,
        output_bytes=ACT * 4 * width * side * side,
    )


def build_resnet50(spec: ModelSpec) -> LayerGraph:
    side = spec.image_size // 2  # 7x7 stride-2 stem
    conv, bn, saved, params = _conv("stem", 3, 64, 7, side, spec.image_size)
    pooled = side // 2  # 3x3 stride-2 max pool
    layers = [Layer(name="stem", kind="embedding", ops=(conv, bn), params=params, params_sharding="none",
                    act_saved_bytes={"none": saved + ACT * 64 * side * side},
                    output_bytes=ACT * 64 * pooled * pooled)]
    c_in, side = 64, pooled
    for stage, (width, blocks) in enumerate(STAGES):
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            layers.append(_block(f"stage{stage + 1}.block{b}", c_in, width, side, stride))
            c_in, side = 4 * width, side // stride
    c = spec.num_classes
    layers.append(Layer(
        name="head", kind="head",
        ops=(Op(name="pool", kind="elementwise", flops=0.0, act_bytes=ACT * c_in * side * side, sharding="none"),
             Op(name="fc", kind="matmul", flops=2.0 * c_in * c, act_bytes=ACT * (c_in + c),
                weight_bytes=ACT * c_in * c, sharding="none")),
        params=c_in * c + c, params_sharding="none",
        act_saved_bytes={"none": ACT * c_in}, output_bytes=4.0))
    return LayerGraph.chain(spec, layers)
