"""Identities from a trained IdNet for `sipec evaluate tracker --idnet-repo`: the IdNet service, in-process.

The tracker's own tracks go to IdNet as the orchestrator sends them (orchestrator/pipeline.py `_send_crops`):
per frame, one crop per tracked instance of the model metadata's ``masking.crop_px`` source pixels around the
mask's centre of mass (`sipec.geometry.crop_around`), its mask cut the same way, and ``end_of_track`` for a track
that is not in the frame any more. The requests go through `IdNetServicer.IdentifyStream` (via the in-process
stub the orchestrator uses for ``sipec analyze --models``), which answers each crop once its future context has
arrived. The probabilities then go, with the tracks preset, through a second `StreamTracker` pass that smooths
them along each track and assigns identities, as the orchestrator's second tracker stream does (`_smooth`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from services.tracker.data import GroundTruth, TrackedInstance
from services.tracker.options import TrackerLimits, TrackerOptions
from services.tracker.tracker import StreamTracker
from sipec.data.frames import read_frames
from sipec.video import VIDEO_SUFFIXES

log = logging.getLogger("sipec.tracker")


@dataclass
class IdNetModel:
    """The IdNet service of a model repository, opened in this process."""

    repo: Path
    name: str
    servicer: Any
    stub: Any
    names: list[str]
    t: int
    crop_px: int
    version: int

    def close(self) -> None:
        self.servicer.close()


def open_idnet(repo: str | Path, model_name: str) -> IdNetModel:
    """The servicer of `sipec serve idnet` on `repo`/`model_name`; ValueError naming the path otherwise."""
    from sipec.serving.errors import ServingError
    from sipec.serving.stubs import open_in_process

    repo = Path(repo)
    if not repo.is_dir():
        raise ValueError(f"{repo}: model repository not found (a folder of MODEL/VERSION/saved_model.pb, "
                         "as `sipec train idnet --out` writes it)")
    servicer, stub = open_in_process("idnet", repo, model_name)
    try:
        served = servicer.served()
    except ServingError as exc:
        servicer.close()
        raise ValueError(f"{repo}: no usable IdNet model {model_name!r}: {exc}") from None
    return IdNetModel(repo, model_name, servicer, stub, served.names, served.t,
                      served.settings.crop_px, served.version)


def frame_images(gt_path: str | Path, frames: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB image) of the ground truth's `frames` (increasing), read in order from its video.

    The sleap-flies-clip folder (clip.slp + its video), or a COCO annotations file (or its folder) whose
    images name a video (``video`` or ``file_name``, beside the file) or image files.
    """
    path = Path(gt_path)
    wanted = sorted(set(int(f) for f in frames))
    if not wanted:
        return
    if path.is_dir() and (path / "clip.slp").is_file():
        from sipec.data.flies import FliesClip

        clip = FliesClip(path)
        try:
            for f in wanted:
                yield f, clip.frame(f)
        finally:
            clip.close()
        return
    from sipec.data.coco import read_coco_instances

    ann = path / "annotations.json" if path.is_dir() else path
    coco = read_coco_instances(ann)
    by_frame = {int(im.get("frame_index", i)): im for i, im in enumerate(coco.images)}
    missing = [f for f in wanted if f not in by_frame]
    if missing:
        raise ValueError(f"{ann}: no image for frame(s) {missing[:5]}")
    files = {str(by_frame[f].get("video") or by_frame[f].get("file_name") or "") for f in wanted}
    if len(files) == 1 and Path(next(iter(files))).suffix.lower() in VIDEO_SUFFIXES:
        yield from read_frames(ann.parent / next(iter(files)), wanted, what="the ground truth")
        return
    for f in wanted:
        name = by_frame[f].get("file_name")
        bgr = cv2.imread(str(ann.parent / name)) if name else None
        if bgr is None:
            raise ValueError(f"{ann}: cannot read the image of frame {f} ({ann.parent / str(name)})")
        yield f, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class IdNetOutput:
    probabilities: dict[tuple[int, int], np.ndarray]   # (frame, track id) -> probabilities over `names`
    names: list[str]
    crops: int                                          # crops sent
    errors: list[str]                                   # per-item errors the service answered


def identify_tracks(model: IdNetModel, tracked: Sequence[TrackedInstance],
                    images: Iterator[tuple[int, np.ndarray]]) -> IdNetOutput:
    """IdNet's probabilities for every tracked instance, through IdentifyStream (crops cut as the orchestrator)."""
    from sipec.api.convert import image_to_proto, mask_to_proto, probabilities_from_proto
    from sipec.geometry import crop_around
    from sipec.v1 import common_pb2, idnet_pb2

    by_frame: dict[int, list[TrackedInstance]] = defaultdict(list)
    for t in tracked:
        by_frame[t.frame].append(t)
    size = model.crop_px
    sent = 0

    def requests() -> Iterator[Any]:
        nonlocal sent
        prev: set[int] = set()
        for frame, image in images:
            ref = common_pb2.FrameRef(index=frame)
            here = sorted(by_frame.get(frame, []), key=lambda t: t.track_id)
            for t in here:
                com = t.detection.com
                mask = crop_around(t.detection.mask().astype(np.uint8), com, size).astype(bool)
                sent += 1
                yield idnet_pb2.IdentifyStreamRequest(frame=ref, track_id=t.track_id,
                                                      crop=image_to_proto(crop_around(image, com, size)),
                                                      mask=mask_to_proto(mask))
            now = {t.track_id for t in here}
            for gone in sorted(prev - now):
                yield idnet_pb2.IdentifyStreamRequest(frame=ref, track_id=gone, end_of_track=True)
            prev = now

    out: dict[tuple[int, int], np.ndarray] = {}
    errors: list[str] = []
    for resp in model.stub.IdentifyStream(requests()):
        if resp.result.HasField("error") and resp.result.error.code:
            errors.append(f"{resp.result.key}: {resp.result.error.message}")
            continue
        names, values = probabilities_from_proto(resp.result.identities, "identities")
        if names and names != model.names:
            raise ValueError(f"IdNet answered identities {names}, its metadata names {model.names}")
        out[(int(resp.frame.index), int(resp.track_id))] = values.astype(np.float64)
    return IdNetOutput(out, list(model.names), sent, errors)


def smooth_identities(tracked: Sequence[TrackedInstance], idnet: IdNetOutput, options: TrackerOptions,
                      limits: TrackerLimits | None = None) -> list[TrackedInstance]:
    """A second tracker pass over the tracks (preset) with IdNet's probabilities: smoothed identities."""
    by_frame: dict[int, list[TrackedInstance]] = defaultdict(list)
    for t in tracked:
        by_frame[t.frame].append(t)
    tracker = StreamTracker(options, limits)
    out: list[TrackedInstance] = []
    for frame in sorted(by_frame):
        inst = by_frame[frame]
        dets = [replace(t.detection, index=i, preset_track=t.track_id) for i, t in enumerate(inst)]
        ids: list[tuple[Sequence[str], np.ndarray]] = []
        for t in inst:
            p = idnet.probabilities.get((frame, t.track_id))
            ids.append((idnet.names, p) if p is not None else ((), np.zeros(0)))
        result = tracker.step(frame, dets, ids)
        for r in result.instances:
            t = inst[r.index]
            out.append(TrackedInstance(frame, t.track_id, t.detection, r.identity, r.identity_confidence))
    return out


def check_names(model: IdNetModel, gt: GroundTruth) -> None:
    """ValueError when the ground truth has identities the model cannot name."""
    unknown = sorted(set(gt.identity_names) - set(model.names))
    if unknown:
        raise ValueError(f"{model.repo}: model {model.name!r} names identities {model.names}, but the ground truth's "
                         f"identities are {gt.identity_names} ({', '.join(unknown)} unknown to the model); "
                         "use an IdNet trained on these animals")


def argmax_accuracy(gt: GroundTruth, tracked: Sequence[TrackedInstance], idnet: IdNetOutput,
                    iou_threshold: float = 0.5) -> float | None:
    """IdNet alone: the share of ground-truth instances matched (IoU >= threshold) to a tracked instance whose
    IdNet probabilities (no smoothing, no one-identity-per-frame assignment) have their top class right."""
    from scipy.optimize import linear_sum_assignment

    from sipec.geometry import region_iou_matrix

    by_frame: dict[int, list[TrackedInstance]] = defaultdict(list)
    for t in tracked:
        by_frame[t.frame].append(t)
    hits = total = 0
    for fr in gt.frames:
        total += len(fr.objects)
        hyp = [t for t in by_frame.get(fr.frame, []) if (fr.frame, t.track_id) in idnet.probabilities]
        if not fr.objects or not hyp:
            continue
        iou = region_iou_matrix([d for _, d in fr.objects], [t.detection for t in hyp])
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            p = idnet.probabilities[(fr.frame, hyp[c].track_id)]
            hits += int(iou[r, c] >= iou_threshold and idnet.names[int(np.argmax(p))] == fr.identities[r])
    return hits / total if total else None
