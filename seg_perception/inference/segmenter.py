# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Inference on RGB frames: the single implementation behind the node,
`predict`, `evaluate` and bag evaluation, so all of them give the same labels.

Backends: ONNX Runtime (CPU fp32 or int8; CUDA; TensorRT fp16 with an engine
cache on disk) and PyTorch (CPU, or CUDA with fp16). `auto` picks the fastest
available: TensorRT, else PyTorch fp16 on a GPU; on a CPU, ONNX Runtime with
the int8 model where one lies next to the checkpoint and the CPU has int8 dot
products (VNNI, AMX), else the fp32 .onnx, else PyTorch.

Each frame reaches the network at its camera's aspect ratio (input_size.py).
On ONNX Runtime the normalisation, ArgMax and top-class confidence run inside
the graph (onnx_graph.py); on PyTorch on the device. Several frames of one
network size run as one batch (`segment_batch`), the several-camera node's path.

Several threads may segment at once (`workers`, the node's parallel workers): on
the CPU with ONNX Runtime a call that runs alone gets the session with every
thread, and calls that overlap get sessions of their own with a share of the
threads each. On a small CPU two overlapping one-thread runs do more frames
per second than one two-thread run (docs/performance.md), and a lone frame
still gets every core.

Flip test-time augmentation (`flip_tta`) runs the frame and its mirror image
as one batch of two and averages their class probabilities: about one point
of CamVid val mIoU for twice the inference time.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..learning.models import class_probabilities
from . import providers as eps
from .checkpoint import CheckpointError, ModelInfo, info_from_dict, load_checkpoint
from .input_size import network_size, parse_input_size
from .onnx_graph import FRAMES, WANT_CONFIDENCE, fused_graph

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
ONNX_METADATA_KEY = "seg_perception"
INT8_SUFFIX = ".int8.onnx"


def sibling_model(path: str | Path, suffix: str) -> Path:
    """The file of the same model with another suffix: camvid_lraspp.pt / .onnx / .int8.onnx."""
    path = Path(path)
    stem = path.name[:-len(INT8_SUFFIX)] if path.name.endswith(INT8_SUFFIX) else path.with_suffix("").name
    return path.with_name(stem + suffix)

#: Frames larger than this (pixels) are refused rather than resized: a corrupt header, not a camera.
MAX_PIXELS = 64_000_000


class InputError(ValueError):
    """A frame the segmenter cannot take (empty, wrong shape, absurd size)."""


@dataclass
class Segmentation:
    """Per-pixel class ids and top-class confidence (both uint8, HxW) plus timing.

    inference_ms covers resizing, the network and post-processing; for a frame of a batch it is
    the whole batch's time.
    """

    labels: np.ndarray
    confidence: np.ndarray | None  # None where it was not asked for and not computed
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


def gpu_available() -> bool:
    try:
        import torch
        if torch.cuda.is_available():
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return eps.CUDA in eps.available()


def resolve_device(device: str, notes: list[str] | None = None) -> str:
    """The device to run on (cpu or cuda); a GPU asked for where there is none: the CPU, and a note."""
    if device not in DEVICES:
        raise ValueError(f"device '{device}' unknown; choose one of {list(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "cuda"
    if device == "cuda" and notes is not None:
        notes.append("device 'cuda' requested but no CUDA GPU is available to PyTorch or ONNX Runtime: "
                     "running on the CPU")
    return "cpu"


class Segmenter:
    """Loads a model file once and segments frames of any size, one or a batch at a time.

    `notes` lists what the caller should tell the user: a GPU or precision asked for that this
    machine cannot give, and what runs instead.
    """

    def __init__(self, model_path: str | Path | None, *, device: str = "auto", backend: str = "auto",
                 precision: str = "auto", threads: int | None = None, input_size="auto",
                 flip_tta: bool = False, max_batch: int = 1, workers: int = 1,
                 trt_cache_dir: str | Path | None = None, trt_rebuild: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"backend '{backend}' unknown; choose one of {list(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision '{precision}' unknown; choose one of {list(PRECISIONS)}")
        self.notes: list[str] = []
        self.model_path = resolve_model(model_path)
        if not self.model_path.exists():
            raise CheckpointError(f"model file {self.model_path} does not exist")
        self.threads = threads
        self.flip_tta = bool(flip_tta)
        self.max_batch = max(1, int(max_batch))
        self._local = threading.local()  # each calling thread's input buffers
        self._lock = threading.Lock()
        self._in_flight = 0
        self.overlapped = 0  # calls that ran alongside another one, on a session with a share of the threads
        self._shares: list = []  # idle sessions with a share of the threads, for overlapping calls
        self.input_setting = parse_input_size(input_size)
        self.onnx_path: Path | None = None  # the ONNX graph that runs (None on PyTorch)
        self._trt: dict | None = None       # TensorRT engine settings (None elsewhere)
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        want_gpu = device == "cuda" or backend == "tensorrt" or (device == "auto" and precision == "fp16")
        self.device = resolve_device("cuda" if want_gpu and device != "cpu" else device, self.notes)
        is_onnx = self.model_path.suffix.lower() == ".onnx"
        backend = self._choose_backend(backend, is_onnx)
        self.backend = backend
        if backend == "torch":
            self._init_torch(precision)
        else:
            self._init_onnx(precision, trt_cache_dir, trt_rebuild)
        self.classes = self.info.classes
        self.workers = self._choose_workers(max(0, int(workers)))

    # -- choosing -------------------------------------------------------------
    def _choose_backend(self, backend: str, is_onnx: bool) -> str:
        if backend == "torch" and is_onnx:
            raise CheckpointError(f"backend 'torch' needs a .pt checkpoint, got {self.model_path}")
        if backend == "tensorrt":
            if self.device != "cuda":
                self.notes.append("backend 'tensorrt' needs a CUDA GPU: running ONNX Runtime on the CPU")
                return "onnxruntime"
            try:
                eps.gpu_providers("tensorrt")
            except eps.ProviderError as exc:
                self.notes.append(f"{exc}: running ONNX Runtime on the CPU")
                self.device = "cpu"
                return "onnxruntime"
            return backend
        if backend != "auto":
            return backend
        has_onnx = is_onnx or self._sibling_onnx(".onnx") is not None
        if self.device == "cuda":
            if has_onnx and eps.TENSORRT in eps.available():
                return "tensorrt"
            return "onnxruntime" if is_onnx else "torch"
        return "onnxruntime" if has_onnx else "torch"

    def _choose_workers(self, asked: int) -> int:
        """How many calls may usefully overlap: `asked`, or with 0 (auto) two where ONNX Runtime runs
        on a CPU of two or more cores (each overlapping call gets a session with its share of the
        threads), else one (a GPU, PyTorch: one call at a time uses the device best).
        """
        threads = self.threads or len(os.sched_getaffinity(0))
        splits = self._fused is not None and self._trt is None and self._providers == [eps.CPU]
        workers = asked or (2 if splits and threads >= 2 else 1)
        if splits and workers > 1:
            opts = self._session_options(max(1, threads // workers))
            self._shares = [self._ort.InferenceSession(self._fused_model, opts, providers=self._providers)
                            for _ in range(workers)]
        return workers

    def _sibling_onnx(self, suffix: str) -> Path | None:
        """An .onnx (or .int8.onnx) exported from exactly this checkpoint (matched by SHA-256), if present."""
        cand = sibling_model(self.model_path, suffix)
        want = (self._onnx_meta(self.model_path).get("checkpoint_sha256")
                if self.model_path.suffix.lower() == ".onnx" else None)
        if not cand.is_file():
            return None
        try:
            meta = read_onnx_metadata(cand)
        except CheckpointError:
            return None
        if want is None:
            want = file_sha256(self.model_path)
        return cand if want and meta.get("checkpoint_sha256") == want else None

    _meta_cache: dict = {}

    def _onnx_meta(self, path: Path) -> dict:
        key = (str(path), path.stat().st_mtime_ns)
        if key not in self._meta_cache:
            self._meta_cache[key] = read_onnx_metadata(path)
        return self._meta_cache[key]

    def _onnx_file(self, precision: str) -> tuple[Path, str]:
        """The .onnx to run and its precision, from the model file and the precision asked for."""
        if self.model_path.suffix.lower() == ".onnx":
            own = "int8" if self._onnx_meta(self.model_path).get("quantization") else "fp32"
            if precision in ("auto", own) or (precision == "fp16" and own == "fp32"):
                return self.model_path, own
            other = self._sibling_onnx(INT8_SUFFIX if precision == "int8" else ".onnx")
            if other is None:
                raise CheckpointError(f"precision '{precision}' asked for, but {self.model_path} is {own} and no "
                                      f"{precision} model of the same checkpoint lies next to it"
                                      + (" (seg-perception export --int8)" if precision == "int8" else ""))
            return other, precision
        fp32 = self._sibling_onnx(".onnx")
        if fp32 is None:
            raise CheckpointError(f"backend '{self.backend}' needs an exported .onnx next to {self.model_path} "
                                  "(seg-perception export)")
        if precision == "int8" or (precision == "auto" and self.device == "cpu"):
            int8 = self._sibling_onnx(INT8_SUFFIX)
            if int8 is not None and (precision == "int8" or eps.cpu_int8_dot_product()):
                return int8, "int8"
            if precision == "int8":
                raise CheckpointError(f"precision 'int8' asked for, but no int8 model of {self.model_path.name} "
                                      f"lies next to it (seg-perception export --int8 writes {self.model_path.stem}"
                                      f"{INT8_SUFFIX})")
        return fp32, "fp32"

    # -- loading ------------------------------------------------------------
    def _init_torch(self, precision: str) -> None:
        import torch
        if precision == "int8":
            raise CheckpointError("precision 'int8' runs on ONNX Runtime (backend onnxruntime or auto), not PyTorch")
        if self.threads:
            torch.set_num_threads(self.threads)
        model, self.info = load_checkpoint(self.model_path)
        if precision == "fp16" and self.device != "cuda":
            self.notes.append("precision 'fp16' needs a GPU: running fp32 on the CPU")
        self.half = self.device == "cuda" and precision in ("auto", "fp16")
        model = model.to(self.device)
        if self.half:
            model = model.half()
        self._torch_model = model
        self._torch = torch
        mean = torch.tensor(self.info.mean, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.info.std, device=self.device).view(1, 3, 1, 1) * 255
        self._mean, self._std = mean, std
        self.precision = "fp16" if self.half else "fp32"
        self.provider = f"torch-{self.device}{'-fp16' if self.half else ''}"
        self._fused = None

    def _init_onnx(self, precision: str, trt_cache_dir, trt_rebuild: bool) -> None:
        import onnxruntime as ort
        path, self.precision = self._onnx_file(precision)
        self.onnx_path = path
        meta = self._onnx_meta(path)
        self.info = info_from_dict(meta, source=str(path))
        if self.precision == "int8" and self.device == "cpu" and not eps.cpu_int8_dot_product():
            self.notes.append("the int8 model runs on this CPU, but the CPU has no int8 dot-product instructions "
                              "(VNNI, AMX): the fp32 model is likely faster here (precision: fp32)")
        if precision == "fp16" and self.backend == "onnxruntime" and self.device == "cpu":
            self.notes.append("precision 'fp16' needs a GPU: running fp32 on the CPU")
        self._ort = ort
        self._opts = self._session_options(self.threads)
        if self.backend == "tensorrt":
            self._trt = dict(root=trt_cache_dir, rebuild=bool(trt_rebuild), sha=file_sha256(path),
                             fp16=precision != "fp32")
            self._providers = [eps.CUDA, eps.CPU]
        elif self.device == "cuda" and eps.CUDA in eps.available():
            self._providers = [eps.CUDA, eps.CPU]
        else:
            self._providers = [eps.CPU]
        self._plain = None
        self._fused_model = None
        self._sessions: dict[tuple[int, int], object] = {}
        try:
            self._fused_model = fused_graph(path, self.info.mean, self.info.std,
                                            optional_confidence=self._trt is None)
        except Exception:  # a graph that cannot take the extra nodes: the plain path serves
            self._fused_model = None
        self._mean = np.asarray(self.info.mean, np.float32).reshape(1, 3, 1, 1) * 255
        self._std = np.asarray(self.info.std, np.float32).reshape(1, 3, 1, 1) * 255
        self.half = False
        # dynamic shapes: one session serves every size, except TensorRT (one engine per size)
        self._fused = self._fused_session(tuple(self.info.input_size)) if self._fused_model else None
        if self._trt:
            self.precision = "fp16" if self._trt["fp16"] and self.precision == "fp32" else self.precision
        kind = "tensorrt" if self._trt else ("cuda" if eps.CUDA in self._providers else "cpu")
        self.provider = f"onnxruntime-{kind}-{self.precision}"

    def _session_options(self, threads: int | None):
        opts = self._ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: a node shares its cores with the camera driver,
        # DDS and the planners; spinning doubled the CPU time per 30 Hz frame (docs/performance.md).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return opts

    @contextmanager
    def _session_for(self, size: tuple[int, int]):
        """The fused session a call runs on: the one with every thread when no other call is running,
        else an idle one with a share of the threads (see `workers`).
        """
        with self._lock:
            share = self._shares.pop() if self._in_flight and self._shares else None
            self._in_flight += 1
            self.overlapped += share is not None
        try:
            yield share if share is not None else self._fused_session(size)
        finally:
            with self._lock:
                self._in_flight -= 1
                if share is not None:
                    self._shares.append(share)

    def _fused_session(self, size: tuple[int, int]):
        if self._trt is None:
            if not self._sessions:
                self._sessions[None] = self._ort.InferenceSession(self._fused_model, self._opts,
                                                                  providers=self._providers)
            return self._sessions[None]
        if size not in self._sessions:
            self._sessions[size] = self._trt_session(size)
        return self._sessions[size]

    def _trt_session(self, size: tuple[int, int]):
        """A TensorRT session for one network size; a cache that fails to load is wiped and rebuilt once."""
        cache = eps.TensorRTCache(self._trt["root"], self._trt["sha"], size, self.max_batch)
        if self._trt["rebuild"]:
            cache.reset()
        last = None
        for attempt in range(2):
            options = cache.provider_options(FRAMES, size, self.max_batch, fp16=self._trt["fp16"])
            try:
                session = self._ort.InferenceSession(self._fused_model, self._opts,
                                                     providers=[(eps.TENSORRT, options), eps.CUDA, eps.CPU])
                w, h = size
                session.run(None, {FRAMES: np.zeros((1, h, w, 3), np.uint8)})  # builds or loads the engine
                return session
            except Exception as exc:
                last = exc
                if attempt == 0:
                    self.notes.append(f"TensorRT engine cache {cache.path} could not be used "
                                      f"({str(exc).splitlines()[0][:200]}): rebuilt")
                    cache.reset()
        raise eps.ProviderError(f"TensorRT could not build an engine for {size[0]}x{size[1]}: "
                                f"{str(last).splitlines()[0][:300]}")

    def _plain_session(self):
        """The network alone (float NCHW in, logits out): for probabilities and flip TTA."""
        if self._plain is None:
            providers = [eps.CUDA, eps.CPU] if eps.CUDA in self._providers else [eps.CPU]
            self._plain = self._ort.InferenceSession(str(self.onnx_path), self._opts, providers=providers)
        return self._plain

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's own input size (what it was trained at); frames of other shapes: network_size_for."""
        return tuple(self.info.input_size)

    def network_size_for(self, width: int, height: int) -> tuple[int, int]:
        """The network input (width, height) for frames of this size; fixed per camera, so cached."""
        key = (width, height)
        if key not in self._sizes:
            self._sizes[key] = network_size(key, self.input_size, self.input_setting)
        return self._sizes[key]

    def warm_up(self, frame_size: tuple[int, int] | None = None, batch: int = 1) -> float:
        """Run one batch of black frames (builds TensorRT engines, fills caches); returns milliseconds."""
        w, h = frame_size or self.input_size
        t0 = time.perf_counter()
        frames = [np.zeros((h, w, 3), np.uint8)] * max(1, batch)
        self.segment_batch(frames)
        if self._shares:  # their first run allocates too
            x = self._batch_input(frames, self.network_size_for(w, h))
            for share in self._shares:
                share.run(None, self._fused_feeds(x, True))
        return (time.perf_counter() - t0) * 1000.0

    # -- inference ----------------------------------------------------------
    def _torch_probs(self, x, flip: bool):
        """x: uint8 NxHxWx3 numpy; class probabilities NCHW on the device."""
        torch = self._torch
        t = torch.from_numpy(x).to(self.device).permute(0, 3, 1, 2)
        t = (t.float() - self._mean) / self._std
        return class_probabilities(self._torch_model, t.half() if self.half else t, flip=flip)

    def _onnx_logits(self, x: np.ndarray, flip: bool) -> np.ndarray:
        """x: uint8 NxHxWx3; logits of the plain network (with the mirror images after, for flip)."""
        t = (x.transpose(0, 3, 1, 2).astype(np.float32) - self._mean) / self._std
        if flip:
            t = np.concatenate([t, t[..., ::-1]])
        return self._plain_session().run(None, {"image": t})[0]

    @staticmethod
    def _onnx_probs(logits: np.ndarray, flip: bool, n: int) -> np.ndarray:
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = e / e.sum(1, keepdims=True)
        return (probs[:n] + probs[n:][..., ::-1]) / 2 if flip else probs

    def _fused_feeds(self, x: np.ndarray, confidence: bool) -> dict:
        return {FRAMES: x} if self._trt is not None else {FRAMES: x, WANT_CONFIDENCE: np.array(confidence)}

    def _top(self, x: np.ndarray, flip: bool, confidence: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 class ids and uint8 top-class confidence (N x h x w) at network resolution; the
        confidence may be None when not asked for (the fused graph on the CPU skips it).
        """
        n = x.shape[0]
        if self.backend == "torch":
            with self._torch.inference_mode():
                prob, ids = self._torch_probs(x, flip).max(1)
                conf = (prob * 255.0 + 0.5).clamp_(0, 255).to(self._torch.uint8)
                return ids.to(self._torch.uint8).cpu().numpy(), conf.cpu().numpy()
        if self._fused is not None and not flip:
            with self._session_for((x.shape[2], x.shape[1])) as session:
                ids, conf = session.run(None, self._fused_feeds(x, confidence))
            return ids, conf if conf.size else None
        logits = self._onnx_logits(x, flip)
        if flip:
            probs = self._onnx_probs(logits, flip, n)
            ids, prob = probs.argmax(1).astype(np.uint8), probs.max(1)
        else:
            ids = logits.argmax(1).astype(np.uint8)
            top = logits.max(1, keepdims=True)
            prob = 1.0 / np.exp(logits - top).sum(1)
        return ids, np.clip(prob * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def probabilities(self, rgb: np.ndarray, *, flip_tta: bool | None = None) -> np.ndarray:
        """Every class's probability (C x h x w float32, at the network input size) for an RGB frame.

        For what the top class alone cannot say, such as the entropy of a pixel.
        """
        self.check_frame(rgb)
        size = self.network_size_for(rgb.shape[1], rgb.shape[0])
        x = self._batch_input([rgb], size)
        flip = self.flip_tta if flip_tta is None else flip_tta
        if self.backend == "torch":
            with self._torch.inference_mode():
                return self._torch_probs(x, flip)[0].float().cpu().numpy()
        return self._onnx_probs(self._onnx_logits(x, flip), flip, 1)[0].astype(np.float32)

    @staticmethod
    def check_frame(rgb) -> None:
        """InputError for what cannot be a camera frame (wrong type or shape, empty, absurdly large)."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"expected an HxWx3 uint8 RGB array, got "
                             f"{getattr(rgb, 'dtype', type(rgb).__name__)} {getattr(rgb, 'shape', '')}")
        h, w = rgb.shape[:2]
        if h == 0 or w == 0:
            raise InputError(f"frame is empty ({w}x{h})")
        if h * w > MAX_PIXELS:
            raise InputError(f"frame {w}x{h} exceeds the {MAX_PIXELS // 1_000_000} Mpixel limit")

    def _batch_input(self, frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """The frames resized into one N x h x w x 3 uint8 buffer, reused by the calling thread."""
        nw, nh = size
        key = (len(frames), nw, nh)
        buffers = self._local.__dict__.setdefault("buffers", {})
        buf = buffers.get(key)
        if buf is None:
            if len(buffers) > 16:  # sizes come and go only with cameras; keep the table small
                buffers.clear()
            buf = buffers[key] = np.empty((len(frames), nh, nw, 3), np.uint8)
        for i, rgb in enumerate(frames):
            h, w = rgb.shape[:2]
            if (w, h) == (nw, nh):
                buf[i] = rgb
            else:
                cv2.resize(rgb, (nw, nh), dst=buf[i],
                           interpolation=cv2.INTER_AREA if w > nw else cv2.INTER_LINEAR)
        return buf

    def segment(self, rgb: np.ndarray, *, output_size: str = "input", flip_tta: bool | None = None) -> Segmentation:
        """Segment an HxWx3 uint8 RGB frame.

        The frame reaches the network at network_size_for(its size); labels come back at the
        frame's size (nearest) or, with output_size='network', at the network's.
        flip_tta overrides the segmenter's own setting for this frame.
        """
        return self.segment_batch([rgb], output_size=output_size, flip_tta=flip_tta)[0]

    def segment_batch(self, frames: list[np.ndarray], *, output_size: str = "input",
                      flip_tta: bool | None = None, confidence: bool = True) -> list[Segmentation]:
        """Segment several frames; those with one network size run as one batch (InputError for a bad one).

        confidence=False: nobody needs the confidence; it is None where it can be skipped, else left
        at the network's size.
        """
        for rgb in frames:
            self.check_frame(rgb)
        flip = self.flip_tta if flip_tta is None else flip_tta
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(frames):
            groups.setdefault(self.network_size_for(rgb.shape[1], rgb.shape[0]), []).append(i)
        out: list[Segmentation | None] = [None] * len(frames)
        for size, idx in groups.items():
            # TensorRT engines are built for batches up to max_batch; the other backends take any batch
            step = self.max_batch if self._trt is not None else len(idx)
            for start in range(0, len(idx), step):
                chunk = idx[start:start + step]
                t0 = time.perf_counter()
                ids, conf = self._top(self._batch_input([frames[i] for i in chunk], size), flip, confidence)
                for j, i in enumerate(chunk):
                    h, w = frames[i].shape[:2]
                    lab, cf = ids[j], conf[j] if conf is not None else None
                    if output_size == "input" and (w, h) != size:
                        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
                        if confidence and cf is not None:
                            cf = cv2.resize(cf, (w, h), interpolation=cv2.INTER_LINEAR)
                    out[i] = Segmentation(lab, cf, 0.0)
                ms = (time.perf_counter() - t0) * 1000.0
                for i in chunk:
                    out[i].inference_ms = ms
        return out

    def describe(self) -> str:
        setting = self.input_setting
        net = setting if isinstance(setting, str) else f"{setting[0]}x{setting[1]}"
        return (f"{self.info.arch} ({self.classes.num_classes} classes, trained at {self.input_size[0]}x"
                f"{self.input_size[1]}, network input {net}) "
                f"from {self.model_path}" + (f" (as {self.onnx_path.name})"
                                             if self.onnx_path not in (None, self.model_path) else "")
                + f" on {self.provider}"
                + (f", {self.workers} frames at once" if self.workers > 1 else "")
                + (" with flip TTA" if self.flip_tta else ""))


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
