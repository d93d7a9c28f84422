# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""sensor_msgs Image / CompressedImage <-> numpy, a thin layer over `image_codec`.

No cv_bridge: the buffers are read in place (rclpy hands uint8[] fields over
as array.array, which numpy views without copying) and written with a single
copy into the message's array.
"""
from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..image_codec import (
    ImageFormatError,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
)

__all__ = ["ImageFormatError", "image_to_rgb", "compressed_to_rgb", "make_image", "rgb_to_image",
           "rgb_to_compressed"]


def image_to_rgb(msg: Image) -> np.ndarray:
    """HxWx3 uint8 RGB from any supported raw encoding (a view of msg.data for rgb8)."""
    return decode_raw(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                      is_bigendian=bool(msg.is_bigendian))


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """HxWx3 uint8 RGB from a JPEG or PNG CompressedImage."""
    return decode_compressed(msg.format, msg.data)


_PACKED_DTYPES = {"B": None, "b": np.int8, "f": np.float32}


def packed(values: np.ndarray, typecode: str = "B") -> array.array:
    """An array.array of `typecode` (a ROS message's uint8[], int8[] or float32[] field) holding `values`
    (any numpy array for "B": its raw bytes), in one copy.
    """
    values = np.ascontiguousarray(values, _PACKED_DTYPES[typecode])
    out = array.array(typecode)
    out.frombytes(values.reshape(-1).view(np.uint8).data)
    return out


def make_image(pixels: np.ndarray, encoding: str, header=None, *, step: int | None = None) -> Image:
    """An Image from an HxW (mono) or HxWxC uint8 array already laid out in `encoding`."""
    pixels = np.ascontiguousarray(pixels)
    msg = Image(check_fields=True)  # the data setter then keeps the packed array instead of copying it again
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    row = pixels.strides[0]
    if step is not None and step > row:
        padded = np.zeros((msg.height, step), np.uint8)
        padded[:, :row] = pixels.reshape(msg.height, row)
        pixels, row = padded, step
    msg.step = int(row)
    msg.data = packed(pixels)
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", header=None, *, step: int | None = None) -> Image:
    """Encode an RGB frame as an Image in any supported encoding (cameras, tests, replay tools)."""
    buf, _ = encode_raw(rgb, encoding)
    return make_image(buf, encoding, header, step=step)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None, *, quality: int = 90) -> CompressedImage:
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = array.array("B", encode_compressed(rgb, fmt, quality=quality))
    return msg
