# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Export a checkpoint to ONNX, carry its metadata along and check it against PyTorch."""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .segmenter import ONNX_METADATA_KEY, file_sha256


class ExportMismatchError(RuntimeError):
    """The exported graph does not reproduce the PyTorch outputs."""


def export_onnx(checkpoint: str | Path, output: str | Path | None = None, *, opset: int = 17,
                dynamic: bool = True, check: bool = True, atol: float = 1e-3) -> dict:
    """Write OUTPUT (default: the checkpoint's path with .onnx) and return the check figures.

    Batch, height and width are dynamic axes; the checkpoint's metadata and
    SHA-256 are stored as ONNX metadata so the file is self-describing and a
    node can tell whether it matches a given .pt.
    """
    import onnx

    checkpoint = Path(checkpoint)
    output = Path(output) if output else checkpoint.with_suffix(".onnx")
    model, info = load_checkpoint(checkpoint)
    model.eval()
    w, h = info.input_size
    dummy = torch.randn(1, 3, h, w)
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=output.parent if output.parent.exists() else None)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), tmp, input_names=["image"], output_names=["logits"],
                              dynamic_axes=axes if dynamic else None, opset_version=opset, dynamo=False)
        proto = onnx.load(tmp)
        meta = info.to_dict()
        meta["checkpoint_sha256"] = file_sha256(checkpoint)
        meta["checkpoint_name"] = checkpoint.name
        entry = proto.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta)
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        result = {"output": str(output), "bytes": Path(tmp).stat().st_size}
        if check:
            result.update(compare_with_torch(model, tmp, sizes=[(w, h), (w // 2 + 8, h // 2 + 8)]))
            if result["max_abs_diff"] > atol and result["label_agreement"] < 0.999:
                raise ExportMismatchError(f"ONNX differs from PyTorch: max |diff| {result['max_abs_diff']:.2e}, "
                                          f"label agreement {result['label_agreement']:.4f}")
        output.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return result


def compare_with_torch(model, onnx_path, *, sizes, seed: int = 0) -> dict:
    """Run both on random inputs of several sizes (batch 2) and report the largest difference."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    max_diff, agree, total = 0.0, 0, 0
    for w, h in sizes:
        x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        out = sess.run(None, {"image": x})[0]
        max_diff = max(max_diff, float(np.abs(ref - out).max()))
        agree += int((ref.argmax(1) == out.argmax(1)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return {"max_abs_diff": max_diff, "label_agreement": agree / total, "checked_sizes": [list(s) for s in sizes]}
