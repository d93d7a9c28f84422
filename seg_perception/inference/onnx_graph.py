# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The exported network with the frame's pre- and post-processing fused into the ONNX graph.

In: the camera's pixels as they come (uint8, N x H x W x 3 RGB). Out: uint8 class ids and uint8
top-class confidence (N x H x W). ONNX Runtime then does the normalisation, the transposition, the
ArgMax and the softmax's maximum multithreaded, where numpy would do them on one core, and no float
tensor of the whole frame is made in Python.

With `optional_confidence` the graph takes a boolean `want_confidence` too and computes the
confidence only when it is true (an If node; an empty tensor otherwise): ONNX Runtime runs every
node of a graph whatever outputs are asked for, and the softmax's maximum over the whole frame is a
tenth of a CPU frame's time that nobody needs while only labels are subscribed. TensorRT gets the
plain graph (the branches of an If must agree in shape there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FRAMES = "frames"
LABELS = "labels"
CONFIDENCE = "confidence"
WANT_CONFIDENCE = "want_confidence"


def fused_graph(model: str | Path | bytes, mean, std, *, optional_confidence: bool = False) -> bytes:
    """The model (a path or serialized ONNX) taking uint8 NHWC `frames` (and `want_confidence` with
    `optional_confidence`) and giving `labels`, `confidence`.

    The normalisation is (x - mean*255) / (std*255) in float32 as the unfused path computes it, so
    the network sees the same numbers either way.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    if next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 18:
        raise ValueError("ReduceMax takes its axes as an input from opset 18 on")
    graph = proto.graph
    image = graph.input[0].name
    logits = graph.output[0].name
    mean255 = (np.asarray(mean, np.float32) * np.float32(255)).reshape(1, 1, 1, 3)
    std255 = (np.asarray(std, np.float32) * np.float32(255)).reshape(1, 1, 1, 3)
    pre = [
        # mean and std repeated along a row (1 x 1 x W x 3): a broadcast with a long contiguous inner
        # block, many times faster in ONNX Runtime than one over a trailing axis of 3
        helper.make_node("Shape", [FRAMES], ["fused_shape"]),
        helper.make_node("Slice", ["fused_shape", "fused_from", "fused_to"], ["fused_w3"]),
        helper.make_node("Concat", ["fused_ones", "fused_w3"], ["fused_row_shape"], axis=0),
        helper.make_node("Expand", ["fused_mean", "fused_row_shape"], ["fused_mean_row"]),
        helper.make_node("Expand", ["fused_std", "fused_row_shape"], ["fused_std_row"]),
        helper.make_node("Cast", [FRAMES], ["fused_float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["fused_float", "fused_mean_row"], ["fused_centred"]),
        helper.make_node("Div", ["fused_centred", "fused_std_row"], ["fused_nhwc"]),
        helper.make_node("Transpose", ["fused_nhwc"], [image], perm=[0, 3, 1, 2]),
    ]
    graph.initializer.extend([helper.make_tensor("fused_from", TensorProto.INT64, [1], [2]),
                              helper.make_tensor("fused_to", TensorProto.INT64, [1], [4]),
                              helper.make_tensor("fused_ones", TensorProto.INT64, [2], [1, 1])])
    labels = [
        helper.make_node("ArgMax", [logits], ["fused_ids"], axis=1, keepdims=0),
        helper.make_node("Cast", ["fused_ids"], [LABELS], to=TensorProto.UINT8),
    ]
    confidence = [
        # the softmax's maximum without the whole softmax: 1 / sum(exp(logits - max))
        helper.make_node("ReduceMax", [logits], ["fused_top"], axes=[1], keepdims=1),
        helper.make_node("Sub", [logits, "fused_top"], ["fused_shifted"]),
        helper.make_node("Exp", ["fused_shifted"], ["fused_exp"]),
        helper.make_node("ReduceSum", ["fused_exp", "fused_axes"], ["fused_sum"], keepdims=0),
        helper.make_node("Div", ["fused_255", "fused_sum"], ["fused_scaled"]),
        helper.make_node("Add", ["fused_scaled", "fused_half"], ["fused_rounded"]),
        helper.make_node("Clip", ["fused_rounded", "fused_zero", "fused_255"], ["fused_clipped"]),
        helper.make_node("Cast", ["fused_clipped"], [CONFIDENCE], to=TensorProto.UINT8),
    ]
    if optional_confidence:
        some = helper.make_graph(confidence, "confidence", [],
                                 [helper.make_tensor_value_info(CONFIDENCE, TensorProto.UINT8, None)])
        none = helper.make_graph(
            [helper.make_node("Constant", [], ["fused_no_confidence"],
                              value=numpy_helper.from_array(np.zeros((0, 0, 0), np.uint8)))],
            "no_confidence", [], [helper.make_tensor_value_info("fused_no_confidence", TensorProto.UINT8, None)])
        confidence = [helper.make_node("If", [WANT_CONFIDENCE], [CONFIDENCE], then_branch=some, else_branch=none)]
    post = labels + confidence
    graph.initializer.extend([numpy_helper.from_array(mean255, "fused_mean"),
                              numpy_helper.from_array(std255, "fused_std")])
    graph.initializer.extend([helper.make_tensor(name, TensorProto.FLOAT, [], [value]) for name, value in
                              (("fused_255", 255.0), ("fused_half", 0.5), ("fused_zero", 0.0))])
    graph.initializer.append(helper.make_tensor("fused_axes", TensorProto.INT64, [1], [1]))
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    others = [inp for inp in graph.input if inp.name != image]
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(FRAMES, TensorProto.UINT8, ["batch", "height", "width", 3]))
    if optional_confidence:
        graph.input.append(helper.make_tensor_value_info(WANT_CONFIDENCE, TensorProto.BOOL, []))
    graph.input.extend(others)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(LABELS, TensorProto.UINT8, ["batch", "height", "width"]),
                         helper.make_tensor_value_info(CONFIDENCE, TensorProto.UINT8, ["batch", "height", "width"])])
    return proto.SerializeToString()
