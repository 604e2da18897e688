"""numpy <-> TensorProto (sipec.api.tensors), checked against TensorFlow's own make_tensor_proto/make_ndarray."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf  # a hard dependency: a broken install fails, never skips
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2

from sipec.api.convert import ConversionError
from sipec.api.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

NUMERIC = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
           np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
SHAPES = [(), (1,), (0,), (2, 0, 3), (5,), (3, 4), (1, 1, 1), (2, 3, 2)]
# dtypes where TensorFlow itself writes tensor_content for more than one element; for bool and
# uint16 we write tensor_content where TF writes one varint per element (both decode the same).
TF_CONTENT_TYPES = {np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                    np.uint8, np.uint32, np.uint64}


def _sample(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if dtype is np.bool_:
        return rng.random(shape) > 0.5
    if info is not None:  # include the extremes of the range
        a = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        if a.size >= 2:
            a.flat[0], a.flat[1] = info.min, info.max
        return a
    a = (rng.standard_normal(shape) * 1000).astype(dtype)
    if a.size >= 3:
        a.flat[0], a.flat[1], a.flat[2] = np.nan, np.inf, -0.0
    return a


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numeric_round_trip_and_equality_with_tensorflow(dtype: type, shape: tuple[int, ...]) -> None:
    a = _sample(dtype, shape, np.random.default_rng(0))
    ours = ndarray_to_tensor_proto(a)
    theirs = tf.make_tensor_proto(a)
    assert ours.dtype == theirs.dtype and ours.tensor_shape == theirs.tensor_shape
    if dtype in TF_CONTENT_TYPES or a.size <= 1:
        assert ours == theirs  # byte-for-byte the same message
    else:
        assert ours.tensor_content  # deliberate: bool/uint16 as raw bytes
    assert _same(tensor_proto_to_ndarray(ours), a)
    assert _same(tensor_proto_to_ndarray(theirs), a)
    assert _same(tf.make_ndarray(ours), a)
    # through the wire
    wire = tensor_pb2.TensorProto.FromString(ours.SerializeToString())
    assert _same(tensor_proto_to_ndarray(wire), a)


@pytest.mark.parametrize(
    "a",
    [np.array([b"a", b"bc", b""]), np.array(["x", "y\u00e9"]), np.array([[b"a"], [b"\x00z"]], dtype=object),
     np.array(b"q"), np.zeros((0, 2), dtype="S1")],
    ids=["bytes", "unicode", "object2d", "scalar", "empty"],
)
def test_string_tensors_match_tensorflow(a: np.ndarray) -> None:
    ours = ndarray_to_tensor_proto(a)
    assert ours == tf.make_tensor_proto(a)
    expected = tf.make_ndarray(tf.make_tensor_proto(a))
    got = tensor_proto_to_ndarray(ours)
    assert got.dtype == object and got.shape == a.shape
    assert got.tolist() == expected.tolist()


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(st.sampled_from([np.float32, np.int64, np.uint8, np.float16]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_property_round_trip_matches_make_ndarray(a: np.ndarray) -> None:
    proto = ndarray_to_tensor_proto(a)
    assert _same(tensor_proto_to_ndarray(proto), a)
    assert _same(tf.make_ndarray(proto), a)


@pytest.mark.parametrize(
    ("dtype", "field", "value"),
    [(1, "float_val", 2.5), (2, "double_val", -1.25), (3, "int_val", -7), (4, "int_val", 200),
     (9, "int64_val", 2**40), (10, "bool_val", True), (23, "uint64_val", 2**64 - 1),
     (19, "half_val", int(np.float16(1.5).view(np.uint16)))],
)
def test_single_typed_value_broadcasts_like_tensorflow(dtype: int, field: str, value: object) -> None:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=3)
    getattr(proto, field).append(value)
    got = tensor_proto_to_ndarray(proto)
    expected = tf.make_ndarray(proto)
    assert _same(got, expected) and got.shape == (2, 3)
    assert len(np.unique(got)) == 1


def test_short_value_list_pads_with_last_value_and_empty_gives_zeros() -> None:
    proto = tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0])
    proto.tensor_shape.dim.add(size=4)
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), [1.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(tensor_proto_to_ndarray(proto), tf.make_ndarray(proto))
    empty = tensor_pb2.TensorProto(dtype=3)
    empty.tensor_shape.dim.add(size=3)
    assert _same(tensor_proto_to_ndarray(empty), np.zeros(3, np.int32))
    strings = tensor_pb2.TensorProto(dtype=7, string_val=[b"a"])
    strings.tensor_shape.dim.add(size=3)
    assert tensor_proto_to_ndarray(strings).tolist() == [b"a", b"a", b"a"]


def test_fill_in_place() -> None:
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    ndarray_to_tensor_proto(a, out=req.inputs["images"])
    assert req.inputs["images"] == tf.make_tensor_proto(a)
    ndarray_to_tensor_proto(np.array([1], np.int64), out=req.inputs["images"])  # reused: cleared first
    assert _same(tensor_proto_to_ndarray(req.inputs["images"]), np.array([1], np.int64))


def test_non_native_byte_order_is_converted() -> None:
    a = np.arange(4, dtype=">i4")
    proto = ndarray_to_tensor_proto(a)
    assert _same(tensor_proto_to_ndarray(proto), np.arange(4, dtype=np.int32))
    assert proto == tf.make_tensor_proto(np.arange(4, dtype=np.int32))


def test_errors_name_the_dtype_and_field() -> None:
    with pytest.raises(ConversionError, match=r"tensor dtype complex64 is not supported"):
        ndarray_to_tensor_proto(np.zeros(2, np.complex64))
    with pytest.raises(ConversionError, match=r"string tensor elements must be bytes or str, got int"):
        ndarray_to_tensor_proto(np.array([b"a", 3], dtype=object))
    bf16 = tensor_pb2.TensorProto(dtype=14, half_val=[0])
    with pytest.raises(ConversionError, match=r"outputs\['x'\]: dtype DT_BFLOAT16 is not supported"):
        tensor_proto_to_ndarray(bf16, field="outputs['x']")
    bad = tensor_pb2.TensorProto(dtype=1, tensor_content=b"\0" * 10)
    bad.tensor_shape.dim.add(size=3)
    with pytest.raises(ConversionError, match=r"tensor_content has 10 bytes, expected 3 elements"):
        tensor_proto_to_ndarray(bad)
    many = tensor_pb2.TensorProto(dtype=3, int_val=[1, 2, 3])
    many.tensor_shape.dim.add(size=2)
    with pytest.raises(ConversionError, match=r"has 3 values but shape \[2\] holds 2"):
        tensor_proto_to_ndarray(many)
    unknown = tensor_pb2.TensorProto(dtype=1)
    unknown.tensor_shape.dim.add(size=-1)
    with pytest.raises(ConversionError, match="shape must be fully defined"):
        tensor_proto_to_ndarray(unknown)


def test_importing_the_module_does_not_import_tensorflow() -> None:
    code = "import sys, sipec.api.tensors, sipec.api; assert 'tensorflow' not in sys.modules, 'tf imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
