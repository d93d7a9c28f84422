# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Raw and compressed camera image buffers <-> HxWx3 uint8 RGB arrays, without ROS.

`decode_raw` takes the fields of a sensor_msgs/Image (encoding, width,
height, step, is_bigendian, data) and returns an RGB array. Where the buffer
already is RGB it returns a view of it (no copy), row padding (step >
width * bytes per pixel) included. Every malformed buffer raises
`ImageFormatError` with a message that names the problem, so a caller can log
it and go on with the next frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Frames larger than this (pixels) are refused: a corrupt header, not a camera.
MAX_PIXELS = 64_000_000


class ImageFormatError(ValueError):
    """An image buffer that cannot be decoded as it is."""


@dataclass(frozen=True)
class _Encoding:
    bytes_per_pixel: int
    #: cv2.cvtColor code to RGB, None when the buffer is RGB already.
    to_rgb: int | None
    #: channels of the array handed to cvtColor (yuv422 is HxWx2).
    channels: int
    dtype: str = "uint8"


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, None, 3),
    "bgr8": _Encoding(3, cv2.COLOR_BGR2RGB, 3),
    "rgba8": _Encoding(4, cv2.COLOR_RGBA2RGB, 4),
    "bgra8": _Encoding(4, cv2.COLOR_BGRA2RGB, 4),
    "mono8": _Encoding(1, cv2.COLOR_GRAY2RGB, 1),
    "mono16": _Encoding(2, cv2.COLOR_GRAY2RGB, 1, "uint16"),
    # ROS 'yuv422' is UYVY (U0 Y0 V0 Y1), 'yuv422_yuy2' is YUYV (Y0 U0 Y1 V0).
    "yuv422": _Encoding(2, cv2.COLOR_YUV2RGB_UYVY, 2),
    "uyvy": _Encoding(2, cv2.COLOR_YUV2RGB_UYVY, 2),
    "yuv422_yuy2": _Encoding(2, cv2.COLOR_YUV2RGB_YUY2, 2),
    "yuyv": _Encoding(2, cv2.COLOR_YUV2RGB_YUY2, 2),
    # OpenCV names Bayer patterns by the second row; ROS by the first (top-left 2x2).
    "bayer_rggb8": _Encoding(1, cv2.COLOR_BayerBG2RGB, 1),
    "bayer_bggr8": _Encoding(1, cv2.COLOR_BayerRG2RGB, 1),
    "bayer_gbrg8": _Encoding(1, cv2.COLOR_BayerGR2RGB, 1),
    "bayer_grbg8": _Encoding(1, cv2.COLOR_BayerGB2RGB, 1),
}

#: The encodings `decode_raw` understands.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

#: CompressedImage formats `decode_compressed` understands (matched as words in the format string).
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "jpg", "png")


def bytes_per_pixel(encoding: str) -> int:
    try:
        return _ENCODINGS[encoding].bytes_per_pixel
    except KeyError:
        raise _unknown(encoding) from None


def _unknown(encoding: str) -> ImageFormatError:
    return ImageFormatError(f"unsupported image encoding '{encoding}'; supported: "
                            f"{', '.join(SUPPORTED_ENCODINGS)}")


def _buffer(data) -> np.ndarray:
    """A flat uint8 view of bytes, bytearray, memoryview, array.array or ndarray (no copy)."""
    if isinstance(data, np.ndarray):
        if data.flags.c_contiguous:
            return data.reshape(-1).view(np.uint8)
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, np.uint8).reshape(-1)


def check_geometry(encoding: str, width: int, height: int, step: int, data_len: int) -> _Encoding:
    """Validate the header fields against each other and the buffer length."""
    enc = _ENCODINGS.get(encoding)
    if enc is None:
        raise _unknown(encoding)
    if width <= 0 or height <= 0:
        raise ImageFormatError(f"image has zero size ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageFormatError(f"image {width}x{height} exceeds the {MAX_PIXELS // 1_000_000} Mpixel limit")
    row = width * enc.bytes_per_pixel
    if step < row:
        raise ImageFormatError(f"step {step} is smaller than width*bytes per pixel = {width}*"
                               f"{enc.bytes_per_pixel} = {row} for {encoding}")
    if data_len < step * height:
        raise ImageFormatError(f"data holds {data_len} bytes, expected step*height = {step}*{height} = "
                               f"{step * height}")
    if enc.channels == 2 and width % 2:
        raise ImageFormatError(f"{encoding} needs an even width (2 pixels share U and V), got {width}")
    if enc.dtype == "uint16" and step % 2:
        raise ImageFormatError(f"{encoding} needs an even step, got {step}")
    return enc


def raw_view(encoding: str, width: int, height: int, step: int, data, *, is_bigendian: bool = False) -> np.ndarray:
    """The buffer as an HxWxC (or HxW for one channel) array view, padding removed, no conversion."""
    buf = _buffer(data)
    enc = check_geometry(encoding, width, height, step, buf.size)
    rows = buf[: step * height].reshape(height, step)[:, : width * enc.bytes_per_pixel]
    if enc.dtype == "uint16":
        order = ">" if is_bigendian else "<"
        # A strided view with 2-byte items; the row stride (step) is even, checked above.
        rows = np.ndarray((height, width), dtype=np.dtype(order + "u2"), buffer=buf, offset=0,
                          strides=(step, 2))
        return rows
    if enc.channels == 1:
        return rows
    return rows.reshape(height, width, enc.channels)


def decode_raw(encoding: str, width: int, height: int, step: int, data, *,
               is_bigendian: bool = False) -> np.ndarray:
    """Decode a raw image buffer to HxWx3 uint8 RGB.

    rgb8 comes back as a view of `data` (zero copy, possibly with a row stride
    larger than width*3); every other encoding is converted with OpenCV.
    """
    encoding = encoding.strip() if isinstance(encoding, str) else encoding
    if not isinstance(encoding, str):
        raise ImageFormatError(f"image encoding must be a string, got {type(encoding).__name__}")
    view = raw_view(encoding, int(width), int(height), int(step), data, is_bigendian=bool(is_bigendian))
    enc = _ENCODINGS[encoding]
    if enc.to_rgb is None:
        return view
    if enc.dtype == "uint16":
        view = (view >> 8).astype(np.uint8)
    elif enc.channels in (1, 2) and enc.bytes_per_pixel * int(width) != int(step):
        # Gray, Bayer and packed YUV conversions want continuous rows in this OpenCV build.
        view = np.ascontiguousarray(view)
    return cv2.cvtColor(view, enc.to_rgb)


def compressed_kind(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage format string such as 'rgb8; jpeg compressed bgr8'."""
    text = (fmt or "").lower()
    words = text.replace(";", " ").replace(",", " ").split()
    for word in words:
        if word in ("jpeg", "jpg"):
            return "jpeg"
        if word == "png":
            return "png"
    if not words:
        return ""  # no format given: let the decoder sniff the data
    raise ImageFormatError(f"unsupported compressed format '{fmt}'; supported: jpeg, png")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}


def compressed_size(buf: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame, read before any decoding.

    Raises ImageFormatError for a buffer that is neither, or whose header is cut short or broken:
    what a decoder would refuse anyway, found without allocating a pixel.
    """
    if buf[:8] == _PNG_SIGNATURE:
        if len(buf) < 24 or buf[12:16] != b"IHDR":
            raise ImageFormatError("PNG header is cut short or has no IHDR chunk")
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")
    if buf[:2] == b"\xff\xd8":
        i, n = 2, len(buf)
        while i < n:
            if buf[i] != 0xFF:
                raise ImageFormatError(f"JPEG header is broken (no marker at byte {i})")
            while i < n and buf[i] == 0xFF:  # fill bytes
                i += 1
            if i >= n:
                break
            marker = buf[i]
            i += 1
            if marker in _JPEG_NO_LENGTH:
                continue
            if i + 2 > n:
                break
            length = int.from_bytes(buf[i:i + 2], "big")
            if length < 2:
                raise ImageFormatError(f"JPEG header is broken (segment length {length})")
            if marker in _JPEG_SOF:
                if i + 7 > n:
                    break
                height, width = int.from_bytes(buf[i + 3:i + 5], "big"), int.from_bytes(buf[i + 5:i + 7], "big")
                if height == 0:
                    raise ImageFormatError("JPEG height is defined after the image data (DNL): not supported")
                return width, height
            if marker in (0xDA, 0xD9):  # image data or end before any frame header
                break
            i += length
        raise ImageFormatError("JPEG has no frame header (SOF) before its image data")
    raise ImageFormatError(f"compressed image does not start like a JPEG or a PNG (first bytes {bytes(buf[:4])!r})")


def decode_compressed(fmt: str, data) -> np.ndarray:
    """Decode a JPEG or PNG CompressedImage payload to HxWx3 uint8 RGB.

    The size in the header is checked against MAX_PIXELS before decoding, so a decompression
    bomb (a few hundred bytes claiming 30000x30000 pixels) costs microseconds, not gigabytes.
    """
    compressed_kind(fmt)
    buf = _buffer(data)
    if buf.size == 0:
        raise ImageFormatError("compressed image is empty (0 bytes)")
    width, height = compressed_size(memoryview(buf))
    if width == 0 or height == 0:
        raise ImageFormatError(f"compressed image header says {width}x{height} pixels")
    if width * height > MAX_PIXELS:
        raise ImageFormatError(f"compressed image header says {width}x{height}, beyond the "
                               f"{MAX_PIXELS // 1_000_000} Mpixel limit: refused before decoding")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageFormatError(f"compressed image ({buf.size} bytes, format '{fmt}') cannot be decoded: "
                               f"{str(exc).strip().splitlines()[-1]}") from None
    if bgr is None:
        raise ImageFormatError(f"compressed image ({buf.size} bytes, format '{fmt}') is corrupt or "
                               "not a JPEG/PNG")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ImageFormatError(f"compressed image {bgr.shape[1]}x{bgr.shape[0]} exceeds the "
                               f"{MAX_PIXELS // 1_000_000} Mpixel limit")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", *, quality: int = 90) -> bytes:
    """Encode HxWx3 RGB as JPEG or PNG bytes (the inverse of `decode_compressed`)."""
    kind = compressed_kind(fmt) or "jpeg"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if kind == "jpeg" else []
    ok, out = cv2.imencode(".jpg" if kind == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageFormatError(f"cannot encode a {rgb.shape} array as {kind}")
    return out.tobytes()


def encode_raw(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """RGB -> (contiguous HxWxC buffer in `encoding`, step). For tests and tools.

    Bayer encodings sample the pattern from the RGB frame; yuv422 variants pack
    pairs of pixels with shared, averaged chroma (BT.601, as OpenCV decodes it).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageFormatError(f"expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if encoding == "rgb8":
        out = np.ascontiguousarray(rgb)
    elif encoding == "bgr8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgba8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == "bgra8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == "mono8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif encoding == "mono16":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    elif encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        if w % 2:
            raise ImageFormatError(f"{encoding} needs an even width, got {w}")
        # BT.601 video range, the inverse of OpenCV's YUV2RGB_UYVY/YUY2.
        m = np.array([[0.257, 0.504, 0.098], [-0.148, -0.291, 0.439], [0.439, -0.368, -0.071]], np.float32)
        yuv = rgb.astype(np.float32) @ m.T + np.array([16, 128, 128], np.float32)
        y = yuv[..., 0]
        u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
        v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
        packed = np.empty((h, w // 2, 4), np.float32)
        if encoding in ("yuv422", "uyvy"):
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
        else:
            packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y[:, 0::2], u, y[:, 1::2], v
        out = np.clip(packed + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 2)
    elif encoding.startswith("bayer_") and encoding in _ENCODINGS:
        pattern = encoding[len("bayer_"):-1]  # e.g. 'rggb'
        chan = {"r": 0, "g": 1, "b": 2}
        out = np.empty((h, w), np.uint8)
        for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, chan[pattern[k]]]
    else:
        raise _unknown(encoding)
    return out, int(out.strides[0])
