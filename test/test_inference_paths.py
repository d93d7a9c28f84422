# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The inference paths of the hot path: the fused graph against the unfused reference, network
input sizes that keep the camera's aspect, batches, the shipped int8 models against fp32 on real
frames, int8 export, and what happens when a GPU, TensorRT or int8 is asked for and cannot be had.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from seg_perception.cli import main as cli
from seg_perception.inference import providers
from seg_perception.inference.checkpoint import CheckpointError
from seg_perception.inference.input_size import InputSizeError, network_size, parse_input_size
from seg_perception.inference.segmenter import Segmenter, model_info, shipped_model_path
from seg_perception.learning.datasets import read_rgb

REPO = Path(__file__).resolve().parents[1]
CAMVID_FRAMES = sorted((REPO / "sample_data" / "camvid_val" / "images").glob("*.png"))
IDD_FRAMES = sorted((REPO / "sample_data" / "idd_lite").rglob("*_image.jpg"))


@pytest.fixture(scope="module")
def bundled():
    """Every bundled real frame: 12 CamVid (480x360) and 8 IDD-Lite (320x227)."""
    return [read_rgb(p) for p in CAMVID_FRAMES + IDD_FRAMES]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_fused_graph_equals_the_unfused_reference(precision, bundled):
    """uint8 frames in, labels and confidence out of one graph: the labels of the plain network with
    numpy's post-processing exactly, the confidence within one grey level.
    """
    seg = Segmenter("driving", device="cpu", backend="onnxruntime", precision=precision)
    assert seg.precision == precision and seg._fused is not None
    fused = seg._fused
    for rgb in bundled[::3]:
        a = seg.segment(rgb)
        seg._fused = None
        try:
            b = seg.segment(rgb)
        finally:
            seg._fused = fused
        np.testing.assert_array_equal(a.labels, b.labels)
        assert np.abs(a.confidence.astype(int) - b.confidence.astype(int)).max() <= 1
        # nobody needs the confidence: the graph skips it, the labels stay the same
        c = seg.segment_batch([rgb], confidence=False)[0]
        assert c.confidence is None
        np.testing.assert_array_equal(c.labels, a.labels)


@pytest.mark.parametrize("frame, expected", [
    ((640, 480), (480, 360)),    # 4:3, the model's own aspect: its own size
    ((1280, 720), (640, 360)),   # 16:9
    ((1920, 1080), (640, 360)),
    ((320, 227), (512, 360)),    # IDD-Lite
    ((2640, 800), (1184, 360)),  # 3.3:1
])
def test_network_input_keeps_the_camera_aspect(frame, expected):
    assert network_size(frame, (480, 360)) == expected
    w, h = expected
    assert w % 32 == 0 and abs((w / h) / (frame[0] / frame[1]) - 1) < 0.03
    assert network_size(frame, (480, 360), "model") == (480, 360)
    assert network_size(frame, (480, 360), parse_input_size("800x448")) == (800, 448)


@pytest.mark.parametrize("frame", [(700, 1), (100, 10), (4000, 400), (1, 500)])
def test_a_frame_of_absurd_shape_gets_a_bounded_network_input(frame):
    """A hostile 700x1 frame must not become a 250000x360 network input (memory, time)."""
    w, h = network_size(frame, (480, 360))
    assert w % 32 == 0 and h % 32 in (0, 360 % 32) and w * h <= 3 * 480 * 360 and min(w, h) >= 32


def test_input_size_settings_are_checked():
    assert parse_input_size("") == "auto" and parse_input_size("MODEL") == "model"
    assert parse_input_size("640x360") == (640, 360) and parse_input_size([512, 288]) == (512, 288)
    for bad in ("wide", "640", "0x360", "640x99999"):
        with pytest.raises(InputSizeError):
            parse_input_size(bad)


def test_the_network_runs_at_the_aspect_preserving_size(bundled):
    seg = Segmenter("driving", device="cpu", precision="fp32")
    rgb = cv2.resize(bundled[0][45:315], (1280, 720), interpolation=cv2.INTER_LINEAR)  # a 16:9 frame
    wide = cv2.resize(bundled[0][120:240], (1320, 400), interpolation=cv2.INTER_LINEAR)  # 3.3:1
    for frame, net in ((rgb, (640, 360)), (wide, (1184, 360)), (bundled[0], (480, 360))):
        assert seg.network_size_for(frame.shape[1], frame.shape[0]) == net
        out = seg.segment(frame, output_size="network")
        assert out.labels.shape == (net[1], net[0]) and out.confidence.shape == (net[1], net[0])
        assert seg.segment(frame).labels.shape == frame.shape[:2]
    squeezed = Segmenter("driving", device="cpu", precision="fp32", input_size="model")
    assert squeezed.segment(rgb, output_size="network").labels.shape == (360, 480)


def test_a_batch_gives_each_frame_its_own_result(bundled):
    seg = Segmenter("driving", device="cpu", precision="fp32")
    frames = [bundled[0], bundled[12], bundled[1], cv2.resize(bundled[2], (640, 360))]  # three network sizes
    batch = seg.segment_batch(frames)
    for rgb, got in zip(frames, batch):
        alone = seg.segment(rgb)
        assert got.labels.shape == rgb.shape[:2]
        assert (got.labels == alone.labels).mean() > 0.999
        assert np.abs(got.confidence.astype(int) - alone.confidence.astype(int)).max() <= 1


def test_overlapping_calls_give_a_lone_calls_results(bundled):
    """Two threads segmenting at once (the node's parallel workers) get exactly what one call alone
    gets, the overlapping ones on sessions with a share of the threads.
    """
    import threading
    seg = Segmenter("driving", device="cpu", backend="onnxruntime", precision="fp32", threads=2, workers=2)
    assert seg.workers == 2 and "2 frames at once" in seg.describe()
    alone = [seg.segment(rgb) for rgb in bundled]
    assert seg.overlapped == 0
    start = threading.Barrier(2)
    got: dict = {}

    def work(k: int) -> None:  # the two threads go through the frames in opposite orders
        start.wait()
        for _ in range(3):
            for i in (range(len(bundled)) if k == 0 else reversed(range(len(bundled)))):
                got.setdefault((k, i), []).append(seg.segment(bundled[i]))

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seg.overlapped > 0
    for (_, i), results in got.items():
        for r in results:
            np.testing.assert_array_equal(r.labels, alone[i].labels)
            np.testing.assert_array_equal(r.confidence, alone[i].confidence)


def test_parallel_workers_are_chosen_where_they_pay():
    assert Segmenter("driving", device="cpu", backend="onnxruntime", threads=2, workers=0).workers == 2
    assert Segmenter("driving", device="cpu", backend="onnxruntime", threads=1, workers=0).workers == 1
    torch_seg = Segmenter("driving", device="cpu", backend="torch", workers=0)
    assert torch_seg.workers == 1 and torch_seg._shares == []


@pytest.mark.parametrize("model", ["camvid", "driving"])
def test_shipped_int8_models_agree_with_fp32_on_the_bundled_frames(model, bundled):
    fp32 = Segmenter(model, device="cpu", precision="fp32")
    int8 = Segmenter(model, device="cpu", precision="int8")
    assert int8.precision == "int8" and int8.onnx_path.name.endswith(".int8.onnx")
    info = model_info(int8.onnx_path)
    assert info.classes.names == fp32.classes.names and info.input_size == fp32.input_size
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 3
    agree = total = 0
    for rgb in bundled:
        agree += int((fp32.segment(rgb).labels == int8.segment(rgb).labels).sum())
        total += rgb.shape[0] * rgb.shape[1]
    assert agree / total >= 0.97, f"int8 labels agree with fp32 on {100 * agree / total:.2f}% of the pixels"


def test_auto_precision_follows_the_cpu():
    seg = Segmenter("driving", device="cpu")
    expected = "int8" if providers.cpu_int8_dot_product() else "fp32"
    assert seg.precision == expected and seg.provider == f"onnxruntime-cpu-{expected}"
    assert providers.cpu_int8_dot_product("flags\t: fpu sse avx2 avx512f avx512_vnni\n") == "avx512_vnni"
    assert providers.cpu_int8_dot_product("flags\t: fpu sse avx2 amx_int8\n") == "amx_int8"
    assert providers.cpu_int8_dot_product("Features\t: fp asimd asimddp\n") == "asimddp"
    assert providers.cpu_int8_dot_product("flags\t: fpu sse avx2\n") is None


def test_int8_without_vnni_runs_with_a_warning(monkeypatch):
    monkeypatch.setattr(providers, "cpu_int8_dot_product", lambda cpuinfo=None: None)
    assert Segmenter("driving", device="cpu").precision == "fp32"  # auto does not pick it there
    seg = Segmenter("driving", device="cpu", precision="int8")
    assert seg.precision == "int8" and any("no int8 dot-product" in n for n in seg.notes)


def test_what_cannot_be_had_is_said(tmp_path):
    if providers.CUDA not in providers.available():
        seg = Segmenter("driving", device="cuda")
        assert seg.device == "cpu" and any("no CUDA GPU" in n for n in seg.notes)
    if providers.TENSORRT not in providers.available():
        seg = Segmenter("driving", backend="tensorrt")
        assert seg.backend == "onnxruntime" and seg.provider.startswith("onnxruntime-cpu")
        assert any("tensorrt" in n.lower() for n in seg.notes)
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(shipped_model_path("driving").with_suffix(".onnx").read_bytes())
    with pytest.raises(CheckpointError, match="no int8 model"):
        Segmenter(lone, precision="int8")
    with pytest.raises(CheckpointError, match="ONNX Runtime"):
        Segmenter("driving", backend="torch", precision="int8")


def test_tensorrt_cache_is_keyed_and_reset(tmp_path):
    a = providers.TensorRTCache(tmp_path, "ab" * 32, (640, 360), 4)
    b = providers.TensorRTCache(tmp_path, "ab" * 32, (480, 360), 4)
    c = providers.TensorRTCache(tmp_path, "cd" * 32, (640, 360), 4)
    assert len({a.path, b.path, c.path}) == 3 and "640x360-b4" in a.path.name
    opts = a.provider_options("frames", (640, 360), 4)
    assert opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"] and Path(opts["trt_engine_cache_path"]).is_dir()
    assert opts["trt_profile_max_shapes"] == "frames:4x360x640x3"
    (a.path / "stale.engine").write_bytes(b"corrupt")
    a.reset()
    assert not a.path.exists() and b.path.parent.exists()


def test_export_int8_writes_a_calibrated_model(tmp_path):
    fp32 = tmp_path / "m.onnx"
    fp32.write_bytes(shipped_model_path("camvid").with_suffix(".onnx").read_bytes())
    code = cli.main(["export", str(fp32), "--int8", "--calibration", str(CAMVID_FRAMES[0].parent),
                     "--calibration-frames", "6"])
    assert code == 0
    int8 = tmp_path / "m.int8.onnx"
    meta = model_info(int8)
    assert meta.classes.names == model_info(fp32).classes.names
    seg = Segmenter(fp32, precision="int8")
    assert seg.onnx_path == int8 and seg.precision == "int8"
    rgb = read_rgb(CAMVID_FRAMES[5])
    assert (seg.segment(rgb).labels == Segmenter(fp32, precision="fp32").segment(rgb).labels).mean() > 0.95
    assert cli.main(["export", str(fp32), "--int8"]) == 2  # no calibration frames: a clear error
    import onnx
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert "HardSigmoid" not in ops and ops.count("Add") > 20  # requantized (MobileNetV3 has 28)


def test_a_requantized_hard_sigmoid_is_the_hard_sigmoid():
    """DQ -> HardSigmoid -> Q(1/255) -> DQ against its rewrite as a saturating requantization, for
    every uint8 input value and a range of input scales: the same to one step of 1/255.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from seg_perception.inference.quantize import requantized_hard_sigmoids

    for scale, zero_point in ((0.05, 128), (0.1, 60), (0.02, 200), (0.2, 0)):
        nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
                 helper.make_node("HardSigmoid", ["xf"], ["h"], alpha=1 / 6, beta=0.5),
                 helper.make_node("QuantizeLinear", ["h", "hs", "hz"], ["hq"]),
                 helper.make_node("DequantizeLinear", ["hq", "hs", "hz"], ["y"])]
        inits = [numpy_helper.from_array(np.array(scale, np.float32), "xs"),
                 numpy_helper.from_array(np.array(zero_point, np.uint8), "xz"),
                 numpy_helper.from_array(np.array(1 / 255, np.float32), "hs"),
                 numpy_helper.from_array(np.array(0, np.uint8), "hz")]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [256])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        assert requantized_hard_sigmoids(rewritten) == 1
        assert "HardSigmoid" not in [n.op_type for n in rewritten.graph.node]
        x = np.arange(256, dtype=np.uint8)
        run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
               for m in (model, rewritten)]
        exact = np.clip((x.astype(np.float64) - zero_point) * scale / 6 + 0.5, 0, 1)
        assert np.abs(run[1] - exact).max() <= 0.5 / 255 + 1e-6
        assert np.abs(run[1] - run[0]).max() <= 1 / 255 + 1e-6
