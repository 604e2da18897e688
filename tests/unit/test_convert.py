"""numpy <-> proto conversions of sipec.api.convert: round trips and actionable errors."""

from __future__ import annotations

import struct
import zlib

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pycocotools import mask as mask_utils

from sipec import geometry
from sipec.api import convert as C
from sipec.v1 import common_pb2

SETTINGS = settings(max_examples=40, deadline=None)

image_shapes = st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([0, 1, 3]))


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    h, w, c = draw(image_shapes)
    shape = (h, w) if c == 0 else (h, w, c)
    return draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 255)))


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    h = draw(st.integers(1, 30))
    w = draw(st.integers(1, 30))
    kind = draw(st.sampled_from(["random", "empty", "full"]))
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    return draw(hnp.arrays(np.bool_, (h, w)))


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def _smooth_image(h: int = 96, w: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=2).astype(np.uint8)


# --- images --------------------------------------------------------------------------------------


@SETTINGS
@given(images())
def test_raw_image_round_trip(img: np.ndarray) -> None:
    msg = C.image_to_proto(img)
    assert msg.WhichOneof("data") == "raw"
    assert msg.raw.channels == (1 if img.ndim == 2 else img.shape[2])
    out = C.image_from_proto(common_pb2.Image.FromString(msg.SerializeToString()))
    assert out.dtype == np.uint8 and out.shape == (*img.shape[:2], 3)
    np.testing.assert_array_equal(out, _as_rgb(img))


@SETTINGS
@given(images())
def test_png_round_trip_is_exact(img: np.ndarray) -> None:
    msg = C.image_to_proto(img, "png")
    assert msg.encoded.format == "png" and msg.encoded.data.startswith(b"\x89PNG")
    np.testing.assert_array_equal(C.image_from_proto(msg), _as_rgb(img))
    assert C.image_size(msg) == img.shape[:2]


def test_png_keeps_rgb_channel_order() -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 200  # red
    out = C.image_from_proto(C.image_to_proto(img, "png"))
    assert out[0, 0].tolist() == [200, 0, 0]
    # an external BGR writer (OpenCV) must come back as RGB too
    ok, buf = cv2.imencode(".png", img[:, :, ::-1].copy())
    assert ok
    ext = common_pb2.Image(encoded=common_pb2.EncodedImage(data=buf.tobytes()))
    assert C.image_from_proto(ext)[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("shape", [(96, 128, 3), (96, 128), (1, 1, 3), (7, 5, 1)])
def test_jpeg_round_trip_is_close(shape: tuple[int, ...]) -> None:
    img = _smooth_image(*shape[:2])
    if len(shape) == 2:
        img = img[:, :, 1]
    elif shape[2] == 1:
        img = img[:, :, 1:2]
    msg = C.image_to_proto(img, "jpeg", jpeg_quality=95)
    assert msg.encoded.data.startswith(b"\xff\xd8\xff")
    assert C.image_size(msg) == shape[:2]
    out = C.image_from_proto(msg)
    assert out.shape == (*shape[:2], 3)
    assert np.abs(out.astype(int) - _as_rgb(img).astype(int)).mean() < 3.0


@pytest.mark.parametrize("enc", ["raw", "png", "jpeg"])
def test_non_contiguous_views_are_encoded(enc: str) -> None:
    img = _smooth_image(16, 20)
    for view in (img[:, ::-1], img[::2, :, ::-1], img[:, :, 1], img[:, 3:9, 1:2]):
        out = C.image_from_proto(C.image_to_proto(view, enc)).astype(int)
        assert np.abs(out - _as_rgb(view)).mean() < (3.0 if enc == "jpeg" else 1e-9)


def test_raw_rgb_is_a_zero_copy_view_unless_writable() -> None:
    img = _smooth_image(8, 8)
    msg = C.image_to_proto(img)
    out = C.image_from_proto(msg)
    assert not out.flags.writeable and out.base is not None
    writable = C.image_from_proto(msg, writable=True)
    writable[0, 0] = 0
    assert writable.flags.writeable


def test_image_within_limit_passes() -> None:
    img = _smooth_image(10, 10)
    for enc in ("raw", "png", "jpeg"):
        assert C.image_from_proto(C.image_to_proto(img, enc), max_pixels=100).shape == (10, 10, 3)


@pytest.mark.parametrize("enc", ["raw", "png", "jpeg"])
def test_image_over_limit_raises_too_large(enc: str) -> None:
    msg = C.image_to_proto(_smooth_image(10, 11), enc)
    with pytest.raises(C.TooLargeError, match=r"11x10 = 110 pixels exceeds .* limit of 109") as info:
        C.image_from_proto(msg, max_pixels=109)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(info.value, C.ConversionError)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def _jpeg_header_only(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes(range(1, 65))
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + dqt + sof


@pytest.mark.parametrize("make", [_png_header_only, _jpeg_header_only])
def test_too_large_is_detected_from_the_header_before_decoding(make, monkeypatch) -> None:
    data = make(50_000, 40_000)  # 2 gigapixels declared; only a header is sent
    assert C.encoded_image_size(data) == (40_000, 50_000)

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded although the header already exceeded the limit")

    monkeypatch.setattr(C.cv2, "imdecode", no_decode)
    msg = common_pb2.Image(encoded=common_pb2.EncodedImage(data=data))
    with pytest.raises(C.TooLargeError, match="image.encoded: 50000x40000 = 2000000000 pixels"):
        C.image_from_proto(msg, max_pixels=4096 * 4096)


def test_header_size_of_real_files_matches() -> None:
    img = _smooth_image(33, 47)
    for enc in ("png", "jpeg"):
        assert C.encoded_image_size(C.image_to_proto(img, enc).encoded.data) == (33, 47)
    # progressive JPEG (SOF2) and a JPEG with EXIF/comment segments
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and C.encoded_image_size(buf.tobytes()) == (33, 47)
    data = buf.tobytes()
    com = b"\xff\xfe" + struct.pack(">H", 2 + 5) + b"hello"
    assert C.encoded_image_size(data[:2] + com + data[2:]) == (33, 47)
    assert C.encoded_image_size(b"GIF89a....") is None


def test_unreadable_header_falls_back_to_decode_then_check() -> None:
    data = C.image_to_proto(_smooth_image(10, 10), "jpeg").encoded.data
    # 17 comment segments of 64 KiB push the frame header past the 1 MiB the header reader scans
    comment = b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533
    padded = data[:2] + comment * 17 + data[2:]
    assert C.encoded_image_size(padded) is None
    msg = common_pb2.Image(encoded=common_pb2.EncodedImage(data=padded))
    assert C.image_from_proto(msg, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(C.TooLargeError, match="10x10 = 100 pixels exceeds"):
        C.image_from_proto(msg, max_pixels=99)


@pytest.mark.parametrize(
    ("msg", "pattern"),
    [
        (common_pb2.Image(), r"^image: empty"),
        (common_pb2.Image(raw=common_pb2.RawImage(data=b"\0" * 100, height=120, width=160, channels=3)),
         r"image\.raw: data has 100 bytes, expected height\*width\*channels = 120\*160\*3 = 57600"),
        (common_pb2.Image(raw=common_pb2.RawImage(data=b"\0" * 16, height=2, width=2, channels=4)),
         r"image\.raw\.channels must be 1 or 3, got 4"),
        (common_pb2.Image(raw=common_pb2.RawImage(data=b"\0" * 12, height=2, width=2)),
         r"image\.raw\.channels must be 1 or 3, got 0"),
        (common_pb2.Image(raw=common_pb2.RawImage(data=b"", height=0, width=5, channels=3)),
         r"image\.raw: height and width must be > 0, got height=0 width=5"),
        (common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"", format="png")),
         r"image\.encoded: data is empty"),
        (common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"GIF89a" + b"\0" * 1228)),
         r"image\.encoded: could not decode 1234 bytes as JPEG or PNG"),
        (common_pb2.Image(encoded=common_pb2.EncodedImage(data=b"\xff\xd8\xff\xe0" + b"\0" * 60)),
         r"image\.encoded: could not decode 64 bytes as JPEG or PNG"),
        (common_pb2.Image(encoded=common_pb2.EncodedImage(data=_png_header_only(0, 10))),
         r"image\.encoded: the PNG header says height=10 width=0"),
    ],
)
def test_bad_images_name_the_field(msg: common_pb2.Image, pattern: str) -> None:
    with pytest.raises(C.ConversionError, match=pattern) as info:
        C.image_from_proto(msg)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(info.value, C.TooLargeError)


def test_truncated_png_is_a_conversion_error() -> None:
    data = C.image_to_proto(_smooth_image(20, 20), "png").encoded.data
    msg = common_pb2.Image(encoded=common_pb2.EncodedImage(data=data[: len(data) // 2]))
    with pytest.raises(C.ConversionError, match=r"image\.encoded: could not decode \d+ bytes"):
        C.image_from_proto(msg)


def test_field_prefix_is_configurable() -> None:
    with pytest.raises(C.ConversionError, match=r"^crops\[2\]\.crop: empty"):
        C.image_from_proto(common_pb2.Image(), field="crops[2].crop")


@pytest.mark.parametrize(
    ("array", "kwargs", "pattern"),
    [
        (np.zeros((4, 4, 3), np.float32), {}, "dtype must be uint8, got float32"),
        (np.zeros((4, 4, 4), np.uint8), {}, r"got shape \(4, 4, 4\)"),
        (np.zeros((0, 4, 3), np.uint8), {}, "height and width must be > 0"),
        (np.zeros((4, 4, 3), np.uint8), {"encoding": "gif"}, "'raw', 'jpeg' or 'png', got 'gif'"),
        (np.zeros((4, 4, 3), np.uint8), {"encoding": "jpeg", "jpeg_quality": 101}, r"\[0, 100\], got 101"),
    ],
)
def test_bad_arrays_are_rejected(array: np.ndarray, kwargs: dict, pattern: str) -> None:
    with pytest.raises(C.ConversionError, match=pattern):
        C.image_to_proto(array, **kwargs)


# --- masks ---------------------------------------------------------------------------------------


@SETTINGS
@given(masks())
def test_mask_round_trip(mask: np.ndarray) -> None:
    msg = common_pb2.Mask.FromString(C.mask_to_proto(mask).SerializeToString())
    assert (msg.height, msg.width) == mask.shape
    out = C.mask_from_proto(msg)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)
    expected_box = geometry.mask_box(mask) or (0.0, 0.0, 0.0, 0.0)
    assert C.box_from_proto(msg.box) == expected_box
    # the counts are exactly pycocotools' encoding, so any COCO tool reads them
    assert msg.counts == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
    # RLE without decoding, and back; the RLE-derived box equals the mask box
    rle = C.rle_from_proto(msg)
    assert rle == {"size": list(mask.shape), "counts": msg.counts}
    assert C.rle_to_proto(rle) == msg


@SETTINGS
@given(masks())
def test_rle_counts_parser_matches_the_mask_runs(mask: np.ndarray) -> None:
    runs = C.rle_counts_to_runs(geometry.encode_rle(mask)["counts"])
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    expected = np.diff(bounds)
    if flat[0] == 1:
        expected = np.concatenate(([0], expected))
    np.testing.assert_array_equal(runs, expected)


def test_rle_to_proto_accepts_str_counts() -> None:
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    rle = geometry.rle_to_json(geometry.encode_rle(mask))
    msg = C.rle_to_proto(rle)
    assert C.box_from_proto(msg.box) == (2.0, 1.0, 5.0, 3.0)
    np.testing.assert_array_equal(C.mask_from_proto(msg), mask)


@pytest.mark.parametrize(
    ("msg", "pattern"),
    [
        (common_pb2.Mask(height=0, width=4, counts=b"0<"), r"mask: height and width must be > 0"),
        (common_pb2.Mask(height=3, width=3, counts=b""), r"mask\.counts: empty"),
        (common_pb2.Mask(height=3, width=3, counts=b"9\x00"), r"mask\.counts: byte 1 .* not a compressed RLE"),
        (common_pb2.Mask(height=3, width=3, counts=b"0:0"), r"mask\.counts: the runs cover 10 pixels, "
                                                             r"expected height\*width = 3\*3 = 9"),
        (common_pb2.Mask(height=3, width=3, counts=b"P"), r"mask\.counts: truncated"),
        (common_pb2.Mask(height=3, width=3, counts=b"@"), r"mask\.counts: decodes to a negative run"),
    ],
)
def test_bad_masks_name_the_field(msg: common_pb2.Mask, pattern: str) -> None:
    with pytest.raises(C.ConversionError, match=pattern):
        C.mask_from_proto(msg)


def test_mask_to_proto_rejects_non_2d() -> None:
    with pytest.raises(C.ConversionError, match=r"HxW array, got shape \(2, 2, 2\)"):
        C.mask_to_proto(np.zeros((2, 2, 2), bool))


# --- boxes, points, keypoints, probabilities -----------------------------------------------------


def test_box_and_point_round_trip() -> None:
    assert C.box_from_proto(C.box_to_proto((1.5, 2.0, 10.25, 20.0))) == (1.5, 2.0, 10.25, 20.0)
    assert C.point_from_proto(C.point_to_proto((3.5, -1.0))) == (3.5, -1.0)
    x, y = C.point_from_proto(C.point_to_proto((np.nan, 1.0)))
    assert np.isnan(x) and y == 1.0


@pytest.mark.parametrize(
    ("box", "pattern"),
    [((5, 0, 4, 1), r"roi: needs x2 >= x1 and y2 >= y1"), ((0, 0, np.inf, 1), r"roi: coordinates must be finite")],
)
def test_bad_box_names_the_field(box: tuple, pattern: str) -> None:
    with pytest.raises(C.ConversionError, match=pattern):
        C.box_from_proto(C.box_to_proto(box), field="roi")


finite_or_nan = st.one_of(st.floats(-1e4, 1e4, width=32), st.just(float("nan")))


@SETTINGS
@given(st.integers(0, 12).flatmap(lambda k: hnp.arrays(np.float32, (k, 3), elements=finite_or_nan)))
def test_keypoints_round_trip_with_nan(arr: np.ndarray) -> None:
    names = [f"kp{i}" for i in range(arr.shape[0])]
    msgs = C.keypoints_to_proto(names, arr)
    got_names, got = C.keypoints_from_proto(msgs)
    assert got_names == names and got.shape == (len(names), 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, arr)  # NaN == NaN for assert_array_equal


def test_keypoints_shape_errors() -> None:
    with pytest.raises(C.ConversionError, match=r"2 names but 3 rows"):
        C.keypoints_to_proto(["a", "b"], np.zeros((3, 3)))
    with pytest.raises(C.ConversionError, match=r"Kx3 array .* got shape \(3, 2\)"):
        C.keypoints_to_proto(["a", "b", "c"], np.zeros((3, 2)))


@SETTINGS
@given(hnp.arrays(np.float32, st.integers(0, 10), elements=st.floats(0, 1, width=32)))
def test_probabilities_round_trip(values: np.ndarray) -> None:
    names = [f"class{i}" for i in range(values.size)]
    got_names, got = C.probabilities_from_proto(C.probabilities_to_proto(names, values))
    assert got_names == names
    np.testing.assert_array_equal(got, values)
    _, unnamed = C.probabilities_from_proto(C.probabilities_to_proto([], values))
    np.testing.assert_array_equal(unnamed, values)


def test_probabilities_length_mismatch() -> None:
    with pytest.raises(C.ConversionError, match=r"2 names but 3 values"):
        C.probabilities_to_proto(["a", "b"], [0.1, 0.2, 0.7])
    bad = common_pb2.Probabilities(names=["a", "b", "c"], values=[0.5, 0.5])
    with pytest.raises(C.ConversionError, match=r"identity: 3 names but 2 values"):
        C.probabilities_from_proto(bad, field="identity")


# --- instances, frames, errors -------------------------------------------------------------------


def test_instance_round_trip_from_mask() -> None:
    mask = np.zeros((20, 30), bool)
    mask[4:10, 5:12] = True
    inst = C.InstanceData.from_mask(mask, score=0.75, class_name="mouse", index=2, track_id=7)
    assert inst.box == (5.0, 4.0, 12.0, 10.0) and inst.com == (8.5, 7.0)
    msg = common_pb2.Instance.FromString(C.instance_to_proto(inst).SerializeToString())
    back = C.instance_from_proto(msg, decode_mask=True)
    assert back.box == inst.box and back.com == inst.com
    assert (back.score, back.class_name, back.track_id, back.index) == (0.75, "mouse", 7, 2)
    assert back.rle == {"size": [20, 30], "counts": inst.rle["counts"]}
    np.testing.assert_array_equal(back.mask, mask)
    assert C.instance_from_proto(msg).mask is None  # decoding is opt-in


def test_instance_without_mask_box_or_com() -> None:
    msg = C.instance_to_proto(C.InstanceData(score=0.5))
    assert not msg.HasField("mask") and not msg.HasField("box") and not msg.HasField("com")
    assert msg.track_id == 0
    back = C.instance_from_proto(msg)
    assert back.box is None and back.rle is None and back.com is None and back.track_id == 0


def test_instance_box_defaults_to_mask_box_and_errors_name_the_path() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:3, 2:4] = True
    msg = C.instance_to_proto(C.InstanceData(mask=mask, score=1.0))
    assert C.box_from_proto(msg.box) == (2.0, 1.0, 4.0, 3.0)
    msg.mask.width = 7
    with pytest.raises(C.ConversionError, match=r"instances\[3\]\.mask\.counts: the runs cover 36 pixels"):
        C.instance_from_proto(msg, field="instances[3]")


def test_frame_ref_round_trip() -> None:
    ref = C.frame_ref_from_proto(C.frame_ref_to_proto("cage1.mp4", 42, 1.68))
    assert ref == C.FrameRefData("cage1.mp4", 42, 1.68)
    with pytest.raises(C.ConversionError, match="frame.index must be >= 0"):
        C.frame_ref_to_proto("v", -1)


def test_item_errors_carry_the_grpc_code() -> None:
    err = C.item_error(grpc.StatusCode.INVALID_ARGUMENT, "image: empty")
    assert (err.code, err.message) == (3, "image: empty")
    assert C.item_error_code(err) == grpc.StatusCode.INVALID_ARGUMENT
    too_large = C.item_error_from_exception(C.TooLargeError("image: too big"))
    assert too_large.code == 8 and C.item_error_code(too_large) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert C.item_error_from_exception(RuntimeError("boom")).code == grpc.StatusCode.INTERNAL.value[0]
    assert C.item_error_code(common_pb2.ItemError(code=999)) == grpc.StatusCode.UNKNOWN
