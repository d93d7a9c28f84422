# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Inference on one RGB frame: the single implementation behind the node,
`predict`, `evaluate` and bag evaluation, so all of them give the same labels.

Backends: PyTorch (CPU, or CUDA with fp16) and ONNX Runtime (CPU, or CUDA
where its provider exists). With backend 'auto' a `.pt` checkpoint runs on
CUDA through PyTorch when a GPU is there, and on CPU through ONNX Runtime when
an exported `.onnx` of the same checkpoint lies next to it (3x faster than
eager PyTorch on CPU); otherwise through PyTorch.

Flip test-time augmentation (`flip_tta`) runs the frame and its mirror image
as one batch of two and averages their class probabilities: about one point
of CamVid val mIoU for twice the inference time.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..learning.models import class_probabilities
from .checkpoint import CheckpointError, ModelInfo, info_from_dict, load_checkpoint

BACKENDS = ("auto", "torch", "onnxruntime")
DEVICES = ("auto", "cpu", "cuda")
ONNX_METADATA_KEY = "seg_perception"

#: Frames larger than this (pixels) are refused rather than resized: a corrupt header, not a camera.
MAX_PIXELS = 64_000_000


class InputError(ValueError):
    """A frame the segmenter cannot take (empty, wrong shape, absurd size)."""


@dataclass
class Segmentation:
    """Per-pixel class ids and top-class confidence (both uint8, HxW) plus timing."""

    labels: np.ndarray
    confidence: np.ndarray
    inference_ms: float


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_onnx_metadata(path: str | Path) -> dict:
    """The checkpoint metadata that `export` stores inside an ONNX file."""
    import onnxruntime as ort
    try:
        sess_opts = ort.SessionOptions()
        sess_opts.log_severity_level = 3
        meta = ort.InferenceSession(str(path), sess_opts, providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:
        raise CheckpointError(f"model file {path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
    raw = meta.custom_metadata_map.get(ONNX_METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"ONNX file {path} carries no seg_perception metadata; export it with "
                              "`seg-perception export`")
    return json.loads(raw)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device '{device}' unknown; choose one of {list(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available")
    return "cuda" if torch.cuda.is_available() else "cpu"


class Segmenter:
    """Loads a model file once and segments frames of any size."""

    def __init__(self, model_path: str | Path | None, *, device: str = "auto", backend: str = "auto",
                 threads: int | None = None, input_size: tuple[int, int] | None = None,
                 half: bool | None = None, flip_tta: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"backend '{backend}' unknown; choose one of {list(BACKENDS)}")
        self.model_path = resolve_model(model_path)
        if not self.model_path.exists():
            raise CheckpointError(f"model file {self.model_path} does not exist")
        self.device = resolve_device(device)
        self.threads = threads
        self.flip_tta = bool(flip_tta)
        is_onnx = self.model_path.suffix.lower() == ".onnx"
        onnx_path = self.model_path if is_onnx else self._sibling_onnx()
        if backend == "auto":
            backend = "onnxruntime" if is_onnx or (self.device == "cpu" and onnx_path is not None) else "torch"
        if backend == "torch" and is_onnx:
            raise CheckpointError(f"backend 'torch' needs a .pt checkpoint, got {self.model_path}")
        if backend == "onnxruntime" and onnx_path is None:
            raise CheckpointError(f"backend 'onnxruntime' needs an exported .onnx next to {self.model_path}")
        self.backend = backend
        if backend == "torch":
            self._init_torch(half)
        else:
            self._init_onnx(onnx_path)
        self.input_size = tuple(input_size) if input_size else tuple(self.info.input_size)
        self.classes = self.info.classes

    # -- loading ------------------------------------------------------------
    def _sibling_onnx(self) -> Path | None:
        """An .onnx exported from exactly this checkpoint (matched by SHA-256), if present."""
        cand = self.model_path.with_suffix(".onnx")
        if not cand.is_file():
            return None
        try:
            meta = read_onnx_metadata(cand)
        except CheckpointError:
            return None
        return cand if meta.get("checkpoint_sha256") == file_sha256(self.model_path) else None

    def _init_torch(self, half: bool | None) -> None:
        import torch
        if self.threads:
            torch.set_num_threads(self.threads)
        model, self.info = load_checkpoint(self.model_path)
        self.half = (self.device == "cuda") if half is None else bool(half and self.device == "cuda")
        model = model.to(self.device)
        if self.half:
            model = model.half()
        self._torch_model = model
        self._torch = torch
        mean = torch.tensor(self.info.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.info.std, device=self.device).view(1, 3, 1, 1) * 255
        self._mean, self._std = mean, std
        self.provider = f"torch-{self.device}{'-fp16' if self.half else ''}"

    def _init_onnx(self, path: Path) -> None:
        import onnxruntime as ort
        meta = read_onnx_metadata(path)
        self.info = info_from_dict(meta, source=str(path))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if self.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(path), opts, providers=providers)
        self._input_name = self._session.get_inputs()[0].name
        # The same graph with the post-processing fused in (labels and confidence as uint8), built once:
        # ONNX Runtime runs ArgMax and the softmax's maximum multithreaded, numpy would on one core.
        try:
            self._fused = ort.InferenceSession(with_top_class(path), opts, providers=providers)
        except Exception:  # a graph that cannot take the extra nodes: the numpy post-processing serves
            self._fused = None
        self._mean = np.asarray(self.info.mean, np.float32).reshape(1, 3, 1, 1) * 255
        self._std = np.asarray(self.info.std, np.float32).reshape(1, 3, 1, 1) * 255
        self.half = False
        self.provider = "onnxruntime-" + self._session.get_providers()[0].replace("ExecutionProvider", "").lower()

    # -- inference ----------------------------------------------------------
    def _torch_probs(self, rgb: np.ndarray, flip: bool):
        torch = self._torch
        x = torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy()).to(self.device).permute(2, 0, 1).unsqueeze(0)
        x = (x.float() - self._mean) / self._std
        return class_probabilities(self._torch_model, x.half() if self.half else x, flip=flip)

    def _onnx_logits(self, rgb: np.ndarray, flip: bool) -> np.ndarray:
        x = (rgb.transpose(2, 0, 1)[None].astype(np.float32) - self._mean) / self._std
        if flip:
            x = np.concatenate([x, x[..., ::-1]])
        return self._session.run(None, {self._input_name: x})[0]

    @staticmethod
    def _onnx_probs(logits: np.ndarray, flip: bool) -> np.ndarray:
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        return (probs[0] + probs[1][..., ::-1]) / 2 if flip else probs[0]

    def _logits_top(self, rgb: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and top softmax probability (or the uint8 confidence) at network resolution."""
        if self.backend == "torch":
            with self._torch.inference_mode():
                prob, ids = self._torch_probs(rgb, flip).max(1)
                return ids[0].to(self._torch.uint8).cpu().numpy(), prob[0].cpu().numpy()
        if self._fused is not None and not flip:
            x = (rgb.transpose(2, 0, 1)[None].astype(np.float32) - self._mean) / self._std
            ids, conf = self._fused.run(None, {self._input_name: x})
            return ids[0], conf[0]
        logits = self._onnx_logits(rgb, flip)
        if flip:
            probs = self._onnx_probs(logits, flip)
            return probs.argmax(0).astype(np.uint8), probs.max(0)
        logits = logits[0]
        ids = logits.argmax(0).astype(np.uint8)
        top = logits.max(0)
        prob = 1.0 / np.exp(logits - top).sum(0)
        return ids, prob

    def probabilities(self, rgb: np.ndarray, *, flip_tta: bool | None = None) -> np.ndarray:
        """Every class's probability (C x h x w float32, at the model's input size) for an RGB frame.

        For what the top class alone cannot say, such as the entropy of a pixel.
        """
        net_in = self._network_input(rgb)
        flip = self.flip_tta if flip_tta is None else flip_tta
        if self.backend == "torch":
            with self._torch.inference_mode():
                return self._torch_probs(net_in, flip)[0].float().cpu().numpy()
        return self._onnx_probs(self._onnx_logits(net_in, flip), flip).astype(np.float32)

    def _network_input(self, rgb: np.ndarray) -> np.ndarray:
        """The frame checked and resized to the model's input size (contiguous HxWx3 uint8)."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"expected an HxWx3 uint8 RGB array, got "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise InputError(f"frame is empty ({w}x{h})")
        if h * w > MAX_PIXELS:
            raise InputError(f"frame {w}x{h} exceeds the {MAX_PIXELS // 1_000_000} Mpixel limit")
        nw, nh = self.input_size
        net_in = rgb if (w, h) == (nw, nh) else cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA
                                                             if w > nw else cv2.INTER_LINEAR)
        return np.ascontiguousarray(net_in)

    def segment(self, rgb: np.ndarray, *, output_size: str = "input", flip_tta: bool | None = None) -> Segmentation:
        """Segment an HxWx3 uint8 RGB frame.

        The frame is resized to the model's input size; labels come back at the
        frame's size (nearest) or, with output_size='network', at the model's.
        flip_tta overrides the segmenter's own setting for this frame.
        """
        t0 = time.perf_counter()
        net_in = self._network_input(rgb)
        h, w = rgb.shape[:2]
        nw, nh = self.input_size
        ids, prob = self._logits_top(net_in, self.flip_tta if flip_tta is None else flip_tta)
        conf = prob if prob.dtype == np.uint8 else np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if output_size == "input" and (w, h) != (nw, nh):
            ids = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)
            conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
        return Segmentation(ids, conf, (time.perf_counter() - t0) * 1000.0)

    def describe(self) -> str:
        return (f"{self.info.arch} ({self.classes.num_classes} classes, input {self.input_size[0]}x"
                f"{self.input_size[1]}) from {self.model_path} on {self.provider}"
                + (" with flip TTA" if self.flip_tta else ""))


def with_top_class(path: Path) -> bytes:
    """The ONNX model at `path` with its logits turned into uint8 `labels` (ArgMax over classes) and
    uint8 `confidence` (the softmax's maximum * 255, rounded), the outputs `segment` needs.
    """
    import onnx
    from onnx import TensorProto, helper
    model = onnx.load(str(path))
    graph = model.graph
    logits = graph.output[0].name
    nodes = [
        helper.make_node("ArgMax", [logits], ["top_ids"], axis=1, keepdims=0),
        helper.make_node("Cast", ["top_ids"], ["labels"], to=TensorProto.UINT8),
        # the softmax's maximum without the whole softmax: 1 / sum(exp(logits - max))
        helper.make_node("ReduceMax", [logits], ["top_logit"], axes=[1], keepdims=1),
        helper.make_node("Sub", [logits, "top_logit"], ["top_shifted"]),
        helper.make_node("Exp", ["top_shifted"], ["top_exp"]),
        helper.make_node("ReduceSum", ["top_exp", "top_axes"], ["top_sum"], keepdims=0),
        helper.make_node("Div", ["top_255", "top_sum"], ["top_scaled"]),
        helper.make_node("Add", ["top_scaled", "top_half"], ["top_rounded"]),
        helper.make_node("Clip", ["top_rounded", "top_zero", "top_255"], ["top_clipped"]),
        helper.make_node("Cast", ["top_clipped"], ["confidence"], to=TensorProto.UINT8),
    ]
    graph.initializer.extend([helper.make_tensor(name, TensorProto.FLOAT, [], [value]) for name, value in
                              (("top_255", 255.0), ("top_half", 0.5), ("top_zero", 0.0))])
    graph.initializer.append(helper.make_tensor("top_axes", TensorProto.INT64, [1], [1]))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("labels", TensorProto.UINT8, None),
                         helper.make_tensor_value_info("confidence", TensorProto.UINT8, None)])
    if next(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 18:
        raise ValueError("ReduceMax takes its axes as an input from opset 18 on")
    return model.SerializeToString()


#: The shipped models by name; they live inside the installed Python package, so pip and colcon installs find them.
SHIPPED_MODELS = {"camvid": "camvid_lraspp.pt", "driving": "driving_lraspp.pt"}
DEFAULT_MODEL = "driving"  # serves planners best: see docs/model_driving.md


def shipped_model_path(name: str) -> Path:
    return Path(__file__).resolve().parents[1] / "models" / SHIPPED_MODELS[name]


def default_model_path() -> Path:
    """The model used when none is named."""
    return shipped_model_path(DEFAULT_MODEL)


def resolve_model(value: str | Path | None) -> Path:
    """A shipped model's name (camvid, driving) or a model file's path; empty = the default model (driving).

    A name wins over a file of the same name in the working folder; write ./driving for that.
    """
    text = str(value).strip() if value is not None else ""
    if not text:
        return default_model_path()
    if text in SHIPPED_MODELS:
        return shipped_model_path(text)
    path = Path(text).expanduser()
    if not path.exists() and not path.suffix and len(path.parts) == 1:
        raise CheckpointError(f"unknown model '{text}': not a shipped model ({', '.join(SHIPPED_MODELS)}) "
                              "and no such file")
    return path


def model_info(path: str | Path) -> ModelInfo:
    """Metadata of a .pt or .onnx model file (or shipped model name) without building a session for inference."""
    path = resolve_model(path)
    if path.suffix.lower() == ".onnx":
        return info_from_dict(read_onnx_metadata(path), source=str(path))
    return load_checkpoint(path)[1]
