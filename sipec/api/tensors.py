"""numpy <-> ``tensorflow.TensorProto`` (the tensors of TF Serving's PredictRequest/Response).

Importing this module does not import TensorFlow. Building a ``TensorProto`` needs its message
class, and ``tensorflow.core.framework.tensor_pb2`` imports the whole ``tensorflow`` package
(about 3 s), so :func:`ndarray_to_tensor_proto` imports it on first use unless you pass a message
to fill. :func:`tensor_proto_to_ndarray` only reads fields and never imports TensorFlow.
(``tensorflow_serving.apis.predict_pb2`` imports ``tensorflow`` as well.)

Encoding follows ``tf.make_tensor_proto`` exactly for numeric dtypes: ``tensor_content`` bytes
when the tensor has more than one element, the typed ``*_val`` field for one element, nothing for
zero elements; strings use ``string_val``. One deliberate difference: bool and uint16 tensors with
more than one element also use ``tensor_content`` (TensorFlow writes ``bool_val`` / ``int_val``, one
varint per element; TensorFlow and TF Serving read both). Decoding follows ``tf.make_ndarray``, including its rule
that a short ``*_val`` list is padded with its last value (one value broadcasts to the shape); ``int_val`` /
``half_val`` values outside a narrow dtype's range keep their low bits, as TensorFlow's C++
``Tensor::FromProto`` (what TF Serving runs) casts them.

A shape costs a few bytes to claim (``[1, 100000, 100000, 3]`` with one ``int_val``), so decoding checks
the size of the array it would allocate against ``max_bytes`` (default :data:`DEFAULT_MAX_TENSOR_BYTES`,
4x the default gRPC message limit) before allocating anything, and raises :class:`TooLargeError`
(RESOURCE_EXHAUSTED) beyond it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from sipec.api.convert import ConversionError, TooLargeError

if TYPE_CHECKING:  # pragma: no cover
    from tensorflow.core.framework.tensor_pb2 import TensorProto

# tensorflow/core/framework/types.proto DataType values.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 17, 19, 22, 23

_NP_TO_DT: dict[np.dtype, int] = {
    np.dtype(np.float16): DT_HALF,
    np.dtype(np.float32): DT_FLOAT,
    np.dtype(np.float64): DT_DOUBLE,
    np.dtype(np.int8): DT_INT8,
    np.dtype(np.int16): DT_INT16,
    np.dtype(np.int32): DT_INT32,
    np.dtype(np.int64): DT_INT64,
    np.dtype(np.uint8): DT_UINT8,
    np.dtype(np.uint16): DT_UINT16,
    np.dtype(np.uint32): DT_UINT32,
    np.dtype(np.uint64): DT_UINT64,
    np.dtype(np.bool_): DT_BOOL,
}
_DT_TO_NP: dict[int, np.dtype] = {v: k for k, v in _NP_TO_DT.items()}
# Typed field holding the values of each numeric dtype when tensor_content is empty.
_DT_FIELD: dict[int, str] = {
    DT_HALF: "half_val", DT_FLOAT: "float_val", DT_DOUBLE: "double_val",
    DT_INT8: "int_val", DT_INT16: "int_val", DT_INT32: "int_val", DT_UINT8: "int_val",
    DT_UINT16: "int_val", DT_INT64: "int64_val", DT_UINT32: "uint32_val", DT_UINT64: "uint64_val",
    DT_BOOL: "bool_val",
}
_DT_NAMES = {
    0: "DT_INVALID", 1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16",
    6: "DT_INT8", 7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64", 10: "DT_BOOL", 11: "DT_QINT8",
    12: "DT_QUINT8", 13: "DT_QINT32", 14: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16",
    17: "DT_UINT16", 18: "DT_COMPLEX128", 19: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT",
    22: "DT_UINT32", 23: "DT_UINT64",
}
SUPPORTED_DTYPES = tuple(str(d) for d in _NP_TO_DT) + ("bytes/str (DT_STRING)",)
# Largest array `tensor_proto_to_ndarray` allocates by default: 4x the default gRPC message limit (64 MiB).
DEFAULT_MAX_TENSOR_BYTES = 256 * 1024 * 1024
MAX_RANK = 32   # numpy's own limit is 64; no model here has more than 5 dimensions
_NUMPY_MAX_BYTES = 2**62   # below numpy's largest addressable array (intp), for every shape


def dtype_name(dt: int) -> str:
    """Readable name of a TensorFlow DataType number, e.g. ``DT_BFLOAT16``."""
    return _DT_NAMES.get(dt, f"DataType {dt}")


def ndarray_to_tensor_proto(arr: Any, out: TensorProto | None = None) -> TensorProto:
    """``TensorProto`` from a numpy array (or anything ``np.asarray`` accepts).

    Numeric dtypes: float16/32/64, int8/16/32/64, uint8/16/32/64, bool. Arrays of bytes/str
    (numpy ``S``/``U`` dtypes or object arrays of bytes/str) become DT_STRING, str encoded as UTF-8.
    ``out`` (e.g. ``request.inputs["images"]``) is filled in place instead of a new message, which
    avoids copying a large tensor twice. Unsupported dtypes raise :class:`ConversionError`.
    """
    a = np.asarray(arr)
    if out is None:
        from tensorflow.core.framework import tensor_pb2  # imports tensorflow: keep lazy

        out = tensor_pb2.TensorProto()
    else:
        out.Clear()
    if a.dtype.kind in "SUO":
        out.dtype = DT_STRING
        _set_shape(out, a.shape)
        out.string_val.extend(_to_bytes(v) for v in a.ravel().tolist())
        return out
    dt = _NP_TO_DT.get(np.dtype(a.dtype.type))
    if dt is None:
        raise ConversionError(f"tensor dtype {a.dtype} is not supported; use one of "
                              f"{', '.join(SUPPORTED_DTYPES)}")
    out.dtype = dt
    _set_shape(out, a.shape)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # TF wire order is little-endian
    if a.size > 1:
        out.tensor_content = np.ascontiguousarray(a).tobytes()
    elif a.size == 1:
        flat = a.ravel()
        if dt == DT_HALF:
            out.half_val.append(int(flat.view(np.uint16)[0]))
        else:
            getattr(out, _DT_FIELD[dt]).append(flat[0].item())
    return out


def tensor_proto_to_ndarray(proto: TensorProto, field: str = "tensor",
                            max_bytes: int | None = DEFAULT_MAX_TENSOR_BYTES) -> np.ndarray:
    """numpy array from a ``TensorProto`` (reads ``tensor_content`` or the typed ``*_val`` fields).

    DT_STRING gives an object array of bytes, as ``tf.make_ndarray`` does. Arrays decoded from
    ``tensor_content`` are writable copies. Unknown dtypes and sizes that do not fit the shape
    raise :class:`ConversionError` naming ``field``; an array of more than ``max_bytes`` (None: no
    limit; an object array counts 8 bytes an element) raises :class:`TooLargeError` before allocation.
    """
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(s < 0 for s in shape):
        raise ConversionError(f"{field}: shape must be fully defined, got {_short_shape(shape) or 'unknown rank'}")
    if len(shape) > MAX_RANK:
        raise ConversionError(f"{field}: {len(shape)} dimensions, at most {MAX_RANK} are supported")
    n = math.prod(shape)   # Python ints: no int64 overflow
    dt = int(proto.dtype)
    np_dtype = np.dtype(object) if dt == DT_STRING else _DT_TO_NP.get(dt)
    if np_dtype is None:
        raise ConversionError(f"{field}: dtype {dtype_name(dt)} is not supported; supported: "
                              f"{', '.join(SUPPORTED_DTYPES)}")
    if max_bytes is not None and n * np_dtype.itemsize > max_bytes:
        raise TooLargeError(f"{field}: shape {_short_shape(shape)} of {dtype_name(dt)} is {n} elements = "
                            f"{n * np_dtype.itemsize} bytes, more than this server's limit of {max_bytes} bytes")
    if math.prod(max(d, 1) for d in shape) * np_dtype.itemsize >= _NUMPY_MAX_BYTES:
        # numpy refuses such a shape even with a 0 in it ([0, 2**62])
        raise TooLargeError(f"{field}: shape {_short_shape(shape)} is too large for an array, even an empty one")
    if dt == DT_STRING:
        values = list(proto.string_val)
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return _fit(out, shape, n, field, fill=b"")
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != n * np_dtype.itemsize:
            raise ConversionError(f"{field}: tensor_content has {len(content)} bytes, expected "
                                  f"{n} elements of shape {_short_shape(shape)} * {np_dtype.itemsize} bytes "
                                  f"({np_dtype}) = {n * np_dtype.itemsize}")
        return np.frombuffer(content, dtype=np_dtype.newbyteorder("<")).astype(np_dtype).reshape(shape)
    name = _DT_FIELD[dt]
    raw = getattr(proto, name)
    if name in ("int_val", "half_val"):
        # int32 on the wire for int8/16, uint8/16 and float16 bit patterns. TensorFlow's C++ Tensor::FromProto
        # (what TF Serving runs) static_casts each value to the narrow type, i.e. keeps its low bits; clients
        # rely on it (Triton's perf_analyzer packs uint8 data four to an int_val), so this does the same rather
        # than refusing. numpy's own conversion would raise OverflowError for some values.
        target = np.dtype(np.uint16) if dt == DT_HALF else np_dtype
        values = np.array(raw, dtype=np.int64).astype(target)   # two's-complement wrap, as static_cast
        if dt == DT_HALF:
            values = values.view(np.float16)
    else:
        values = np.array(raw, dtype=np_dtype)
    return _fit(values, shape, n, field, fill=0)


def _short_shape(shape: list[int]) -> str:
    return str(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, ...] ({len(shape)} dimensions)"


def _fit(values: np.ndarray, shape: list[int], n: int, field: str, fill: Any) -> np.ndarray:
    """Reshape typed values to ``shape``; pad a short list with its last value (TF's convention)."""
    if values.size > n:
        raise ConversionError(f"{field}: has {values.size} values but shape {_short_shape(shape)} holds {n}")
    if values.size == 0:
        out = np.empty(n, dtype=values.dtype)
        out[:] = fill
        return out.reshape(shape)
    if values.size < n:
        values = np.concatenate([values, np.repeat(values[-1:], n - values.size)])
    return values.reshape(shape)


def _set_shape(proto: TensorProto, shape: tuple[int, ...]) -> None:
    proto.tensor_shape.SetInParent()  # present even for scalars, as TensorFlow writes it
    for s in shape:
        proto.tensor_shape.dim.add(size=int(s))


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        try:
            return v.encode("utf-8")
        except UnicodeEncodeError as exc:   # lone surrogates
            raise ConversionError(f"string tensor element {v[:32]!r} is not encodable as UTF-8: {exc.reason}") \
                from None
    raise ConversionError(f"string tensor elements must be bytes or str, got {type(v).__name__}")
