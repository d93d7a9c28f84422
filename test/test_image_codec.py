# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""image_codec: every encoding against OpenCV's conversions of a real frame, and every error."""
from __future__ import annotations

import array
import os

import cv2
import numpy as np
import pytest
from conftest import SAMPLES, jpeg_claiming, rss_mb

from seg_perception.image_codec import (
    COMPRESSED_FORMATS,
    MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageFormatError,
    compressed_size,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw,
)


@pytest.fixture(scope="module")
def rgb():
    bgr = cv2.imread(str(sorted((SAMPLES / "images").glob("*.png"))[0]), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode(enc, buf, step, w, h, **kw):
    return decode_raw(enc, w, h, step, buf.tobytes(), **kw)


@pytest.mark.parametrize("enc,to_cv", [("rgb8", None), ("bgr8", cv2.COLOR_RGB2BGR),
                                       ("rgba8", cv2.COLOR_RGB2RGBA), ("bgra8", cv2.COLOR_RGB2BGRA)])
def test_colour_encodings_are_lossless(rgb, enc, to_cv):
    h, w = rgb.shape[:2]
    buf = rgb if to_cv is None else cv2.cvtColor(rgb, to_cv)
    out = decode_raw(enc, w, h, buf.strides[0], buf.tobytes())
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_rgb8_is_a_zero_copy_view_even_with_row_padding(rgb):
    h, w = rgb.shape[:2]
    padded = np.zeros((h, w * 3 + 13), np.uint8)
    padded[:, : w * 3] = rgb.reshape(h, -1)
    data = array.array("B", padded.tobytes())  # what rclpy hands over for uint8[]
    out = decode_raw("rgb8", w, h, w * 3 + 13, data)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(out, rgb)


def test_mono8_matches_opencv_gray(rgb):
    h, w = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = decode_raw("mono8", w, h, w, gray.tobytes())
    np.testing.assert_array_equal(out, cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
    be = (gray.astype(">u2") * 257).tobytes()
    np.testing.assert_array_equal(decode_raw("mono16", w, h, 2 * w, be, is_bigendian=True)[..., 0], gray)
    le = (gray.astype("<u2") * 257).tobytes()
    np.testing.assert_array_equal(decode_raw("mono16", w, h, 2 * w, le, is_bigendian=False)[..., 0], gray)


@pytest.mark.parametrize("enc,cv_code,order", [("yuv422", cv2.COLOR_YUV2RGB_UYVY, "uyvy"),
                                               ("yuv422_yuy2", cv2.COLOR_YUV2RGB_YUY2, "yuyv")])
def test_yuv422_variants(rgb, enc, cv_code, order):
    h, w = rgb.shape[:2]
    buf, step = encode_raw(rgb, enc)
    assert step == 2 * w
    out = decode_raw(enc, w, h, step, buf.tobytes())
    np.testing.assert_array_equal(out, cv2.cvtColor(buf, cv_code))
    assert np.abs(out.astype(int) - rgb).mean() < 2.0  # chroma subsampling only
    # Byte order: luma sits at odd bytes for UYVY, even bytes for YUYV.
    flat = buf.reshape(h, -1)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
    luma = flat[:, 1::2] if order == "uyvy" else flat[:, 0::2]
    assert np.abs(luma.astype(int) - (16 + gray * 219 / 255)).mean() < 3.0


@pytest.mark.parametrize("enc", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_bayer_patterns_demosaic_to_the_right_colours(rgb, enc):
    h, w = rgb.shape[:2]
    mosaic, step = encode_raw(rgb, enc)
    out = decode_raw(enc, w, h, step, mosaic.tobytes())
    # A wrong pattern swaps red and blue or mixes green in: errors of tens of levels.
    err = np.abs(out.astype(int) - rgb).reshape(-1, 3).mean(0)
    assert (err < 8).all(), err
    # Padded rows decode the same.
    padded = np.zeros((h, w + 5), np.uint8)
    padded[:, :w] = mosaic
    np.testing.assert_array_equal(decode_raw(enc, w, h, w + 5, padded.tobytes()), out)


def test_supported_list_covers_the_required_encodings():
    for enc in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2",
                "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"):
        assert enc in SUPPORTED_ENCODINGS


@pytest.mark.parametrize("fmt", ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8"])
def test_compressed_round_trip(rgb, fmt):
    data = encode_compressed(rgb, fmt)
    out = decode_compressed(fmt, data)
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, expected)
    if "png" in fmt:
        np.testing.assert_array_equal(out, rgb)
    assert decode_compressed("", data).shape == rgb.shape  # no format: sniffed


@pytest.mark.parametrize("case,args,message", [
    ("unknown encoding", ("32FC1", 4, 4, 16, bytes(64)), "unsupported image encoding '32FC1'; supported: rgb8"),
    ("zero width", ("rgb8", 0, 4, 0, b""), "zero size (0x4)"),
    ("zero height", ("rgb8", 4, 0, 12, b""), "zero size (4x0)"),
    ("short data", ("rgb8", 4, 4, 12, bytes(47)), "data holds 47 bytes, expected step*height = 12*4 = 48"),
    ("small step", ("rgba8", 4, 4, 12, bytes(64)), "step 12 is smaller than width*bytes per pixel = 4*4 = 16"),
    ("odd width yuv422", ("yuv422", 3, 2, 6, bytes(12)), "yuv422 needs an even width"),
    ("odd width yuy2", ("yuv422_yuy2", 5, 2, 10, bytes(20)), "needs an even width"),
    ("absurd size", ("mono8", 10_000, 10_000, 10_000, b""), "Mpixel limit"),
])
def test_raw_errors(case, args, message):
    with pytest.raises(ImageFormatError) as err:
        decode_raw(*args)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_size_limit_is_64_megapixels():
    assert MAX_PIXELS == 64_000_000


@pytest.mark.parametrize("fmt,data,message", [
    ("jpeg", b"", "compressed image is empty"),
    ("jpeg", b"\xff\xd8\xff\xe0" + bytes(500), "JPEG header is broken"),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(100), "no IHDR chunk"),
    ("jpeg", b"GIF89a" + bytes(100), "does not start like a JPEG or a PNG"),
    ("theora", b"\x00", "unsupported compressed format 'theora'"),
])
def test_compressed_errors(fmt, data, message):
    with pytest.raises(ImageFormatError) as err:
        decode_compressed(fmt, data)
    assert message in str(err.value)


def test_truncated_jpeg_is_refused_or_decoded_without_crash(rgb):
    data = encode_compressed(rgb, "jpeg")
    try:
        out = decode_compressed("jpeg", data[: len(data) // 3])
    except ImageFormatError:
        return
    assert out.shape == rgb.shape


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels over a short run of zero-filled rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 200, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_decompression_bombs_are_refused_from_the_header_at_once(rgb, kind):
    """A few hundred bytes claiming 30000x30000 pixels: refused in well under 100 ms, no memory spent."""
    import time
    bomb = _png_bomb(30000, 30000) if kind == "png" else jpeg_claiming(rgb, 30000, 30000)
    assert len(bomb) < 1_000_000
    before = rss_mb(os.getpid())
    t0 = time.perf_counter()
    for _ in range(20):
        with pytest.raises(ImageFormatError, match="30000x30000, beyond the 64 Mpixel limit: refused before"):
            decode_compressed(kind, bomb)
    assert (time.perf_counter() - t0) / 20 < 0.1
    assert (rss_mb(os.getpid()) - before) * 2**20 < 50_000_000


def test_header_sizes_match_the_decoded_images(rgb):
    for fmt in ("jpeg", "png"):
        for h, w in ((360, 480), (17, 5), (1, 1)):
            data = encode_compressed(np.ascontiguousarray(cv2.resize(rgb, (w, h))), fmt)
            assert compressed_size(data) == (w, h)
            assert decode_compressed(fmt, data).shape == (h, w, 3)


def test_fuzzed_compressed_images_raise_only_the_documented_error(rgb):
    """Thousands of mutated JPEG/PNG payloads and format strings: each decodes to an image or
    raises ImageFormatError; nothing else escapes, and nothing beyond the limit is decoded.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    seeds = [encode_compressed(rgb[:40, :48], "jpeg"), encode_compressed(rgb[:40, :48], "png"),
             _png_bomb(9000, 9000), jpeg_claiming(rgb, 9000, 9000)]

    @st.composite
    def payloads(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            op = draw(st.sampled_from(["flip", "cut", "insert", "size"]))
            if op == "flip" and data:
                i = draw(st.integers(0, len(data) - 1))
                data[i] = draw(st.integers(0, 255))
            elif op == "cut" and data:
                data = data[:draw(st.integers(0, len(data)))]
            elif op == "insert":
                i = draw(st.integers(0, len(data)))
                data[i:i] = draw(st.binary(max_size=16))
            elif op == "size" and len(data) > 24:
                i = draw(st.integers(0, len(data) - 4))
                data[i:i + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
        return bytes(data)

    formats = st.sampled_from(list(COMPRESSED_FORMATS) + ["rgb8; jpeg compressed bgr8", "png", "JPEG", "tiff", ""])

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(fmt=formats, data=payloads())
    def check(fmt, data):
        try:
            out = decode_compressed(fmt, data)
        except ImageFormatError:
            return
        assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] * out.shape[1] <= MAX_PIXELS

    check()


def test_fuzzed_raw_images_raise_only_the_documented_error():
    """Random sensor_msgs/Image fields (encoding, sizes, step, data): an image or ImageFormatError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(enc=st.sampled_from(list(SUPPORTED_ENCODINGS) + ["16UC1", "", "rgb8\x00", "bgr16"]),
           width=st.integers(-2, 70), height=st.integers(-2, 70), step=st.integers(-4, 300),
           data=st.binary(max_size=20000), big=st.booleans())
    def check(enc, width, height, step, data, big):
        try:
            out = decode_raw(enc, width, height, step, data, is_bigendian=big)
        except ImageFormatError:
            return
        assert out.shape == (height, width, 3) and out.dtype == np.uint8

    check()
