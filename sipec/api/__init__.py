"""numpy <-> proto conversions for the SIPEC contract.

The generated gRPC stubs live in :mod:`sipec.v1` (``make protos``). This package converts
between them and the numpy conventions of :mod:`sipec.geometry`:

- :mod:`sipec.api.convert`: images, COCO RLE masks, boxes, points, keypoints, probabilities,
  instances, frame references and per-item errors;
- :mod:`sipec.api.tensors`: numpy <-> ``tensorflow.TensorProto`` for TF Serving (imports
  TensorFlow only when a ``TensorProto`` is created).
"""

from sipec.api.convert import (
    ConversionError,
    FrameRefData,
    InstanceData,
    TooLargeError,
    box_from_proto,
    box_to_proto,
    encoded_image_size,
    frame_ref_from_proto,
    frame_ref_to_proto,
    image_from_proto,
    image_size,
    image_to_proto,
    instance_from_proto,
    instance_to_proto,
    item_error,
    item_error_code,
    item_error_from_exception,
    keypoints_from_proto,
    keypoints_to_proto,
    mask_from_proto,
    mask_to_proto,
    point_from_proto,
    point_to_proto,
    probabilities_from_proto,
    probabilities_to_proto,
    rle_counts_to_runs,
    rle_from_proto,
    rle_to_proto,
)
from sipec.api.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

__all__ = [
    "ConversionError",
    "FrameRefData",
    "InstanceData",
    "TooLargeError",
    "box_from_proto",
    "box_to_proto",
    "encoded_image_size",
    "frame_ref_from_proto",
    "frame_ref_to_proto",
    "image_from_proto",
    "image_size",
    "image_to_proto",
    "instance_from_proto",
    "instance_to_proto",
    "item_error",
    "item_error_code",
    "item_error_from_exception",
    "keypoints_from_proto",
    "keypoints_to_proto",
    "mask_from_proto",
    "mask_to_proto",
    "ndarray_to_tensor_proto",
    "point_from_proto",
    "point_to_proto",
    "probabilities_from_proto",
    "probabilities_to_proto",
    "rle_counts_to_runs",
    "rle_from_proto",
    "rle_to_proto",
    "tensor_proto_to_ndarray",
]
