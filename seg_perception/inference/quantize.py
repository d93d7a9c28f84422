# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Static int8 quantization of an exported model with ONNX Runtime's own tooling.

QDQ format, int8 per-channel weights, uint8 activations whose ranges are calibrated on real
training frames (99.99th percentile of each activation, which ignores the rare outliers a min/max
calibration would stretch the range for). The result is a normal .onnx with the same metadata plus
what was done, so `Segmenter` and `model_info` read it like any exported model.
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


def quantize_int8(onnx_model: str | Path, frames: Iterable[np.ndarray], output: str | Path | None = None, *,
                  source: str = "") -> dict:
    """Write the int8 model of an exported fp32 `onnx_model`, calibrated on `frames` (HxWx3 uint8 RGB).

    Each frame is resized to the model's input size and normalised exactly as inference does.
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
        meta["quantization"] = {"precision": "int8", "format": "QDQ", "weights": "int8 per channel",
                                "activations": f"uint8, {PERCENTILE} percentile calibration",
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
