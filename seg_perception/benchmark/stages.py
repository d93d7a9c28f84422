# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Each stage of a frame's way through the node, timed in one process on the bundled frames (no DDS).

Receiving (rclpy's deserialisation and the decode), resizing to the network input, inference,
post-processing, making each output and publishing (serialisation: what rclpy's publish costs in
the publishing process), and the same stages of the naive pipeline (naive.py) on the same frames.
The node's stages use the segmenter its default parameters give (backend, precision and
input_size auto); `backends` times every backend this machine has, one to four cameras' frames a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2

from .measure import summary, time_each

#: Backend, precision and device combinations tried; a GPU one appears only where the segmenter gets the GPU.
CPU_COMBOS = (("onnxruntime", "fp32", "cpu"), ("onnxruntime", "int8", "cpu"), ("torch", "fp32", "cpu"))
GPU_COMBOS = (("tensorrt", "fp16", "cuda"), ("tensorrt", "fp32", "cuda"), ("onnxruntime", "fp32", "cuda"),
              ("torch", "fp16", "cuda"), ("torch", "fp32", "cuda"))


@dataclass
class Backend:
    """A segmenter of one backend/precision/device and how it was asked for."""

    name: str
    segmenter: object
    is_default: bool = False


def backends(model, max_batch: int, notes: list[str]) -> tuple[Backend, list[Backend]]:
    """The node's default segmenter and one per available combination (deduplicated by provider)."""
    from ..inference.segmenter import Segmenter, gpu_available
    default = Segmenter(model, max_batch=max_batch)
    notes += [f"default segmenter: {n}" for n in default.notes]
    found = {default.provider: Backend(default.provider, default, True)}
    combos = CPU_COMBOS + (GPU_COMBOS if gpu_available() else ())
    for backend, precision, device in combos:
        try:
            seg = Segmenter(model, device=device, backend=backend, precision=precision, max_batch=max_batch)
        except Exception as exc:  # not installed, no int8 model, no engine: the table says so
            notes.append(f"{backend} {precision} on {device}: not available ({str(exc).splitlines()[0][:160]})")
            continue
        if seg.device != device or (backend == "tensorrt" and seg.backend != "tensorrt") or seg.precision != precision:
            notes.append(f"{backend} {precision} on {device}: not available here (got {seg.provider})")
            continue
        found.setdefault(seg.provider, Backend(seg.provider, seg))
    ordered = [found.pop(default.provider)] + list(found.values())
    return ordered[0], ordered


def _upsample(seg, size):
    w, h = size
    labels, conf = seg.labels, seg.confidence
    if labels.shape != (h, w):
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
    return labels, conf


def stage_table(frames, segmenter, naive, repeats: int) -> dict:
    """Per-frame milliseconds of every stage, node and naive, at the frames' resolution.

    Returns {"network_size", "naive_size", "rows": [{"stage", "node": summary|None, "naive": summary|None}]}.
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header

    from ..inference.masks import group_lut, group_mask, overlay
    from ..ros.ros_image import compressed_to_rgb, image_to_rgb, make_image, rgb_to_compressed, rgb_to_image
    from .naive import imgmsg_to_array

    h, w = frames[0].shape[:2]
    header = Header(frame_id="camera")
    header.stamp.sec = 1
    raw = [serialize_message(rgb_to_image(f, "rgb8", header)) for f in frames]
    jpeg = [serialize_message(rgb_to_compressed(f, "jpeg", header, quality=90)) for f in frames]
    nw, nh = segmenter.network_size_for(w, h)
    classes = segmenter.classes
    drivable_lut, obstacle_lut = group_lut(classes.ids(classes.drivable)), group_lut(classes.ids(classes.obstacle))
    palette = classes.palette_array()

    def resize(f):
        return f if (w, h) == (nw, nh) else cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA if w > nw
                                                       else cv2.INTER_LINEAR)

    def infer(f):
        return segmenter.segment_batch([f], output_size="network")[0]

    net_frames = [resize(f) for f in frames]
    net_out = [infer(f) for f in net_frames]
    full = [_upsample(s, (w, h)) for s in net_out]
    labels = [lab for lab, _ in full]

    def outputs(rgb, lab, conf):
        return [make_image(lab, "mono8", header), make_image(group_mask(lab, drivable_lut), "mono8", header),
                make_image(group_mask(lab, obstacle_lut), "mono8", header), make_image(conf, "mono8", header),
                make_image(overlay(rgb, lab, palette, 0.5), "rgb8", header)]

    node_msgs = [outputs(f, lab, conf) for f, (lab, conf) in zip(frames, full)]

    def node_labels_only(b):
        rgb = image_to_rgb(deserialize_message(b, Image))
        serialize_message(make_image(segmenter.segment(rgb).labels, "mono8", header))

    def node_every_output(b):
        rgb = image_to_rgb(deserialize_message(b, Image))
        s = segmenter.segment(rgb)
        for m in outputs(rgb, s.labels, s.confidence):
            serialize_message(m)

    # the naive pipeline's stages on the same frames
    tensors = [naive.preprocess(f) for f in frames]
    logits = [naive.infer(t) for t in tensors]
    naive_out = [naive.postprocess(lg, (w, h)) for lg in logits]
    naive_arrays = [naive.output_arrays(f, lab, conf) for f, (lab, conf) in zip(frames, naive_out)]
    naive_msgs = [list(naive.messages(a, header).values()) for a in naive_arrays]
    naive_inputs = [deserialize_message(b, Image) for b in raw]

    def naive_whole(b):
        for m in naive(deserialize_message(b, Image)).values():
            serialize_message(m)

    from .naive import array_to_imgmsg
    sizes = f"{naive.size[0]}x{naive.size[1]}"
    both = list(zip(frames, labels))
    rows = [
        ("receive rgb8 Image (deserialise, to numpy)",
         time_each(lambda b: image_to_rgb(deserialize_message(b, Image)), raw, repeats),
         time_each(lambda b: imgmsg_to_array(deserialize_message(b, Image)), raw, repeats)),
        ("receive JPEG CompressedImage (deserialise, decode)",
         time_each(lambda b: compressed_to_rgb(deserialize_message(b, CompressedImage)), jpeg, repeats), None),
        (f"resize to the network input (node {nw}x{nh}, naive {sizes})" if (w, h) != (nw, nh) else
         f"resize to the network input (node: none, the frame is its {nw}x{nh}; naive {sizes})",
         time_each(resize, frames, repeats) if (w, h) != (nw, nh) else None,
         time_each(lambda f: cv2.resize(f, naive.size), frames, repeats)),
        ("normalise to float NCHW (node: inside the ONNX graph)", None,
         time_each(naive.preprocess, frames, repeats)),
        ("inference (node: with argmax and confidence in the graph)", time_each(infer, net_frames, repeats),
         time_each(naive.infer, tensors, repeats)),
        ("post-processing (naive: numpy softmax and argmax); labels and confidence to frame size",
         time_each(lambda s: _upsample(s, (w, h)), net_out, repeats),
         time_each(lambda lg: naive.postprocess(lg, (w, h)), logits, repeats)),
        ("output labels (mono8 Image)", time_each(lambda lab: make_image(lab, "mono8", header), labels, repeats),
         time_each(lambda lab: array_to_imgmsg(lab, "mono8", header), [o[0] for o in naive_out], repeats)),
        ("output drivable_mask", time_each(lambda lab: make_image(group_mask(lab, drivable_lut), "mono8", header),
                                           labels, repeats),
         time_each(lambda lab: array_to_imgmsg(_isin_mask(lab, naive.drivable_ids), "mono8", header),
                   [o[0] for o in naive_out], repeats)),
        ("output obstacle_mask", time_each(lambda lab: make_image(group_mask(lab, obstacle_lut), "mono8", header),
                                           labels, repeats),
         time_each(lambda lab: array_to_imgmsg(_isin_mask(lab, naive.obstacle_ids), "mono8", header),
                   [o[0] for o in naive_out], repeats)),
        ("output confidence", time_each(lambda c: make_image(c, "mono8", header), [c for _, c in full], repeats),
         time_each(lambda c: array_to_imgmsg(c, "mono8", header), [c for _, c in naive_out], repeats)),
        ("output overlay (blend, rgb8 Image)",
         time_each(lambda p: make_image(overlay(p[0], p[1], palette, 0.5), "rgb8", header), both, repeats),
         time_each(lambda p: array_to_imgmsg(cv2.addWeighted(naive.palette[p[1]], 0.5, p[0], 0.5, 0.0), "rgb8",
                                             header), list(zip(frames, [o[0] for o in naive_out])), repeats)),
        ("publish labels (serialise)", time_each(serialize_message, [m[0] for m in node_msgs], repeats),
         time_each(serialize_message, [m[0] for m in naive_msgs], repeats)),
        ("publish all five outputs (serialise)",
         time_each(lambda ms: [serialize_message(m) for m in ms], node_msgs, repeats),
         time_each(lambda ms: [serialize_message(m) for m in ms], naive_msgs, repeats)),
        ("segment: resize, inference, post-processing",
         time_each(lambda f: segmenter.segment(f), frames, repeats),
         time_each(lambda m: naive.postprocess(naive.infer(naive.preprocess(imgmsg_to_array(m))), (w, h)),
                   naive_inputs, repeats)),
    ]
    whole_naive = time_each(naive_whole, raw, repeats)
    rows += [
        ("whole frame, labels subscribed (naive: makes every output anyway)",
         time_each(node_labels_only, raw, repeats), whole_naive),
        ("whole frame, every output subscribed", time_each(node_every_output, raw, repeats), whole_naive),
    ]
    return {"resolution": [w, h], "network_size": [nw, nh], "naive_size": list(naive.size),
            "provider": segmenter.provider,
            "rows": [{"stage": name, "node": summary(a) if a is not None else None,
                      "naive": summary(b) if b is not None else None} for name, a, b in rows]}


def _isin_mask(labels, ids):
    """The naive mask: numpy isin per frame, as a first script writes it."""
    import numpy as np
    return np.isin(labels, ids).astype(np.uint8) * 255


def batch_rows(frames, backend: Backend, batches, repeats: int) -> list[dict]:
    """segment_batch of 1..N cameras' frames (camera-size frames in, labels at camera size out) on one backend."""
    seg = backend.segmenter
    h, w = frames[0].shape[:2]
    out = []
    for b in batches:
        groups = [frames[i:i + b] for i in range(0, len(frames) - b + 1, b)]
        ms = time_each(lambda g: seg.segment_batch(g), groups, repeats)
        out.append({"provider": backend.name, "backend": seg.backend, "precision": seg.precision,
                    "device": seg.device, "default": backend.is_default, "resolution": [w, h],
                    "network_size": list(seg.network_size_for(w, h)), "cameras": b,
                    "batch_ms": summary(ms, per_sample=b)})
    return out
