"""Fuzzing of numpy <-> TensorProto (sipec.api.tensors, the model server's conversions) with hypothesis.

Whatever a client puts in a TensorProto (any DataType number, shapes with negative, zero or huge dimensions,
unknown rank, more dimensions than numpy has, tensor_content of any length, typed values of the wrong range
or count, string tensors), decoding returns a well-formed array of exactly the shape and dtype the proto
names, or raises the module's ConversionError (TooLargeError, RESOURCE_EXHAUSTED, for sizes beyond
`max_bytes`) with a message naming the field: never another exception, never an allocation beyond the limit
(measured with tracemalloc). Arrays that decode agree with TensorFlow's `tf.make_ndarray`. Encoding any numpy
array gives a TensorProto that decodes back to it, or ConversionError. Bounded to a few seconds: at most 200
examples a property.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tensorflow as tf  # a hard dependency: a broken install fails, never skips
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2

from sipec.api.convert import ConversionError, TooLargeError
from sipec.api.tensors import (
    _DT_FIELD,
    _DT_TO_NP,
    DT_HALF,
    DT_STRING,
    MAX_RANK,
    ndarray_to_tensor_proto,
    tensor_proto_to_ndarray,
)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 1 << 20        # max_bytes of these tests: 1 MiB
INT64 = st.integers(-(2**63), 2**63 - 1)
# DataType numbers: the supported ones, unsupported real ones (complex, bfloat16, resource, ...), unknown ones
DTYPES = st.one_of(st.sampled_from(sorted(_DT_TO_NP) + [DT_STRING]), st.integers(0, 30), st.integers(-5, 2**31 - 1))
DIM = st.one_of(st.integers(0, 6), st.integers(-3, -1), st.sampled_from([2**16, 2**31 - 1, 2**40, 2**62, 2**63 - 1]))
SHAPES = st.lists(DIM, max_size=6) | st.lists(st.integers(0, 1), min_size=MAX_RANK - 1, max_size=MAX_RANK + 40)
# the proto field ranges of each typed value list
VALUES = {
    "float_val": st.floats(width=32), "double_val": st.floats(), "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": INT64, "bool_val": st.booleans(), "half_val": st.integers(-(2**31), 2**31 - 1),
    "uint32_val": st.integers(0, 2**32 - 1), "uint64_val": st.integers(0, 2**64 - 1),
    "string_val": st.binary(max_size=8),
}


def _proto(dtype: int, shape: list[int], unknown_rank: bool, content: bytes | None,
           values: dict[str, list]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.unknown_rank = unknown_rank
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    if content is not None:
        proto.tensor_content = content
    for name, vals in values.items():
        getattr(proto, name).extend(vals)
    # as a server receives it: through the wire
    return tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def _decode_checked(proto: tensor_pb2.TensorProto, max_bytes: int | None = LIMIT) -> np.ndarray | None:
    """The decoded array, checked; None when it raised ConversionError (checked too)."""
    tracemalloc.start()
    try:
        out = tensor_proto_to_ndarray(proto, field="inputs['x']", max_bytes=max_bytes)
    except ConversionError as exc:
        assert str(exc).startswith("inputs['x']: "), f"the message names the field: {exc}"
        event(f"refused: {type(exc).__name__}")
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # nothing beyond the limit was allocated (+ the tensor_content copy and small overheads)
    assert max_bytes is None or peak <= max_bytes + 2 * len(proto.tensor_content) + (1 << 16), peak
    shape = [d.size for d in proto.tensor_shape.dim]
    event("decoded")
    assert isinstance(out, np.ndarray) and list(out.shape) == shape
    if proto.dtype == DT_STRING:
        assert out.dtype == object and all(isinstance(v, bytes) for v in out.ravel().tolist())
    else:
        assert out.dtype == _DT_TO_NP[proto.dtype] and out.dtype.isnative
    if max_bytes is not None:
        assert out.size * out.dtype.itemsize <= max_bytes
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return b.dtype == object and a.shape == b.shape and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _tf_agrees(proto: tensor_pb2.TensorProto, ours: np.ndarray) -> None:
    """Where TensorFlow's make_ndarray also decodes the proto, it gives the same array."""
    try:
        theirs = tf.make_ndarray(proto)
    except Exception:  # noqa: BLE001 - TensorFlow refuses some protos we refuse or read differently
        return
    if proto.dtype == DT_STRING:   # TensorFlow gives str '' where no value was sent
        assert [v if isinstance(v, bytes) else v.encode() for v in theirs.reshape(-1).tolist()] == \
            ours.reshape(-1).tolist()
    else:
        assert _same(ours, theirs.astype(ours.dtype).reshape(ours.shape)), (ours, theirs)


@FUZZ
@given(dtype=DTYPES, shape=SHAPES, unknown_rank=st.booleans(), content=st.none() | st.binary(max_size=96),
       field=st.sampled_from(sorted(VALUES)), data=st.data())
def test_any_tensor_proto_decodes_or_raises_conversion_error(dtype, shape, unknown_rank, content, field, data):
    values = {field: data.draw(st.lists(VALUES[field], max_size=12))}
    _decode_checked(_proto(dtype, shape, unknown_rank, content, values))


@FUZZ
@given(dtype=st.sampled_from(sorted(_DT_TO_NP)), shape=st.lists(st.integers(0, 5), max_size=4),
       delta=st.integers(-9, 9), seed=st.integers(0, 2**16))
def test_tensor_content_of_the_right_or_a_wrong_length(dtype, shape, delta, seed):
    itemsize = _DT_TO_NP[dtype].itemsize
    n = int(np.prod(shape))
    length = max(0, n * itemsize + delta)
    content = np.random.default_rng(seed).bytes(length)
    out = _decode_checked(_proto(dtype, shape, False, content, {}))
    if length == n * itemsize and length > 0:
        assert out is not None
        want = np.frombuffer(content, _DT_TO_NP[dtype].newbyteorder("<")).reshape(shape)
        assert _same(out, want.astype(_DT_TO_NP[dtype]))
        _tf_agrees(_proto(dtype, shape, False, content, {}), out)
    elif length > 0:
        assert out is None   # a length that does not fit the shape is refused, never reinterpreted


@FUZZ
@given(dtype=st.sampled_from(sorted(_DT_TO_NP) + [DT_STRING]), shape=st.lists(st.integers(0, 4), max_size=4),
       data=st.data())
def test_typed_values_of_any_range_and_count(dtype, shape, data):
    field = "string_val" if dtype == DT_STRING else _DT_FIELD[dtype]
    values = data.draw(st.lists(VALUES[field], max_size=int(np.prod(shape)) + 3))
    proto = _proto(dtype, shape, False, None, {field: values})
    out = _decode_checked(proto)
    n = int(np.prod(shape))
    if out is None:
        return
    assert len(values) <= n
    if values and dtype != DT_HALF and dtype != DT_STRING:
        # every value kept as it was sent (padded with the last one, as TensorFlow does); int32 values beyond a
        # narrow integer type keep their low bits, as TensorFlow's C++ Tensor::FromProto static_cast does
        got = out.reshape(-1).tolist()
        if field == "int_val":
            values = np.array(values, np.int64).astype(_DT_TO_NP[dtype]).tolist()
        want = [*values, *[values[-1]] * (n - len(values))]
        assert all(g == w or (g != g and w != w) for g, w in zip(got, want, strict=True)), (got, want)
    _tf_agrees(proto, out)


@FUZZ
@given(dtype=st.sampled_from(sorted(_DT_TO_NP) + [DT_STRING]),
       shape=st.lists(st.sampled_from([0, 1, 3, 1000, 2**20, 2**31, 2**62, 2**63 - 1]), min_size=1, max_size=5),
       one=st.booleans())
def test_giant_shapes_claimed_in_a_few_bytes_are_refused_before_allocation(dtype, shape, one):
    field = "string_val" if dtype == DT_STRING else _DT_FIELD[dtype]
    value = {"string_val": b"x", "bool_val": True, "float_val": 1.0, "double_val": 1.0}.get(field, 1)
    proto = _proto(dtype, shape, False, None, {field: [value]} if one else {})
    out = _decode_checked(proto)
    itemsize = 8 if dtype == DT_STRING else _DT_TO_NP[dtype].itemsize
    if int(np.prod([float(d) for d in shape])) * itemsize > LIMIT:
        assert out is None
        with pytest.raises(TooLargeError, match=r"inputs\['x'\]: shape .* (bytes|too large)"):
            tensor_proto_to_ndarray(proto, field="inputs['x']", max_bytes=LIMIT)


def test_the_default_limit_refuses_a_shape_of_terabytes_without_allocating():
    proto = _proto(4, [1, 100_000, 100_000, 3], False, None, {"int_val": [7]})
    tracemalloc.start()
    with pytest.raises(TooLargeError, match=r"tensor: shape \[1, 100000, 100000, 3\] of DT_UINT8 is 30000000000"):
        tensor_proto_to_ndarray(proto)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20
    tracemalloc.stop()
    assert tensor_proto_to_ndarray(_proto(4, [2, 3], False, None, {"int_val": [7]}), max_bytes=None).sum() == 42


ENCODABLE = hnp.scalar_dtypes() | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes() | st.just(np.dtype(object))


@FUZZ
@given(arr=hnp.arrays(dtype=ENCODABLE, shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                      elements=None), byteswap=st.booleans())
def test_any_numpy_array_encodes_and_decodes_back_or_raises_conversion_error(arr, byteswap):
    if byteswap and arr.dtype.kind in "iufcb" and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    try:
        proto = ndarray_to_tensor_proto(arr)
    except ConversionError as exc:
        assert str(exc)
        return
    back = _decode_checked(tensor_pb2.TensorProto.FromString(proto.SerializeToString()), max_bytes=None)
    assert back is not None and back.shape == arr.shape
    if arr.dtype.kind in "SUO":
        want = [v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel().tolist()]
        assert back.ravel().tolist() == want
    else:
        assert _same(back, arr.astype(arr.dtype.newbyteorder("=")))


@FUZZ
@given(items=st.lists(st.one_of(st.binary(max_size=4), st.text(max_size=4), st.integers(), st.none(),
                                st.floats(), st.lists(st.integers(), max_size=2)), max_size=6))
def test_object_arrays_of_anything(items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    try:
        proto = ndarray_to_tensor_proto(arr)
    except ConversionError as exc:
        assert "string tensor elements must be bytes or str" in str(exc)
        assert not all(isinstance(v, bytes | str) for v in items)
        return
    assert tensor_proto_to_ndarray(proto).tolist() == [v if isinstance(v, bytes) else v.encode() for v in items]


def test_unencodable_text_is_a_conversion_error():
    with pytest.raises(ConversionError, match="not encodable as UTF-8"):
        ndarray_to_tensor_proto(np.array(["ok", "\ud800"]))
