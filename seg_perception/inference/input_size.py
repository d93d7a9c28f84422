# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The network input size for a camera frame: the camera's aspect ratio and the model's scale kept.

The shipped networks are fully convolutional, so they take any size; squeezing a 16:9 frame into
the model's 4:3 training size would stretch every object by a third. `auto` keeps the model's
input height (objects at the scale it was trained on) and the frame's aspect: the width follows,
rounded to the network's stride (16:9 -> 640x360 for a 480x360 model). That beat both the squeeze
and keeping the model's pixel count (544x320) on held-out drives cropped to 16:9 (docs/performance.md).
A wider camera costs more per frame, in proportion to its width.
"""
from __future__ import annotations

import math
import re

#: Every family's total downsampling divides this (LR-ASPP, DeepLabV3 and FCN: 8 or 16; U-Net: 16).
NETWORK_STRIDE = 32
#: Frames whose aspect is within this of the model's own run at exactly the model's input size.
SAME_ASPECT = 0.02
#: The network input never exceeds this many times the model's pixels (a 3.3:1 panorama needs 2.5):
#: a frame of absurd shape (700x1) must not become a 250000x360 network input.
MAX_AREA_FACTOR = 3.0

AUTO = "auto"
MODEL = "model"


class InputSizeError(ValueError):
    """An input_size setting that is neither auto, model nor WIDTHxHEIGHT."""


def parse_input_size(value) -> str | tuple[int, int]:
    """'auto' (the default), 'model' (the model's fixed training size, the old behaviour) or 'WxH' / [w, h]."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTO)):
        return AUTO
    if isinstance(value, str) and value.strip().lower() == MODEL:
        return MODEL
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", value)
        if not m:
            raise InputSizeError(f"input_size '{value}' is not auto, model or WIDTHxHEIGHT (for example 640x360)")
        w, h = int(m.group(1)), int(m.group(2))
    else:
        try:
            w, h = (int(v) for v in value)
        except (TypeError, ValueError):
            raise InputSizeError(f"input_size {value!r} is not auto, model or [width, height]") from None
    if not (NETWORK_STRIDE <= w <= 8192 and NETWORK_STRIDE <= h <= 8192):
        raise InputSizeError(f"input_size {w}x{h}: each side must be {NETWORK_STRIDE}..8192 pixels")
    return (w, h)


def _to_stride(value: float, stride: int) -> int:
    return max(stride, int(round(value / stride)) * stride)


def network_size(frame_size: tuple[int, int], model_size: tuple[int, int], setting="auto", *,
                 stride: int = NETWORK_STRIDE) -> tuple[int, int]:
    """(width, height) the network sees for a frame of `frame_size` (width, height).

    auto: the model's own size for a frame of the model's aspect; otherwise the model's height and
    the frame's aspect, the width rounded to the stride (16:9 -> 640x360 for a 480x360 model).
    """
    if setting == MODEL:
        return tuple(model_size)
    if setting != AUTO:
        return tuple(setting)
    fw, fh = frame_size
    mw, mh = model_size
    aspect = fw / fh
    if abs(aspect / (mw / mh) - 1.0) <= SAME_ASPECT:
        return (mw, mh)
    w, h = _to_stride(mh * aspect, stride), mh
    cap = MAX_AREA_FACTOR * mw * mh
    if w * h > cap:  # very wide: the height shrinks so that the pixel count stays bounded
        h = max(stride, int(math.sqrt(cap / aspect)) // stride * stride)
        w = max(stride, min(_to_stride(h * aspect, stride), int(cap // h) // stride * stride))
    return (w, h)
