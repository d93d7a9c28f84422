# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Static int8 quantization of an exported model with ONNX Runtime's own tooling.

QDQ format, int8 per-channel weights, uint8 activations whose ranges are calibrated on real
training frames (99.99th percentile of each activation, which ignores the rare outliers a min/max
calibration would stretch the range for). The result is a normal .onnx with the same metadata plus
what was done, so `Segmenter` and `model_info` read it like any exported model.

MobileNetV3's hard sigmoid, clip(x / 6 + 1/2, 0, 1), and the hard swish built on it (x times it)
are a fifth of the quantized network's time when ONNX Runtime dequantizes, computes and quantizes
again around every one of them. Quantized, the hard sigmoid is exactly a requantization: x + 3
stored with scale 6/255 and zero point 0 saturates to [0, 6], and read back with scale 1/255 it is
(x + 3) / 6 clipped to [0, 1]. `requantized_hard_sigmoids` rewrites each one so; ONNX Runtime then
runs it as one uint8 QLinearAdd (about 11 % of the frame's time saved on an AVX-512 VNNI CPU:
benchmarks/cpu_hot_path.py).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from .segmenter import INT8_SUFFIX, ONNX_METADATA_KEY, read_onnx_metadata, sibling_model

PERCENTILE = 99.99
UINT8_MAX = 255


def quantize_int8(onnx_model: str | Path, frames: Iterable[np.ndarray], output: str | Path | None = None, *,
                  source: str = "", requantize_hard_sigmoids: bool = True) -> dict:
    """Write the int8 model of an exported fp32 `onnx_model`, calibrated on `frames` (HxWx3 uint8 RGB).

    Each frame is resized to the model's input size and normalised exactly as inference does.
    requantize_hard_sigmoids=False leaves them as ONNX Runtime's tooling makes them (for comparison).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx_model = Path(onnx_model)
    output = Path(output) if output else sibling_model(onnx_model, INT8_SUFFIX)
    meta = read_onnx_metadata(onnx_model)
    if meta.get("quantization"):
        raise ValueError(f"{onnx_model} is already quantized")
    w, h = meta["input_size"]
    mean = np.asarray(meta["normalisation"]["mean"], np.float32).reshape(1, 3, 1, 1) * 255
    std = np.asarray(meta["normalisation"]["std"], np.float32).reshape(1, 3, 1, 1) * 255
    used = []

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(frames)

        def get_next(self):
            rgb = next(self.it, None)
            if rgb is None:
                return None
            used.append(1)
            net = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            return {"image": (net.transpose(2, 0, 1)[None].astype(np.float32) - mean) / std}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_model), str(prepared))
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": PERCENTILE})
        if not used:
            raise ValueError("no calibration frames")
        import onnx
        proto = onnx.load(str(quantized))
        rewritten = requantized_hard_sigmoids(proto) if requantize_hard_sigmoids else 0
        meta["quantization"] = {"precision": "int8", "format": "QDQ", "weights": "int8 per channel",
                                "activations": f"uint8, {PERCENTILE} percentile calibration",
                                "hard_sigmoids_requantized": rewritten,
                                "calibration_frames": len(used), "calibration_source": source,
                                "fp32_model": onnx_model.name}
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta)
        fd, tmp_out = tempfile.mkstemp(suffix=".onnx", dir=output.parent)
        os.close(fd)
        try:
            onnx.save(proto, tmp_out)
            os.chmod(tmp_out, 0o644)
            os.replace(tmp_out, output)
        finally:
            Path(tmp_out).unlink(missing_ok=True)
    return {"output": str(output), "bytes": output.stat().st_size, "calibration_frames": len(used)}


def requantized_hard_sigmoids(proto) -> int:
    """Rewrite each quantized hard sigmoid as a saturating requantization (see the module's docstring).

    DQ(x) -> HardSigmoid -> Q -> DQ becomes DQ(x) + DQ(3) -> Q(6/255, 0) -> DQ(1/255, 0): ONNX
    Runtime fuses the first three into a QLinearAdd whose uint8 saturation is the clip. Only hard
    sigmoids with PyTorch's alpha 1/6 and beta 1/2 between quantized tensors are touched; returns how
    many were.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    three, zero = "hard_sigmoid_three", "hard_sigmoid_zero_point"
    relu6_scale, unit_scale = "hard_sigmoid_relu6_scale", "hard_sigmoid_unit_scale"
    def quantized_hard_sigmoid(node) -> bool:
        """PyTorch's hard sigmoid between a DequantizeLinear and one QuantizeLinear read only by DQs."""
        if node.op_type != "HardSigmoid":
            return False
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        before, after = producer.get(node.input[0]), consumers.get(node.output[0], [])
        return (before is not None and before.op_type == "DequantizeLinear"
                and abs(attrs.get("alpha", 0.2) - 1 / 6) < 1e-6 and abs(attrs.get("beta", 0.5) - 0.5) < 1e-6
                and len(after) == 1 and after[0].op_type == "QuantizeLinear"
                and all(n.op_type == "DequantizeLinear" for n in consumers.get(after[0].output[0], [])))

    nodes, count = [], 0
    for node in graph.node:
        if not quantized_hard_sigmoid(node):
            nodes.append(node)
            continue
        nodes.append(helper.make_node("Add", [node.input[0], three], list(node.output),
                                      name=(node.name or node.output[0]) + "_requantized"))
        quantize = consumers[node.output[0]][0]
        quantize.input[1], quantize.input[2] = relu6_scale, zero
        for dequantize in consumers[quantize.output[0]]:
            dequantize.input[1], dequantize.input[2] = unit_scale, zero
        count += 1
    if count:
        graph.initializer.extend([
            numpy_helper.from_array(np.array(UINT8_MAX, np.uint8), three + "_quantized"),
            numpy_helper.from_array(np.array(3.0 / UINT8_MAX, np.float32), three + "_scale"),
            numpy_helper.from_array(np.array(0, np.uint8), zero),
            numpy_helper.from_array(np.array(6.0 / UINT8_MAX, np.float32), relu6_scale),
            numpy_helper.from_array(np.array(1.0 / UINT8_MAX, np.float32), unit_scale),
        ])
        nodes.insert(0, helper.make_node("DequantizeLinear", [three + "_quantized", three + "_scale", zero], [three],
                                         name=three + "_DequantizeLinear"))
        del graph.node[:]
        graph.node.extend(nodes)
    return count
