# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The reference pipeline of the benchmark: the segmentation node a user writes first, with the same model.

An rclpy node subscribing sensor_msgs/Image (best effort, depth 1: it drops frames when slow) that
does everything in the subscription callback: the frame as numpy (as cv_bridge does it), resized to
a fixed 480x360 whatever the camera's aspect (distorting 16:9 frames), normalised in numpy, the
shipped fp32 .onnx through a plain ONNX Runtime session, a numpy softmax over every class and
argmax, labels and confidence resized back to the frame, and every output (labels, drivable and
obstacle masks, confidence, overlay) made and published on every frame, subscribed or not.
It is deliberately not tuned; it is not wrong: its labels are the model's.

    python -m seg_perception.benchmark.naive --ros-args -r image:=/cam/image_raw    # publishes /naive/labels ...
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

NODE_NAME = "naive"
#: The size a first pipeline resizes every frame to: the model's training size.
FIXED_SIZE = (480, 360)
OUTPUTS = ("labels", "drivable_mask", "obstacle_mask", "confidence", "overlay")


def onnx_model(model: str | Path | None = None) -> Path:
    """The fp32 .onnx of a shipped model name or checkpoint (the one a user finds next to the .pt)."""
    from ..inference.segmenter import resolve_model
    path = resolve_model(model)
    if path.suffix.lower() != ".onnx":
        path = path.with_suffix(".onnx")
    if path.name.endswith(".int8.onnx"):
        path = path.with_name(path.name[:-len(".int8.onnx")] + ".onnx")
    if not path.is_file():
        from ..inference.checkpoint import CheckpointError
        raise CheckpointError(f"the naive pipeline runs an exported fp32 .onnx; {path} does not exist")
    return path


def imgmsg_to_array(msg) -> np.ndarray:
    """What cv_bridge's imgmsg_to_cv2 does for rgb8/bgr8: a numpy view of the message's buffer."""
    return np.ndarray(shape=(msg.height, msg.width, 3), dtype=np.uint8, buffer=msg.data,
                      strides=(msg.step, 3, 1))


def array_to_imgmsg(array: np.ndarray, encoding: str, header=None):
    """What cv_bridge's cv2_to_imgmsg does: a new Image, the array's bytes copied into it."""
    from sensor_msgs.msg import Image
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = array.strides[0]
    msg.data.frombytes(np.ascontiguousarray(array).tobytes())
    return msg


class NaivePipeline:
    """The naive per-frame steps, split the way the benchmark times them."""

    def __init__(self, model: str | Path | None = None, size: tuple[int, int] = FIXED_SIZE) -> None:
        import onnxruntime as ort

        from ..inference.segmenter import model_info
        self.path = onnx_model(model)
        info = model_info(self.path)
        self.classes = info.classes
        self.size = tuple(size)
        self.mean = np.asarray(info.mean, np.float32)
        self.std = np.asarray(info.std, np.float32)
        wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")  # what a first script asks for
        self.providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(self.path), providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.palette = self.classes.palette_array()
        self.drivable_ids = list(self.classes.ids(self.classes.drivable))
        self.obstacle_ids = list(self.classes.ids(self.classes.obstacle))

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """Fixed-size resize (aspect not kept) and numpy normalisation to a float NCHW tensor."""
        small = cv2.resize(rgb, self.size)
        x = (small.astype(np.float32) / 255.0 - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def postprocess(self, logits: np.ndarray, frame_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Softmax over every class in numpy, argmax, and labels and confidence resized to the frame."""
        e = np.exp(logits[0] - logits[0].max(axis=0, keepdims=True))
        probs = e / e.sum(axis=0, keepdims=True)
        labels = probs.argmax(axis=0).astype(np.uint8)
        confidence = (probs.max(axis=0) * 255).astype(np.uint8)
        w, h = frame_size
        return (cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST),
                cv2.resize(confidence, (w, h), interpolation=cv2.INTER_LINEAR))

    def output_arrays(self, rgb: np.ndarray, labels: np.ndarray, confidence: np.ndarray) -> dict:
        drivable = np.isin(labels, self.drivable_ids).astype(np.uint8) * 255
        obstacle = np.isin(labels, self.obstacle_ids).astype(np.uint8) * 255
        blended = cv2.addWeighted(self.palette[labels], 0.5, rgb, 0.5, 0.0)
        return {"labels": labels, "drivable_mask": drivable, "obstacle_mask": obstacle, "confidence": confidence,
                "overlay": blended}

    def messages(self, arrays: dict, header=None) -> dict:
        return {name: array_to_imgmsg(a, "rgb8" if a.ndim == 3 else "mono8", header) for name, a in arrays.items()}

    def __call__(self, msg) -> dict:
        """One Image message in, every output message out (the callback's work without publishing)."""
        rgb = imgmsg_to_array(msg)
        labels, confidence = self.postprocess(self.infer(self.preprocess(rgb)), (rgb.shape[1], rgb.shape[0]))
        return self.messages(self.output_arrays(rgb, labels, confidence), msg.header)


def _make_node():
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    class NaiveNode(Node):
        """Everything in the subscription callback; every output published on every frame."""

        def __init__(self) -> None:
            super().__init__(NODE_NAME)
            model = self.declare_parameter("model", "").value
            self.pipeline = NaivePipeline(model or None)
            self.pubs = {name: self.create_publisher(Image, f"~/{name}", 10) for name in OUTPUTS}
            self.sub = self.create_subscription(Image, "image", self.on_image,
                                                QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
            self.get_logger().info(f"naive segmentation of {self.sub.topic_name} with {self.pipeline.path.name} on "
                                   f"{self.pipeline.providers[0]}, fixed {self.pipeline.size[0]}x"
                                   f"{self.pipeline.size[1]} input")

        def on_image(self, msg) -> None:
            for name, out in self.pipeline(msg).items():
                self.pubs[name].publish(out)

    return NaiveNode()


def main(args=None) -> int:
    """`python -m seg_perception.benchmark.naive`: spins the naive node until Ctrl-C (exit 0)."""
    from ..ros.executable import run_node
    return run_node(_make_node, logger_name=NODE_NAME, args=args)


if __name__ == "__main__":
    sys.exit(main())
