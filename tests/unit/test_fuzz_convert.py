"""Fuzzing of the proto <-> numpy conversions (sipec.api.convert) with hypothesis.

Whatever a client sends (random bytes, bytes behind a PNG/JPEG signature, shapes that do not match the data,
giant or empty sizes, random dtypes, NaN), decoding either returns a well-formed array or raises the
project's own ConversionError (a ValueError services turn into INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for
TooLargeError) with a message: never another exception, never a crash, never an array of the wrong shape.
Bounded to a few seconds: at most 200 examples per property, sizes kept small where memory would grow.
"""

from __future__ import annotations

import contextlib
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sipec.api.convert import (
    ConversionError,
    TooLargeError,
    box_from_proto,
    image_from_proto,
    image_size,
    image_to_proto,
    instance_from_proto,
    mask_from_proto,
    mask_to_proto,
    rle_counts_to_runs,
    rle_from_proto,
)
from sipec.v1 import common_pb2

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_PIXELS = 1 << 16
PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
UINT32 = st.integers(0, 2**32 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)


def _png_header(width: int, height: int, rest: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return PNG + chunk + rest


def _expect_image_or_conversion_error(msg: common_pb2.Image, max_pixels: int | None) -> None:
    try:
        out = image_from_proto(msg, max_pixels=max_pixels)
    except ConversionError as exc:
        assert str(exc), "a ConversionError must say what is wrong"
        assert str(exc).startswith("image"), f"the message names the field: {exc}"
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.ndim == 3 and out.shape[2] == 3 and out.shape[0] > 0 and out.shape[1] > 0
    if max_pixels is not None:
        assert out.shape[0] * out.shape[1] <= max_pixels
    if msg.WhichOneof("data") == "raw":
        assert out.shape[:2] == (msg.raw.height, msg.raw.width)
    else:
        assert image_size(msg) == out.shape[:2]


@FUZZ
@given(height=UINT32, width=UINT32, channels=UINT32, data=st.binary(max_size=512),
       limit=st.sampled_from([None, MAX_PIXELS]))
def test_raw_images_with_any_shape_and_bytes(height, width, channels, data, limit):
    msg = common_pb2.Image(raw=common_pb2.RawImage(data=data, height=height, width=width, channels=channels))
    _expect_image_or_conversion_error(msg, limit)


@FUZZ
@given(height=st.integers(1, 16), width=st.integers(1, 16), channels=st.sampled_from([1, 3]), seed=st.integers(0, 99))
def test_raw_images_that_fit_decode_exactly(height, width, channels, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    out = image_from_proto(common_pb2.Image(raw=common_pb2.RawImage(data=pixels.tobytes(), height=height,
                                                                     width=width, channels=channels)))
    np.testing.assert_array_equal(out, np.repeat(pixels, 3 // channels, axis=2))


@FUZZ
@given(prefix=st.sampled_from([b"", PNG, JPEG, JPEG + b"\xe0", PNG + b"\x00\x00\x00\rIHDR"]),
       data=st.binary(max_size=2048), fmt=st.sampled_from(["", "jpeg", "png", "gif"]),
       limit=st.sampled_from([None, MAX_PIXELS]))
def test_encoded_images_from_random_bytes(prefix, data, fmt, limit):
    msg = common_pb2.Image(encoded=common_pb2.EncodedImage(data=prefix + data, format=fmt))
    _expect_image_or_conversion_error(msg, limit)


@FUZZ
@given(width=UINT32, height=UINT32, rest=st.binary(max_size=256))
def test_png_headers_with_any_size(width, height, rest):
    # giant sizes are refused from the header, before OpenCV allocates anything
    msg = common_pb2.Image(encoded=common_pb2.EncodedImage(data=_png_header(width, height, rest)))
    _expect_image_or_conversion_error(msg, MAX_PIXELS)
    if width * height > MAX_PIXELS:
        with pytest.raises(TooLargeError, match="exceeds this service's limit"):
            image_from_proto(msg, max_pixels=MAX_PIXELS)


@FUZZ
@given(height=st.integers(1, 24), width=st.integers(1, 24), grey=st.booleans(), seed=st.integers(0, 99),
       encoding=st.sampled_from(["png", "jpeg"]), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_real_png_and_jpeg_truncated_or_corrupted(height, width, grey, seed, encoding, cut, flip):
    shape = (height, width) if grey else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    data = bytearray(image_to_proto(pixels, encoding).encoded.data)
    if encoding == "png":
        np.testing.assert_array_equal(image_from_proto(common_pb2.Image(
            encoded=common_pb2.EncodedImage(data=bytes(data)))), np.atleast_3d(pixels).repeat(3 // shape[-1]
                                                                                             if not grey else 3, 2))
    if flip < len(data):
        data[flip] ^= 0xA5
    data = data[:len(data) - cut] if cut < len(data) else data[:1]
    _expect_image_or_conversion_error(common_pb2.Image(encoded=common_pb2.EncodedImage(data=bytes(data))), MAX_PIXELS)


@FUZZ
@given(arr=hnp.arrays(dtype=hnp.scalar_dtypes(), shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                          max_side=8)),
       encoding=st.sampled_from(["raw", "png", "jpeg", "bmp"]))
def test_image_to_proto_takes_only_uint8_images(arr, encoding):
    try:
        msg = image_to_proto(arr, encoding)
    except ConversionError as exc:
        assert str(exc)
        return
    assert arr.dtype == np.uint8 and arr.ndim in (2, 3) and arr.shape[0] > 0 and arr.shape[1] > 0
    out = image_from_proto(msg)
    assert out.shape[:2] == arr.shape[:2]


def _expect_mask_or_conversion_error(msg: common_pb2.Mask) -> None:
    try:
        out = mask_from_proto(msg)
    except ConversionError as exc:
        assert str(exc).startswith("mask"), exc
        return
    assert out.dtype == bool and out.shape == (msg.height, msg.width)


@FUZZ
@given(height=st.integers(0, 64), width=st.integers(0, 64),
       counts=st.one_of(st.binary(max_size=64), st.text(alphabet=[chr(c) for c in range(48, 112)], max_size=32)))
def test_masks_from_random_counts(height, width, counts):
    counts = counts.encode() if isinstance(counts, str) else counts
    _expect_mask_or_conversion_error(common_pb2.Mask(height=height, width=width, counts=counts))


@FUZZ
@given(height=st.integers(0, 2**20), width=st.integers(0, 2**20),
       runs=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=6))
def test_masks_with_giant_sizes_are_refused_without_decoding(height, width, runs):
    # counts that describe exactly height*width pixels of a giant frame, in a few bytes: refused before any
    # allocation (decoding would take height*width bytes)
    total = height * width
    runs = runs[:-1]
    rest = total - sum(runs)
    if rest > 0:
        if len(runs) % 2:   # keep alternating 0s and 1s: a zero-length run, then the rest
            runs.append(0)
        while rest > 0:
            chunk = min(rest, 2**31 - 1)
            runs += [chunk, 0]
            rest -= chunk
    counts = _rle_string(runs or [0])
    msg = common_pb2.Mask(height=height, width=width, counts=counts)
    if height and width and sum(runs) == total and total > (1 << 26):
        with pytest.raises(TooLargeError, match="pixels"):
            rle_from_proto(msg)
        return
    if total > (1 << 22):
        with contextlib.suppress(ConversionError):   # validate only: this test must not allocate a huge mask
            rle_from_proto(msg)
        return
    _expect_mask_or_conversion_error(msg)


def _rle_string(runs: list[int]) -> bytes:
    """pycocotools' rleToString."""
    out = bytearray()
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(c + 48)
    return bytes(out)


@FUZZ
@given(mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=32)))
def test_masks_round_trip(mask):
    msg = mask_to_proto(mask)
    np.testing.assert_array_equal(mask_from_proto(msg), mask)
    assert rle_counts_to_runs(msg.counts).sum() == mask.size
    assert _rle_string([int(r) for r in rle_counts_to_runs(msg.counts)]) == msg.counts


@FUZZ
@given(coords=st.tuples(*[st.floats(allow_nan=True, allow_infinity=True, width=32)] * 4),
       height=st.integers(0, 8), width=st.integers(0, 8), counts=st.binary(max_size=8))
def test_instances_with_nan_boxes_and_bad_masks(coords, height, width, counts):
    msg = common_pb2.Instance(box=common_pb2.Box(x1=coords[0], y1=coords[1], x2=coords[2], y2=coords[3]),
                              mask=common_pb2.Mask(height=height, width=width, counts=counts))
    try:
        inst = instance_from_proto(msg, decode_mask=True)
    except ConversionError as exc:
        assert str(exc).startswith("instance"), exc
        return
    assert all(np.isfinite(inst.box)) and inst.box[2] >= inst.box[0] and inst.box[3] >= inst.box[1]
    assert inst.mask.shape == (height, width)
    assert box_from_proto(msg.box) == inst.box


def test_a_few_bytes_describing_a_giant_mask_are_refused():
    # 100000 x 100000 empty mask: 10 GB once decoded, 29 bytes of counts on the wire
    counts = _rle_string([2**31 - 1] + [0, 2**31 - 1] * 3 + [0, 10**10 - 4 * (2**31 - 1)])
    assert rle_counts_to_runs(counts).sum() == 10**10
    msg = common_pb2.Mask(height=100_000, width=100_000, counts=counts)
    for call in (lambda: mask_from_proto(msg), lambda: rle_from_proto(msg),
                 lambda: instance_from_proto(common_pb2.Instance(mask=msg), field="instances[0]")):
        with pytest.raises(TooLargeError, match=r"100000x100000 = 10000000000 pixels exceeds the limit"):
            call()
    assert rle_from_proto(msg, max_pixels=None)["size"] == [100_000, 100_000]   # callers may lift the limit
