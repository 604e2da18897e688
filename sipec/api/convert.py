"""numpy <-> proto conversions for the SIPEC contract (protos/sipec/v1/common.proto).

Every service and client goes through these functions, so that the wire format is decided in one
place. Conventions (see :mod:`sipec.geometry`): images are HxWxC uint8 RGB, masks HxW bool, boxes
``(x1, y1, x2, y2)`` with x2/y2 exclusive, points ``(x, y)``.

Bad input raises :class:`ConversionError` (a ``ValueError``) whose message names the field and what
was expected; oversize input raises :class:`TooLargeError`. Each carries the gRPC status code a
service should answer with (``exc.code``), and :func:`item_error_from_exception` turns one into the
per-item ``ItemError`` of a stream.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import grpc
import numpy as np
from pycocotools import mask as mask_utils

from sipec import geometry
from sipec.v1 import common_pb2

Box = tuple[float, float, float, float]
Point = tuple[float, float]
ImageEncoding = Literal["raw", "jpeg", "png"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers that carry the image size (C4 = DHT, C8 = JPG, CC = DAC are not frames).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers with no length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_HEADER_SCAN_BYTES = 1 << 20
_IMDECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
# Largest mask (height * width) accepted from a message by default: a few bytes of RLE counts can describe a
# frame of any size, and decoding allocates height * width bytes. 8192 x 8192, above every image limit.
DEFAULT_MAX_MASK_PIXELS = 1 << 26


class ConversionError(ValueError):
    """A message or array cannot be converted; the message names the field and what was expected.

    Services answer it with ``code`` (INVALID_ARGUMENT).
    """

    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT


class TooLargeError(ConversionError):
    """The input is larger than the caller's limit; services answer RESOURCE_EXHAUSTED."""

    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def image_to_proto(array: np.ndarray, encoding: ImageEncoding = "raw",
                   jpeg_quality: int = 95) -> common_pb2.Image:
    """An ``Image`` message from an HxW (grey), HxWx1 or HxWx3 (RGB) uint8 array.

    ``encoding="raw"`` sends the pixels as they are (one copy into the message); ``"jpeg"``
    (lossy, ``jpeg_quality`` 0-100) and ``"png"`` (lossless) compress them with OpenCV.
    """
    arr = _check_image_array(array)
    if encoding == "raw":
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return common_pb2.Image(raw=common_pb2.RawImage(
            data=np.ascontiguousarray(arr).tobytes(), height=arr.shape[0], width=arr.shape[1],
            channels=channels))
    if encoding not in ("jpeg", "png"):
        raise ConversionError(f"image encoding must be 'raw', 'jpeg' or 'png', got {encoding!r}")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    else:
        arr = np.ascontiguousarray(arr if arr.ndim == 2 else arr[:, :, 0])
    if encoding == "jpeg":
        if not 0 <= jpeg_quality <= 100:
            raise ConversionError(f"jpeg_quality must be in [0, 100], got {jpeg_quality}")
        ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - OpenCV fails only on unsupported shapes, checked above
        raise ConversionError(f"image: OpenCV could not encode a {arr.shape} array as {encoding}")
    return common_pb2.Image(encoded=common_pb2.EncodedImage(data=buf.tobytes(), format=encoding))


def image_from_proto(msg: common_pb2.Image, max_pixels: int | None = None, field: str = "image",
                     writable: bool = False) -> np.ndarray:
    """HxWx3 uint8 RGB array from an ``Image`` message.

    Grey images are expanded to three channels. JPEG/PNG bytes are recognised by their magic
    number (the ``format`` field is informative) and decoded with OpenCV, ignoring EXIF
    orientation (pixels come back as stored). ``max_pixels`` limits height * width; it is
    checked from the raw shape or the PNG/JPEG header before anything is decoded, and exceeding
    it raises :class:`TooLargeError`.

    A raw RGB image comes back as a read-only view of the message's bytes (no copy); pass
    ``writable=True`` to get a writable array in every case.
    """
    kind = msg.WhichOneof("data")
    if kind is None:
        raise ConversionError(f"{field}: empty (set either {field}.raw or {field}.encoded)")
    if kind == "raw":
        out = _raw_image_from_proto(msg.raw, max_pixels, f"{field}.raw")
    else:
        out = _encoded_image_from_proto(msg.encoded, max_pixels, f"{field}.encoded")
    if writable and not out.flags.writeable:
        out = out.copy()
    return out


def image_size(msg: common_pb2.Image, field: str = "image") -> tuple[int, int]:
    """(height, width) of an ``Image`` message without decoding it (PNG/JPEG: from the header).

    Raises :class:`ConversionError` when the message is empty or the header cannot be read.
    """
    kind = msg.WhichOneof("data")
    if kind is None:
        raise ConversionError(f"{field}: empty (set either {field}.raw or {field}.encoded)")
    if kind == "raw":
        return int(msg.raw.height), int(msg.raw.width)
    data = msg.encoded.data
    size = encoded_image_size(data)
    if size is None:
        raise ConversionError(f"{field}.encoded: cannot read the image size from the "
                              f"{_describe_bytes(data)} header")
    return size


def encoded_image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) read from a PNG IHDR or JPEG SOF header, or None if it cannot be read."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data.startswith(_JPEG_MAGIC):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments up to the first start-of-frame; None if not found."""
    n = min(len(data), _JPEG_HEADER_SCAN_BYTES)
    i = 2  # after SOI
    while i + 1 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA) or i + 4 > n:  # EOI or start of scan before any frame header
            return None
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return (height, width) if height > 0 else None  # height 0: defined later by DNL
        if length < 2:
            return None
        i += 2 + length
    return None


def _raw_image_from_proto(raw: common_pb2.RawImage, max_pixels: int | None, field: str) -> np.ndarray:
    h, w, c = int(raw.height), int(raw.width), int(raw.channels)
    if h == 0 or w == 0:
        raise ConversionError(f"{field}: height and width must be > 0, got height={h} width={w}")
    if c not in (1, 3):
        raise ConversionError(f"{field}.channels must be 1 or 3, got {c}")
    _check_pixels(h, w, max_pixels, field)
    data = raw.data
    expected = h * w * c
    if len(data) != expected:
        raise ConversionError(f"{field}: data has {len(data)} bytes, expected height*width*channels = "
                              f"{h}*{w}*{c} = {expected}")
    arr = np.frombuffer(data, dtype=np.uint8)
    if c == 1:
        return cv2.cvtColor(arr.reshape(h, w), cv2.COLOR_GRAY2RGB)
    return arr.reshape(h, w, 3)


def _encoded_image_from_proto(enc: common_pb2.EncodedImage, max_pixels: int | None,
                              field: str) -> np.ndarray:
    data = enc.data
    if not data:
        raise ConversionError(f"{field}: data is empty")
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        raise ConversionError(f"{field}: could not decode {len(data)} bytes as JPEG or PNG "
                              f"(they start with {data[:8]!r}, not a JPEG or PNG signature)")
    size = encoded_image_size(data)
    if size is not None:
        if size[0] == 0 or size[1] == 0:
            raise ConversionError(f"{field}: the {_describe_bytes(data)} header says "
                                  f"height={size[0]} width={size[1]}; both must be > 0")
        _check_pixels(size[0], size[1], max_pixels, field)
    out = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _IMDECODE_FLAGS)
    if out is None or out.size == 0:
        raise ConversionError(f"{field}: could not decode {len(data)} bytes as JPEG or PNG "
                              f"(the {_describe_bytes(data)} data is corrupt or truncated)")
    if size is None:  # header unreadable but OpenCV decoded it: check afterwards
        _check_pixels(out.shape[0], out.shape[1], max_pixels, field)
    return out


def _check_pixels(h: int, w: int, max_pixels: int | None, field: str) -> None:
    if max_pixels is not None and h * w > max_pixels:
        raise TooLargeError(f"{field}: {w}x{h} = {h * w} pixels exceeds this service's limit of "
                            f"{max_pixels} pixels; send a smaller image")


def _describe_bytes(data: bytes) -> str:
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    return "unknown-format"


def _check_image_array(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ConversionError(f"image must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise ConversionError(f"image dtype must be uint8, got {array.dtype}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3)):
        raise ConversionError(f"image must be HxW, HxWx1 or HxWx3 (RGB), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ConversionError(f"image height and width must be > 0, got shape {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Masks (COCO RLE)
# ---------------------------------------------------------------------------------------------


def mask_to_proto(mask: np.ndarray) -> common_pb2.Mask:
    """A ``Mask`` message (pycocotools compressed RLE, size, tight box) from an HxW mask.

    An empty mask gets the zero box (0, 0, 0, 0).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ConversionError(f"mask must be a non-empty HxW array, got shape {mask.shape}")
    rle = geometry.encode_rle(mask.astype(bool, copy=False))
    box = geometry.mask_box(mask)
    return common_pb2.Mask(height=mask.shape[0], width=mask.shape[1], counts=rle["counts"],
                           box=box_to_proto(box if box is not None else (0.0, 0.0, 0.0, 0.0)))


def mask_from_proto(msg: common_pb2.Mask, field: str = "mask",
                    max_pixels: int | None = DEFAULT_MAX_MASK_PIXELS) -> np.ndarray:
    """HxW bool mask from a ``Mask`` message (validated: sizes > 0, at most ``max_pixels``, counts decodable)."""
    return geometry.decode_rle(rle_from_proto(msg, field=field, max_pixels=max_pixels))


def rle_from_proto(msg: common_pb2.Mask, field: str = "mask", validate: bool = True,
                   max_pixels: int | None = DEFAULT_MAX_MASK_PIXELS) -> dict:
    """pycocotools RLE ``{"size": [h, w], "counts": bytes}`` from a ``Mask`` without decoding it.

    With ``validate`` the counts are parsed (vectorised, no mask is allocated) and must describe
    exactly height * width pixels; pycocotools itself reads garbage memory for some bad counts.
    A mask of more than ``max_pixels`` (height * width; None: no limit) raises :class:`TooLargeError`
    before anything is parsed: decoding it would allocate that many bytes.
    """
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise ConversionError(f"{field}: height and width must be > 0, got height={h} width={w}")
    if max_pixels is not None and h * w > max_pixels:
        raise TooLargeError(f"{field}: {w}x{h} = {h * w} pixels exceeds the limit of {max_pixels} pixels "
                            "for a mask; masks are in frame (or crop) coordinates")
    counts = msg.counts
    if validate:
        runs = rle_counts_to_runs(counts, field=f"{field}.counts")
        total = int(runs.sum())
        if total != h * w:
            raise ConversionError(f"{field}.counts: the runs cover {total} pixels, expected "
                                  f"height*width = {h}*{w} = {h * w}")
    return {"size": [h, w], "counts": counts}


def rle_to_proto(rle: dict, box: Box | None = None) -> common_pb2.Mask:
    """A ``Mask`` message from a pycocotools RLE (counts as bytes or str) without decoding it.

    The box is computed from the RLE (pycocotools ``toBbox``) unless given.
    """
    try:
        h, w = (int(s) for s in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"rle must be a dict with 'size' [h, w] and 'counts', got {rle!r:.80}") from exc
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if not isinstance(counts, bytes):
        raise ConversionError("rle['counts'] must be the compressed bytes or str (an uncompressed "
                              "list of runs is not supported; use pycocotools.mask.frPyObjects)")
    if box is None:
        x, y, bw, bh = (float(v) for v in mask_utils.toBbox({"size": [h, w], "counts": counts}))
        box = (x, y, x + bw, y + bh)
    return common_pb2.Mask(height=h, width=w, counts=counts, box=box_to_proto(box))


def rle_counts_to_runs(counts: bytes | str, field: str = "counts") -> np.ndarray:
    """Run lengths (int64) of a pycocotools compressed RLE string, alternating 0s and 1s.

    Vectorised re-implementation of pycocotools' ``rleFrString`` that validates its input:
    characters must be in '0'..'o', the last value must be complete and every run >= 0.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        raise ConversionError(f"{field}: empty; expected pycocotools compressed RLE counts")
    if c.min() < 0 or c.max() > 63:
        bad = int(np.flatnonzero((c < 0) | (c > 63))[0])
        raise ConversionError(f"{field}: byte {bad} ({counts[bad:bad + 1]!r}) is not a compressed RLE "
                              f"character ('0'..'o')")
    more = (c & 0x20) != 0
    if more[-1]:
        raise ConversionError(f"{field}: truncated (the last value is incomplete)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 7:
        raise ConversionError(f"{field}: a value spans {int(lengths.max())} characters; at most 7 fit "
                              f"a 32-bit run length")
    pos = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * pos), starts)
    negative = (c[ends] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * lengths)), x)
    # Runs from the fourth on are stored as differences to the run two places before.
    runs = x.copy()
    if runs.size > 3:
        runs[1::2] = np.cumsum(x[1::2])
        runs[2::2] = np.cumsum(x[2::2])
    if runs.min() < 0:
        raise ConversionError(f"{field}: decodes to a negative run length; not a valid RLE")
    return runs


# ---------------------------------------------------------------------------------------------
# Boxes, points, keypoints, probabilities
# ---------------------------------------------------------------------------------------------


def box_to_proto(box: Sequence[float]) -> common_pb2.Box:
    """A ``Box`` message from ``(x1, y1, x2, y2)`` (x2/y2 exclusive)."""
    if len(box) != 4:
        raise ConversionError(f"box must be (x1, y1, x2, y2), got {len(box)} values")
    x1, y1, x2, y2 = (float(v) for v in box)
    return common_pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2)


def box_from_proto(msg: common_pb2.Box, field: str = "box") -> Box:
    """``(x1, y1, x2, y2)`` from a ``Box``; coordinates must be finite with x2 >= x1 and y2 >= y1."""
    box = (float(msg.x1), float(msg.y1), float(msg.x2), float(msg.y2))
    if not all(np.isfinite(box)):
        raise ConversionError(f"{field}: coordinates must be finite, got {box}")
    if box[2] < box[0] or box[3] < box[1]:
        raise ConversionError(f"{field}: needs x2 >= x1 and y2 >= y1, got (x1, y1, x2, y2) = {box}")
    return box


def point_to_proto(point: Sequence[float]) -> common_pb2.Point:
    """A ``Point`` message from ``(x, y)``."""
    if len(point) != 2:
        raise ConversionError(f"point must be (x, y), got {len(point)} values")
    return common_pb2.Point(x=float(point[0]), y=float(point[1]))


def point_from_proto(msg: common_pb2.Point) -> Point:
    """``(x, y)`` from a ``Point`` (NaN passes through: it means "not found")."""
    return float(msg.x), float(msg.y)


def keypoints_to_proto(names: Sequence[str], array: np.ndarray) -> list[common_pb2.Keypoint]:
    """``Keypoint`` messages from K names and a Kx3 array of (x, y, confidence).

    Missing keypoints have NaN x/y. Use ``pose.keypoints.extend(keypoints_to_proto(...))``.
    """
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ConversionError(f"keypoints must be a Kx3 array of (x, y, confidence), got shape {arr.shape}")
    if len(names) != arr.shape[0]:
        raise ConversionError(f"keypoints: {len(names)} names but {arr.shape[0]} rows")
    return [common_pb2.Keypoint(name=str(n), x=x, y=y, confidence=c)
            for n, (x, y, c) in zip(names, arr.tolist(), strict=True)]


def keypoints_from_proto(keypoints: Iterable[common_pb2.Keypoint]) -> tuple[list[str], np.ndarray]:
    """(names, Kx3 float32 array of (x, y, confidence)) from ``Keypoint`` messages."""
    kps = list(keypoints)
    arr = np.array([(k.x, k.y, k.confidence) for k in kps], dtype=np.float32).reshape(len(kps), 3)
    return [k.name for k in kps], arr


def probabilities_to_proto(names: Sequence[str], values: np.ndarray | Sequence[float]
                           ) -> common_pb2.Probabilities:
    """A ``Probabilities`` message; ``names`` may be empty (the model's class order applies)."""
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1:
        raise ConversionError(f"probabilities must be a 1-D array, got shape {vals.shape}")
    if names and len(names) != vals.size:
        raise ConversionError(f"probabilities: {len(names)} names but {vals.size} values")
    return common_pb2.Probabilities(names=[str(n) for n in names], values=vals.tolist())


def probabilities_from_proto(msg: common_pb2.Probabilities, field: str = "probabilities"
                             ) -> tuple[list[str], np.ndarray]:
    """(names, float32 values) from a ``Probabilities`` message (names may be empty)."""
    names = list(msg.names)
    values = np.array(msg.values, dtype=np.float32)
    if names and len(names) != values.size:
        raise ConversionError(f"{field}: {len(names)} names but {values.size} values; they must match")
    return names, values


# ---------------------------------------------------------------------------------------------
# Instances, frames, errors
# ---------------------------------------------------------------------------------------------


@dataclass
class InstanceData:
    """One detected animal, the numpy side of ``Instance``.

    ``rle`` is the mask as pycocotools RLE (always set when the message had a mask); ``mask`` is
    the decoded HxW bool mask, set on request (decoding costs a full-frame allocation).
    """

    box: Box | None = None
    score: float = 0.0
    mask: np.ndarray | None = None
    rle: dict | None = None
    com: Point | None = None
    class_name: str = ""
    track_id: int = 0   # 0 = not tracked (track ids start at 1)
    index: int = 0

    @classmethod
    def from_mask(cls, mask: np.ndarray, score: float, class_name: str = "", index: int = 0,
                  track_id: int = 0) -> InstanceData:
        """Instance with box, RLE and centre of mass computed from an HxW mask."""
        mask = np.asarray(mask, dtype=bool)
        return cls(box=geometry.mask_box(mask) or (0.0, 0.0, 0.0, 0.0), score=float(score), mask=mask,
                   rle=geometry.encode_rle(mask), com=geometry.center_of_mass(mask),
                   class_name=class_name, track_id=track_id, index=index)


def instance_to_proto(inst: InstanceData) -> common_pb2.Instance:
    """An ``Instance`` message. The mask comes from ``rle`` if set (no re-encoding), else ``mask``;
    a missing box is taken from the mask."""
    msg = common_pb2.Instance(index=int(inst.index), score=float(inst.score),
                              class_name=inst.class_name, track_id=int(inst.track_id))
    if inst.rle is not None:
        msg.mask.CopyFrom(rle_to_proto(inst.rle))
    elif inst.mask is not None:
        msg.mask.CopyFrom(mask_to_proto(inst.mask))
    if inst.box is not None:
        msg.box.CopyFrom(box_to_proto(inst.box))
    elif msg.HasField("mask"):
        msg.box.CopyFrom(msg.mask.box)
    if inst.com is not None:
        msg.com.CopyFrom(point_to_proto(inst.com))
    return msg


def instance_from_proto(msg: common_pb2.Instance, decode_mask: bool = False,
                        field: str = "instance", max_mask_pixels: int | None = DEFAULT_MAX_MASK_PIXELS
                        ) -> InstanceData:
    """``InstanceData`` from an ``Instance``; ``decode_mask`` also fills ``mask``.

    Unset box/com/mask come back as None. A mask larger than ``max_mask_pixels`` raises TooLargeError.
    """
    rle = (rle_from_proto(msg.mask, field=f"{field}.mask", max_pixels=max_mask_pixels)
           if msg.HasField("mask") else None)
    return InstanceData(
        box=box_from_proto(msg.box, field=f"{field}.box") if msg.HasField("box") else None,
        score=float(msg.score),
        mask=geometry.decode_rle(rle) if (decode_mask and rle is not None) else None,
        rle=rle,
        com=point_from_proto(msg.com) if msg.HasField("com") else None,
        class_name=msg.class_name,
        track_id=int(msg.track_id),
        index=int(msg.index),
    )


@dataclass(frozen=True)
class FrameRefData:
    """The numpy side of ``FrameRef``: video id, frame index from 0, time in seconds."""

    video: str = ""
    index: int = 0
    time_s: float = 0.0


def frame_ref_to_proto(video: str = "", index: int = 0, time_s: float = 0.0) -> common_pb2.FrameRef:
    """A ``FrameRef`` message."""
    if index < 0:
        raise ConversionError(f"frame.index must be >= 0, got {index}")
    return common_pb2.FrameRef(video=video, index=int(index), time_s=float(time_s))


def frame_ref_from_proto(msg: common_pb2.FrameRef) -> FrameRefData:
    """``FrameRefData`` from a ``FrameRef`` message."""
    return FrameRefData(video=msg.video, index=int(msg.index), time_s=float(msg.time_s))


def item_error(code: grpc.StatusCode, message: str) -> common_pb2.ItemError:
    """A per-item ``ItemError`` carrying the numeric gRPC status code."""
    return common_pb2.ItemError(code=int(code.value[0]), message=message)


def item_error_from_exception(exc: Exception) -> common_pb2.ItemError:
    """``ItemError`` for an exception: its ``code`` if it has one (``ConversionError``), else INTERNAL."""
    code = getattr(exc, "code", grpc.StatusCode.INTERNAL)
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.INTERNAL
    return item_error(code, str(exc))


def item_error_code(msg: common_pb2.ItemError) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of an ``ItemError`` (UNKNOWN for a number gRPC does not define)."""
    for code in grpc.StatusCode:
        if code.value[0] == msg.code:
            return code
    return grpc.StatusCode.UNKNOWN
