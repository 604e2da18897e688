"""Bad inputs through every RPC of every service (issue #12).

Every RPC of SegNet, PoseNet, IdNet, BehaveNet, Tracker, the orchestrator's Pipeline and the model server
(TF Serving's PredictionService and ModelService) gets: garbage bytes where an image (or mask, or tensor)
goes, the wrong dtype, NaN where floats are read, a giant image beyond the pixel limits (or a giant mask or
tensor), an empty image (0x0, no bytes, nothing set) and the empty request. Each must give the status listed
in `VARIANTS` -- INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a message naming the field, a per-item
`ItemError` in streams (the stream goes on and answers the well-formed request sent after the bad one), or
OK where the input is meaningful (an empty batch) -- never INTERNAL or UNKNOWN; and a well-formed call to the
same server must succeed afterwards.

The servers run in this process (the servicers `sipec serve <module>` runs, on real tiny untrained models, in
real gRPC servers on loopback): one server with the five modules and the Pipeline, and a
`sipec.serving.model_server.ModelServer`. `bad_input_table()` gives the table of docs/reliability.md
("Bad inputs per RPC"); `test_docs_table_is_current` keeps the two equal.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest

from sipec.api.convert import InstanceData, image_to_proto, instance_to_proto
from sipec.v1 import (
    behavenet_pb2,
    common_pb2,
    idnet_pb2,
    orchestrator_pb2,
    posenet_pb2,
    segnet_pb2,
    tracker_pb2,
)
from tests.conftest import ROOT, wait_until
from tests.tiny_models import (
    DEPTH_FRAME,
    export_classifier,
    export_tiny_behavenet,
    export_tiny_depth3d,
    export_tiny_idnet,
    export_tiny_posenet,
    export_tiny_segnet,
)

KINDS = {"garbage": "garbage bytes", "wrong_dtype": "wrong dtype", "nan": "NaN", "giant": "giant",
         "empty_image": "empty image", "empty_request": "empty request"}
H, W = DEPTH_FRAME                       # frames of the tests: 240 x 320
SEGNET_MAX_PIXELS = H * W                # --max-pixels of the SegNet server
PIPELINE_MAX_PIXELS = H * W              # max_pixels of the Pipeline service
BEHAVENET_MAX_CROP_PIXELS = 128 * 128    # --max-crop-pixels of the BehaveNet server
CROP_MAX_PIXELS = 2048 * 2048            # IdNet's and PoseNet's fixed crop limit
GOOD = 99                                # frame index of the well-formed request after the bad ones in a stream
OK = "OK"
INVALID = "INVALID_ARGUMENT"
TOO_LARGE = "RESOURCE_EXHAUSTED"
UNIMPLEMENTED = "UNIMPLEMENTED"
ITEM = "item "                           # prefix: a per-item ItemError, the stream goes on


# ------------------------------------------------------------------------------------------------ inputs
def _rng() -> np.random.Generator:
    return np.random.default_rng(12)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 16


def _raw(data: bytes, height: int, width: int, channels: int) -> common_pb2.Image:
    return common_pb2.Image(raw=common_pb2.RawImage(data=data, height=height, width=width, channels=channels))


def _encoded(data: bytes) -> common_pb2.Image:
    return common_pb2.Image(encoded=common_pb2.EncodedImage(data=data, format="png"))


def _giant_grey(limit: int) -> common_pb2.Image:
    """Real grey pixels, one row more than the limit allows."""
    side = math.isqrt(limit)
    return _raw(bytes((side + 1) * side), side + 1, side, 1)


def bad_images(field: str, limit: int) -> dict[str, list[tuple[str, str, str, common_pb2.Image]]]:
    """kind -> [(label, expected code, field named, Image)] for an image field with a pixel limit."""
    junk = _rng().bytes(64)
    enc, raw = f"{field}.encoded", f"{field}.raw"
    return {
        "garbage": [("64 random bytes", INVALID, enc, _encoded(junk)),
                    ("PNG signature + random bytes", INVALID, enc, _encoded(b"\x89PNG\r\n\x1a\n" + junk)),
                    ("JPEG signature + random bytes", INVALID, enc, _encoded(b"\xff\xd8\xff" + junk))],
        "wrong_dtype": [("uint16 pixels (2 bytes each)", INVALID, raw, _raw(bytes(8 * 8 * 3 * 2), 8, 8, 3)),
                        ("4 channels (RGBA)", INVALID, f"{raw}.channels", _raw(bytes(8 * 8 * 4), 8, 8, 4))],
        "giant": [("real grey pixels beyond the limit", TOO_LARGE, raw, _giant_grey(limit)),
                  ("PNG header claiming 100000x100000", TOO_LARGE, enc, _encoded(_png_header(100000, 100000)))],
        "empty_image": [("raw 0x0", INVALID, raw, _raw(b"", 0, 0, 3)),
                        ("encoded, no bytes", INVALID, enc, _encoded(b"")),
                        ("Image with nothing set", INVALID, field, common_pb2.Image())],
    }


def _image(h: int, w: int, seed: int = 0) -> common_pb2.Image:
    return image_to_proto(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _frame(index: int) -> common_pb2.FrameRef:
    return common_pb2.FrameRef(video="v", index=index)


def _square_mask(x: int = 100, y: int = 80, size: int = 30) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y:y + size, x:x + size] = True
    return m


def _instance(**kw: Any) -> common_pb2.Instance:
    inst = instance_to_proto(InstanceData.from_mask(_square_mask(), 0.9))
    for name, value in kw.items():
        if name == "counts":
            inst.mask.counts = value
        elif name == "mask_size":
            inst.mask.height, inst.mask.width = value
        elif name == "box":
            inst.box.CopyFrom(value)
        elif name == "com":
            inst.com.CopyFrom(value)
    return inst


def _empty_mask_instance() -> common_pb2.Instance:
    return instance_to_proto(InstanceData.from_mask(np.zeros((H, W), bool), 0.9))


NAN = float("nan")
NAN_BOX = common_pb2.Box(x1=NAN, y1=1, x2=5, y2=5)
RAW_RUNS = struct.pack("<4I", 100, 30, 200, H * W - 330)   # run lengths as uint32, not COCO's compressed string
GIANT_MASK = (100_000, 100_000)


# ---------------------------------------------------------------------------------------------- the RPCs
@dataclass(frozen=True)
class Rpc:
    """How to call one RPC, its well-formed request and what a good answer looks like."""

    name: str                          # "SegNet.Segment"
    method: Callable[[Any], Any]       # stubs -> the stub's method
    good: Callable[[], Any]            # a well-formed request (unary) or request list (stream)
    check: Callable[[Any], bool]       # unary: the answer to `good` is right; stream: this response is GOOD's
    streaming: bool = False
    errors: Callable[[Any], list] = lambda r: []   # stream: item errors of one response


def _seg_req(image: common_pb2.Image, index: int = 0, **kw: Any) -> segnet_pb2.SegmentRequest:
    return segnet_pb2.SegmentRequest(image=image, frame=_frame(index), **kw)


def _pose_req(image: common_pb2.Image, index: int = 0, **kw: Any) -> posenet_pb2.PoseRequest:
    return posenet_pb2.PoseRequest(frame=_frame(index), crops=[posenet_pb2.PoseCrop(crop=image, key="a")], **kw)


def _id_req(image: common_pb2.Image) -> idnet_pb2.IdentifyRequest:
    good = _image(32, 32)
    return idnet_pb2.IdentifyRequest(sequences=[idnet_pb2.CropSequence(crops=[good, image, good], key="s")])


def _id_stream(image: common_pb2.Image, index: int = 0, track: int = 1) -> idnet_pb2.IdentifyStreamRequest:
    return idnet_pb2.IdentifyStreamRequest(frame=_frame(index), track_id=track, crop=image)


def _bn_req(image: common_pb2.Image) -> behavenet_pb2.ClassifyRequest:
    good = _image(64, 64)
    return behavenet_pb2.ClassifyRequest(window=[good, image, good], key="w")


def _bn_stream(image: common_pb2.Image, index: int = 0, subject: str = "1") -> behavenet_pb2.BehaviourFrame:
    return behavenet_pb2.BehaviourFrame(frame=_frame(index), subject=subject, crop=image)


def _track_req(index: int = 0, instances: list | None = None, **kw: Any) -> tracker_pb2.TrackRequest:
    return tracker_pb2.TrackRequest(frame=_frame(index), instances=instances or [], **kw)


def _analyze_req(image: common_pb2.Image, index: int = 0) -> orchestrator_pb2.AnalyzeRequest:
    return orchestrator_pb2.AnalyzeRequest(frame=_frame(index), image=image)


def _tensor(dtype: int, shape: list[int], **fields: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2

    t = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for s in shape:
        t.tensor_shape.dim.add(size=s)
    return t


def _predict(model: str = "tiny", **inputs: Any) -> Any:
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for name, tensor in inputs.items():
        req.inputs[name].CopyFrom(tensor)
    return req


def _good_predict() -> Any:
    from sipec.api.tensors import ndarray_to_tensor_proto

    return _predict(image=ndarray_to_tensor_proto(np.zeros((1, 16, 16, 3), np.uint8)))


def _metadata_req(name: str = "tiny", fields: tuple[str, ...] = ("signature_def",)) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2

    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    req.model_spec.name = name
    return req


def _status_req(name: str = "tiny") -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = name
    return req


def _has(resp: Any, field: str) -> bool:
    return resp.HasField(field)


RPCS: dict[str, Rpc] = {r.name: r for r in [
    Rpc("SegNet.Segment", lambda s: s.segnet.Segment, lambda: _seg_req(_image(H, W)),
        lambda r: r.model_version == 1 and not _has(r, "error")),
    Rpc("SegNet.SegmentStream", lambda s: s.segnet.SegmentStream, lambda: [_seg_req(_image(H, W), GOOD)],
        lambda r: r.frame.index == GOOD and not _has(r, "error") and r.model_version == 1, streaming=True,
        errors=lambda r: [r.error] if _has(r, "error") else []),
    Rpc("SegNet.GetModelInfo", lambda s: s.segnet.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "segnet"),
    Rpc("PoseNet.EstimatePose", lambda s: s.posenet.EstimatePose, lambda: _pose_req(_image(64, 64)),
        lambda r: len(r.poses) == 1 and len(r.poses[0].keypoints) == 4),
    Rpc("PoseNet.EstimatePoseStream", lambda s: s.posenet.EstimatePoseStream, lambda: [_pose_req(_image(64, 64), GOOD)],
        lambda r: r.frame.index == GOOD and len(r.poses) == 1 and len(r.poses[0].keypoints) == 4, streaming=True,
        errors=lambda r: [p.error for p in r.poses if _has(p, "error")]),
    Rpc("PoseNet.GetModelInfo", lambda s: s.posenet.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "posenet"),
    Rpc("IdNet.Identify", lambda s: s.idnet.Identify, lambda: _id_req(_image(32, 32)),
        lambda r: len(r.results) == 1 and r.results[0].identity != ""),
    Rpc("IdNet.IdentifyStream", lambda s: s.idnet.IdentifyStream, lambda: [_id_stream(_image(32, 32), GOOD, 2)],
        lambda r: r.frame.index == GOOD and r.result.identity != "", streaming=True,
        errors=lambda r: [r.result.error] if _has(r.result, "error") else []),
    Rpc("IdNet.GetModelInfo", lambda s: s.idnet.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "idnet"),
    Rpc("BehaveNet.Classify", lambda s: s.behavenet.Classify, lambda: _bn_req(_image(64, 64)),
        lambda r: r.behaviour != "" and len(r.behaviours.values) == 3),
    Rpc("BehaveNet.ClassifyStream", lambda s: s.behavenet.ClassifyStream,
        lambda: [_bn_stream(_image(64, 64), GOOD, "2")],
        lambda r: r.frame.index == GOOD and r.behaviour != "", streaming=True,
        errors=lambda r: [r.error] if _has(r, "error") else []),
    Rpc("BehaveNet.GetModelInfo", lambda s: s.behavenet.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "behavenet"),
    Rpc("Tracker.Track", lambda s: s.tracker.Track, lambda: [_track_req(GOOD, [_instance()])],
        lambda r: r.frame.index == GOOD and len(r.instances) == 1 and r.instances[0].track_id >= 1, streaming=True,
        errors=lambda r: [r.error] if _has(r, "error") else []),
    Rpc("Tracker.Estimate3D", lambda s: s.tracker.Estimate3D,
        lambda: tracker_pb2.Estimate3DRequest(instances=[_instance()]),
        lambda r: len(r.positions) == 1 and all(map(math.isfinite, (r.positions[0].x, r.positions[0].z)))),
    Rpc("Tracker.GetModelInfo", lambda s: s.tracker.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "tracker" and r.version == 1),
    Rpc("Pipeline.AnalyzeStream", lambda s: s.pipeline.AnalyzeStream, lambda: [_analyze_req(_image(H, W), GOOD)],
        lambda r: r.frame.index == GOOD and not _has(r, "error"), streaming=True,
        errors=lambda r: [r.error] if _has(r, "error") else []),
    Rpc("Pipeline.GetModelInfo", lambda s: s.pipeline.GetModelInfo, common_pb2.GetModelInfoRequest,
        lambda r: r.module == "orchestrator"),
    Rpc("PredictionService.Predict", lambda s: s.prediction.Predict, _good_predict,
        lambda r: r.outputs["probs"].tensor_shape.dim[1].size == 3),
    Rpc("PredictionService.GetModelMetadata", lambda s: s.prediction.GetModelMetadata, _metadata_req,
        lambda r: r.model_spec.name == "tiny"),
    # TF Serving's other RPCs, which the model server does not implement; the good call is a Predict
    Rpc("PredictionService.Classify", lambda s: s.prediction.Classify, _good_predict, lambda r: True),
    Rpc("PredictionService.Regress", lambda s: s.prediction.Regress, _good_predict, lambda r: True),
    Rpc("PredictionService.MultiInference", lambda s: s.prediction.MultiInference, _good_predict, lambda r: True),
    Rpc("ModelService.GetModelStatus", lambda s: s.model.GetModelStatus, _status_req,
        lambda r: len(r.model_version_status) == 1),
    Rpc("ModelService.HandleReloadConfigRequest", lambda s: s.model.HandleReloadConfigRequest, _status_req,
        lambda r: True),
]}
GOOD_CALL = {"PredictionService.Classify": "PredictionService.Predict",
             "PredictionService.Regress": "PredictionService.Predict",
             "PredictionService.MultiInference": "PredictionService.Predict",
             "ModelService.HandleReloadConfigRequest": "ModelService.GetModelStatus"}


# --------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One bad input sent to one RPC and what must come back."""

    rpc: str
    kind: str            # a key of KINDS
    label: str           # what was sent
    expect: str          # status code name; "item CODE": a per-item error, the stream goes on
    field: str           # the status message / item error names this ("" for OK)
    build: Callable[[], Any]   # the request (unary) or the bad requests of a stream (sent before the good one)

    @property
    def id(self) -> str:
        return f"{self.rpc}-{self.kind}-{self.label}"


def _image_variants(rpc: str, field: str, limit: int, wrap: Callable[[common_pb2.Image], Any],
                    stream: bool) -> list[Variant]:
    out = []
    for kind, items in bad_images(field, limit).items():
        for label, code, named, image in items:
            out.append(Variant(rpc, kind, label, ITEM + code if stream else code, named,
                               (lambda im=image: [wrap(im)]) if stream else (lambda im=image: wrap(im))))
    return out


def _variants() -> list[Variant]:
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        model_management_pb2,
        predict_pb2,
        regression_pb2,
    )

    from sipec.api.tensors import DT_FLOAT, DT_STRING, DT_UINT8, ndarray_to_tensor_proto

    DT_BFLOAT16 = 14   # noqa: N806 - a TensorFlow DataType the model server does not support

    v: list[Variant] = []
    add = v.append
    # ---- SegNet
    v += _image_variants("SegNet.Segment", "image", SEGNET_MAX_PIXELS, _seg_req, stream=False)
    add(Variant("SegNet.Segment", "nan", "min_score NaN", INVALID, "min_score",
                lambda: _seg_req(_image(H, W), min_score=NAN)))
    add(Variant("SegNet.Segment", "empty_request", "SegmentRequest()", INVALID, "image", segnet_pb2.SegmentRequest))
    v += _image_variants("SegNet.SegmentStream", "image", SEGNET_MAX_PIXELS, _seg_req, stream=True)
    add(Variant("SegNet.SegmentStream", "nan", "min_score NaN", ITEM + INVALID, "min_score",
                lambda: [_seg_req(_image(H, W), min_score=NAN)]))
    add(Variant("SegNet.SegmentStream", "empty_request", "SegmentRequest()", ITEM + INVALID, "image",
                lambda: [segnet_pb2.SegmentRequest()]))
    # ---- PoseNet
    for rpc, stream in (("PoseNet.EstimatePose", False), ("PoseNet.EstimatePoseStream", True)):
        v += _image_variants(rpc, "crops[0].crop", CROP_MAX_PIXELS, _pose_req, stream)
        code = ITEM + INVALID if stream else INVALID
        for label, field, build in (
                ("min_confidence NaN", "min_confidence", lambda: _pose_req(_image(64, 64), min_confidence=NAN)),
                ("crops[0].scale NaN", "crops[0].scale", lambda: _with_crop(scale=NAN)),
                ("crops[0].origin NaN", "crops[0].origin", lambda: _with_crop(origin=common_pb2.Point(x=NAN, y=1)))):
            add(Variant(rpc, "nan", label, code, field, (lambda b=build: [b()]) if stream else build))
        # no crops: an empty batch gets an empty answer
        add(Variant(rpc, "empty_request", "PoseRequest() (no crops)", OK, "",
                    (lambda: [posenet_pb2.PoseRequest()]) if stream else posenet_pb2.PoseRequest))
    # ---- IdNet
    v += _image_variants("IdNet.Identify", "sequences[0].crops[1]", CROP_MAX_PIXELS, _id_req, stream=False)
    add(Variant("IdNet.Identify", "empty_request", "IdentifyRequest()", INVALID, "sequences",
                idnet_pb2.IdentifyRequest))
    v += _image_variants("IdNet.IdentifyStream", "crop", CROP_MAX_PIXELS, _id_stream, stream=True)
    add(Variant("IdNet.IdentifyStream", "empty_request", "IdentifyStreamRequest()", ITEM + INVALID, "crop",
                lambda: [idnet_pb2.IdentifyStreamRequest()]))
    # ---- BehaveNet
    v += _image_variants("BehaveNet.Classify", "window[1]", BEHAVENET_MAX_CROP_PIXELS, _bn_req, stream=False)
    add(Variant("BehaveNet.Classify", "empty_request", "ClassifyRequest()", INVALID, "window",
                behavenet_pb2.ClassifyRequest))
    v += _image_variants("BehaveNet.ClassifyStream", "crop", BEHAVENET_MAX_CROP_PIXELS, _bn_stream, stream=True)
    add(Variant("BehaveNet.ClassifyStream", "empty_request", "BehaviourFrame()", ITEM + INVALID, "subject",
                lambda: [behavenet_pb2.BehaviourFrame()]))
    # ---- Tracker.Track (masks instead of images)
    t = "Tracker.Track"
    add(Variant(t, "garbage", "mask counts of random bytes", ITEM + INVALID, "instances[0].mask.counts",
                lambda: [_track_req(0, [_instance(counts=_rng().bytes(40))])]))
    add(Variant(t, "wrong_dtype", "mask counts as uint32 run lengths", ITEM + INVALID, "instances[0].mask.counts",
                lambda: [_track_req(0, [_instance(counts=RAW_RUNS)])]))
    add(Variant(t, "nan", "instances[0].box NaN", ITEM + INVALID, "instances[0].box",
                lambda: [_track_req(0, [_instance(box=NAN_BOX)])]))
    add(Variant(t, "nan", "identities[0].values NaN", ITEM + INVALID, "identities[0]",
                lambda: [_track_req(0, [_instance()], identities=[common_pb2.Probabilities(names=["a", "b"],
                                                                                            values=[NAN, 0.5])])]))
    add(Variant(t, "nan", "options.min_iou NaN (first message: ends the stream)", INVALID, "options.min_iou",
                lambda: [_track_req(0, [_instance()], options=tracker_pb2.TrackerOptions(min_iou=NAN))]))
    add(Variant(t, "nan", "instances[0].com NaN (the mask's own centre is used)", OK, "",
                lambda: [_track_req(0, [_instance(com=common_pb2.Point(x=NAN, y=NAN))])]))
    add(Variant(t, "giant", "mask of 100000x100000 in a few bytes", ITEM + TOO_LARGE, "instances[0].mask",
                lambda: [_track_req(0, [_instance(mask_size=GIANT_MASK)])]))
    add(Variant(t, "giant", "300 instances (limit 256)", ITEM + TOO_LARGE, "instances",
                lambda: [_track_req(0, [_instance()] * 300)]))
    add(Variant(t, "giant", "options.matching of 100000 characters (first message: ends the stream)", INVALID,
                "options.matching",
                lambda: [_track_req(0, options=tracker_pb2.TrackerOptions(matching="x" * 100_000))]))
    add(Variant(t, "empty_image", "mask 0x0", ITEM + INVALID, "instances[0].mask",
                lambda: [_track_req(0, [_instance(mask_size=(0, 0))])]))
    add(Variant(t, "empty_image", "mask with no pixels set", ITEM + INVALID, "instances[0].mask",
                lambda: [_track_req(0, [_empty_mask_instance()])]))
    add(Variant(t, "empty_request", "TrackRequest() (a frame without animals)", OK, "",
                lambda: [tracker_pb2.TrackRequest()]))
    # ---- Tracker.Estimate3D
    e = "Tracker.Estimate3D"

    def est(*instances: common_pb2.Instance) -> Callable[[], Any]:
        return lambda: tracker_pb2.Estimate3DRequest(instances=list(instances))

    add(Variant(e, "garbage", "mask counts of random bytes", INVALID, "instances[0].mask.counts",
                est(_instance(counts=_rng().bytes(40)))))
    add(Variant(e, "wrong_dtype", "mask counts as uint32 run lengths", INVALID, "instances[0].mask.counts",
                est(_instance(counts=RAW_RUNS))))
    add(Variant(e, "nan", "instances[0].box NaN", INVALID, "instances[0].box", est(_instance(box=NAN_BOX))))
    add(Variant(e, "nan", "instances[0].com NaN (the mask's own centre is used)", OK, "",
                est(_instance(com=common_pb2.Point(x=NAN, y=NAN)))))
    add(Variant(e, "giant", "mask of 100000x100000 in a few bytes", TOO_LARGE, "instances[0].mask",
                est(_instance(mask_size=GIANT_MASK))))
    add(Variant(e, "giant", "2000 instances (limit 1024)", TOO_LARGE, "instances", est(*[_instance()] * 2000)))
    add(Variant(e, "empty_image", "mask 0x0", INVALID, "instances[0].mask", est(_instance(mask_size=(0, 0)))))
    add(Variant(e, "empty_image", "mask with no pixels set", INVALID, "instances[0].mask",
                est(_empty_mask_instance())))
    add(Variant(e, "empty_request", "Estimate3DRequest() (no instances)", OK, "", tracker_pb2.Estimate3DRequest))
    # ---- GetModelInfo of every module and of the Pipeline: the empty request is their only request
    for service in ("SegNet", "PoseNet", "IdNet", "BehaveNet", "Tracker", "Pipeline"):
        add(Variant(f"{service}.GetModelInfo", "empty_request", "GetModelInfoRequest()", OK, "",
                    common_pb2.GetModelInfoRequest))
    # ---- Pipeline.AnalyzeStream
    v += _image_variants("Pipeline.AnalyzeStream", "image", PIPELINE_MAX_PIXELS, _analyze_req, stream=True)
    add(Variant("Pipeline.AnalyzeStream", "empty_request", "AnalyzeRequest()", ITEM + INVALID, "image",
                lambda: [orchestrator_pb2.AnalyzeRequest()]))
    # ---- the model server
    p = "PredictionService.Predict"
    shape = [1, 16, 16, 3]
    add(Variant(p, "garbage", "tensor_content of 37 random bytes", INVALID, "input 'image'",
                lambda: _predict(image=_tensor(DT_UINT8, shape, tensor_content=_rng().bytes(37)))))
    add(Variant(p, "garbage", "an input name the model does not have", INVALID, "'no_such_input'",
                lambda: _predict(no_such_input=ndarray_to_tensor_proto(np.zeros(shape, np.uint8)))))
    add(Variant(p, "garbage", "model name of control characters", INVALID, "model name",
                lambda: _predict("\x00\x01\x7f", image=ndarray_to_tensor_proto(np.zeros(shape, np.uint8)))))
    add(Variant(p, "wrong_dtype", "float32 for a uint8 input", INVALID, "input 'image'",
                lambda: _predict(image=ndarray_to_tensor_proto(np.zeros(shape, np.float32)))))
    add(Variant(p, "wrong_dtype", "string tensor", INVALID, "input 'image'",
                lambda: _predict(image=_tensor(DT_STRING, shape, string_val=[b"x"]))))
    add(Variant(p, "wrong_dtype", "DT_BFLOAT16 (not supported)", INVALID, "input 'image'",
                lambda: _predict(image=_tensor(DT_BFLOAT16, shape, half_val=[0]))))
    add(Variant(p, "nan", "NaN features to the float32 depth model (passed on, as TF Serving does)", OK, "",
                lambda: _predict("depth3d", features=ndarray_to_tensor_proto(np.full((2, 3), NAN, np.float32)))))
    add(Variant(p, "giant", "shape 1x100000x100000x3 from one value", TOO_LARGE, "input 'image'",
                lambda: _predict(image=_tensor(DT_UINT8, [1, 100_000, 100_000, 3], int_val=[7]))))
    add(Variant(p, "giant", "shape 2^40 x 2^40 (overflows int64)", TOO_LARGE, "input 'image'",
                lambda: _predict(image=_tensor(DT_UINT8, [2**40, 2**40], int_val=[7]))))
    add(Variant(p, "giant", "a dimension of 2^63-1 with 0 in another", TOO_LARGE, "input 'image'",
                lambda: _predict(image=_tensor(DT_FLOAT, [0, 2**63 - 1]))))
    add(Variant(p, "empty_image", "shape 1x0x0x3", INVALID, "input 'image'",
                lambda: _predict(image=ndarray_to_tensor_proto(np.zeros((1, 0, 0, 3), np.uint8)))))
    add(Variant(p, "empty_image", "shape 0x16x16x3 (an empty batch)", INVALID, "input 'image'",
                lambda: _predict(image=ndarray_to_tensor_proto(np.zeros((0, 16, 16, 3), np.uint8)))))
    add(Variant(p, "empty_request", "PredictRequest()", INVALID, "model name", predict_pb2.PredictRequest))
    m = "PredictionService.GetModelMetadata"
    add(Variant(m, "garbage", "model name ../../etc", INVALID, "model name", lambda: _metadata_req("../../etc")))
    add(Variant(m, "garbage", "metadata_field ['nonsense']", INVALID, "metadata_field",
                lambda: _metadata_req(fields=("nonsense",))))
    add(Variant(m, "giant", "model name of 100000 characters", INVALID, "model name",
                lambda: _metadata_req("x" * 100_000)))
    add(Variant(m, "empty_request", "GetModelMetadataRequest()", INVALID, "model name",
                lambda: _metadata_req("", ())))
    s = "ModelService.GetModelStatus"
    add(Variant(s, "garbage", "model name a/b", INVALID, "model name", lambda: _status_req("a/b")))
    add(Variant(s, "giant", "model name of 100000 characters", INVALID, "model name",
                lambda: _status_req("x" * 100_000)))
    add(Variant(s, "empty_request", "GetModelStatusRequest()", INVALID, "model name", lambda: _status_req("")))
    for rpc, build in (("PredictionService.Classify", classification_pb2.ClassificationRequest),
                       ("PredictionService.Regress", regression_pb2.RegressionRequest),
                       ("PredictionService.MultiInference", inference_pb2.MultiInferenceRequest),
                       ("ModelService.HandleReloadConfigRequest", model_management_pb2.ReloadConfigRequest)):
        add(Variant(rpc, "empty_request", "the empty request (not implemented)", UNIMPLEMENTED, "", build))
    return v


def _with_crop(**kw: Any) -> posenet_pb2.PoseRequest:
    req = _pose_req(_image(64, 64))
    for name, value in kw.items():
        if name == "origin":
            req.crops[0].origin.CopyFrom(value)
        else:
            setattr(req.crops[0], name, value)
    return req


VARIANTS = _variants()


# --------------------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from orchestrator.config import PipelineConfig
    from orchestrator.pipeline import ModuleSet
    from orchestrator.service import PipelineService
    from services.behavenet.service import BehaveNetBackends, BehaveNetService
    from services.idnet.service import IdNetServicer
    from services.posenet.service import PoseNetServicer
    from services.segnet.service import SegNetServicer
    from services.tracker.service import TrackerService
    from sipec.serving.backends import LocalBackend
    from sipec.serving.client import make_channel
    from sipec.serving.model_server import ModelServer
    from sipec.serving.runtime import ServerConfig, ServiceRuntime
    from sipec.serving.stubs import in_process_stub
    from sipec.v1 import (
        behavenet_pb2_grpc,
        idnet_pb2_grpc,
        orchestrator_pb2_grpc,
        posenet_pb2_grpc,
        segnet_pb2_grpc,
        tracker_pb2_grpc,
    )

    repo = tmp_path_factory.mktemp("bad-inputs-repo")
    for export in (export_tiny_segnet, export_tiny_posenet, export_tiny_idnet, export_tiny_behavenet,
                   export_tiny_depth3d):
        export(repo)
    export_classifier(repo, "tiny")

    def local(name: str) -> LocalBackend:
        return LocalBackend(repo, name, poll_s=0)

    runtime = ServiceRuntime("bad-inputs", ServerConfig(port=0, host="127.0.0.1", grace_s=0))
    servicers = {
        "segnet": SegNetServicer(local("segnet"), runtime, max_batch=4, max_pixels=SEGNET_MAX_PIXELS),
        "posenet": PoseNetServicer(local("posenet"), runtime, max_batch=4),
        "idnet": IdNetServicer(local("idnet"), runtime),
        "behavenet": BehaveNetService(BehaveNetBackends(local("behavenet"), local("behavenet-features")), runtime,
                                      max_crop_pixels=BEHAVENET_MAX_CROP_PIXELS),
        "tracker": TrackerService(local("depth3d"), runtime),
    }
    for s in servicers.values():
        assert wait_until(s.backend.ready, timeout_s=60), s.module
    for name, add in (("segnet", segnet_pb2_grpc.add_SegNetServicer_to_server),
                      ("posenet", posenet_pb2_grpc.add_PoseNetServicer_to_server),
                      ("idnet", idnet_pb2_grpc.add_IdNetServicer_to_server),
                      ("behavenet", behavenet_pb2_grpc.add_BehaveNetServicer_to_server),
                      ("tracker", tracker_pb2_grpc.add_TrackerServicer_to_server)):
        runtime.add_service(add, servicers[name], servicers[name].service_name)
    modules = ModuleSet({m: in_process_stub(m, servicers[m]) for m in ("segnet", "tracker")})
    pipeline = PipelineService(modules, PipelineConfig(modules=("segnet", "tracker"), min_score=0.05),
                               max_pixels=PIPELINE_MAX_PIXELS)
    runtime.add_service(orchestrator_pb2_grpc.add_PipelineServicer_to_server, pipeline, "sipec.v1.Pipeline")
    runtime.start()
    model_server = ModelServer(repo, ServerConfig(port=0, host="127.0.0.1", grace_s=0), names=["tiny", "depth3d"],
                               poll_s=0.5)
    ms_port = model_server.start()
    assert wait_until(model_server.manager.ready, timeout_s=60)
    channel = make_channel(f"127.0.0.1:{runtime.port}")
    ms_channel = make_channel(f"127.0.0.1:{ms_port}")
    yield SimpleNamespace(
        segnet=segnet_pb2_grpc.SegNetStub(channel), posenet=posenet_pb2_grpc.PoseNetStub(channel),
        idnet=idnet_pb2_grpc.IdNetStub(channel), behavenet=behavenet_pb2_grpc.BehaveNetStub(channel),
        tracker=tracker_pb2_grpc.TrackerStub(channel), pipeline=orchestrator_pb2_grpc.PipelineStub(channel),
        prediction=prediction_service_pb2_grpc.PredictionServiceStub(ms_channel),
        model=model_service_pb2_grpc.ModelServiceStub(ms_channel))
    channel.close()
    ms_channel.close()
    runtime.stop(0)
    model_server.stop(0)
    for s in servicers.values():
        s.close()


# ----------------------------------------------------------------------------------------------- tests
def _code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), f"code {code}")


def _call(stubs: Any, rpc: Rpc, request: Any) -> Any:
    method = rpc.method(stubs)
    if rpc.streaming:
        return list(method(iter(request), timeout=120))
    return method(request, timeout=120)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(stubs, variant: Variant) -> None:
    rpc = RPCS[variant.rpc]
    item = variant.expect.startswith(ITEM)
    want = variant.expect.removeprefix(ITEM)
    request = variant.build()
    if rpc.streaming and variant.expect != want or rpc.streaming and want == OK:
        request = [*request, *rpc.good()]           # the stream must go on after the bad request
    try:
        got = _call(stubs, rpc, request)
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        assert not item and exc.code().name == want, f"{exc.code().name}: {exc.details()}"
        assert variant.field in exc.details(), f"the message names {variant.field!r}: {exc.details()}"
    else:
        assert want == OK or item, f"expected {want}, the call succeeded"
        if rpc.streaming:
            errors = [e for r in got for e in rpc.errors(r)]
            assert all(_code_name(e.code) not in ("INTERNAL", "UNKNOWN") for e in errors), errors
            if item:
                assert errors and all(_code_name(e.code) == want for e in errors), errors
                assert all(variant.field in e.message for e in errors), errors
            else:
                assert not errors, errors
            assert sum(rpc.check(r) for r in got) == 1, f"the well-formed request after it was answered: {got}"
    # the same server answers a well-formed call afterwards
    good = RPCS[GOOD_CALL.get(rpc.name, rpc.name)]
    answer = _call(stubs, good, good.good())
    if good.streaming:
        assert sum(good.check(r) for r in answer) == 1, answer
    else:
        assert good.check(answer), answer


def test_every_rpc_of_every_service_is_tried() -> None:
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    from sipec.v1 import behavenet_pb2, idnet_pb2, orchestrator_pb2, posenet_pb2, segnet_pb2, tracker_pb2

    defined = {f"{s.name}.{m.name}" for mod in (segnet_pb2, posenet_pb2, idnet_pb2, behavenet_pb2, tracker_pb2,
                                                 orchestrator_pb2)
               for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
    defined |= {f"{s.name}.{m.name}" for mod in (prediction_service_pb2, model_service_pb2)
                for s in mod.DESCRIPTOR.services_by_name.values() for m in s.methods}
    tried = {v.rpc for v in VARIANTS}
    assert defined == tried == set(RPCS)
    image_rpcs = ["SegNet.Segment", "SegNet.SegmentStream", "PoseNet.EstimatePose", "PoseNet.EstimatePoseStream",
                  "IdNet.Identify", "IdNet.IdentifyStream", "BehaveNet.Classify", "BehaveNet.ClassifyStream",
                  "Pipeline.AnalyzeStream"]
    for rpc in image_rpcs:
        kinds = {v.kind for v in VARIANTS if v.rpc == rpc}
        assert kinds >= {"garbage", "wrong_dtype", "giant", "empty_image", "empty_request"}, rpc


def bad_input_table() -> str:
    """The markdown table of docs/reliability.md: per RPC, how many inputs of each kind and what came back."""
    lines = ["| RPC | " + " | ".join(KINDS.values()) + " | inputs |", "|---|" + "---|" * (len(KINDS) + 1)]
    for rpc in RPCS:
        cells = []
        for kind in KINDS:
            got = Counter(v.expect for v in VARIANTS if v.rpc == rpc and v.kind == kind)
            cells.append(", ".join(f"{code}" + (f" x{n}" if n > 1 else "") for code, n in got.items()) or "-")
        total = sum(1 for v in VARIANTS if v.rpc == rpc)
        lines.append(f"| `{rpc}` | " + " | ".join(cells) + f" | {total} |")
    lines.append(f"| all {len(RPCS)} RPCs | " + " | ".join(
        str(sum(1 for v in VARIANTS if v.kind == k)) for k in KINDS) + f" | {len(VARIANTS)} |")
    return "\n".join(lines)


def test_docs_table_is_current() -> None:
    doc = Path(ROOT / "docs" / "reliability.md").read_text()
    assert bad_input_table() in doc, "docs/reliability.md: paste in the output of\n" + bad_input_table()


if __name__ == "__main__":   # python -m tests.integration.test_bad_inputs: print the docs table
    print(bad_input_table())
