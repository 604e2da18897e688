"""One video through the modules: SegNet -> Tracker -> crops -> IdNet | PoseNet | BehaveNet -> Tracker.

```
decoder thread --frames--> SegNet stream (batched by the service) --instances--> Tracker stream A (matching)
   -> crops around each track's COM (from the frame the orchestrator holds)
   -> PoseNet stream (per frame) | IdNet stream (per track, T-frame delay) | BehaveNet stream (per track and
      interacting pair, n-frame delay), all in flight at once in their own threads
   -> Tracker stream B (identity smoothing of IdNet's answers, one identity per animal per frame)
   -> Tracker.Estimate3D (when a depth model is served)
   -> completed frames, in order -> sinks
```

Only the contract is used: each module is a stub (gRPC or in-process, see `sipec.serving.stubs`).
Memory is bounded: at most `max_frames_in_flight` frames are held between decoding and completion.

A module whose model backend is down (a module in front of a stopped model server) keeps its stream open and
answers each item with an UNAVAILABLE `ItemError`. Such a frame cannot be completed: the run stops with
`ModuleUnavailable` (code UNAVAILABLE) before the frame is emitted, so `sipec analyze` retries the video from its
last completed frame instead of writing the frame without animals. Other per-item errors (a bad frame) are kept
in `FrameState.error` and the run goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from orchestrator.streams import BidiStream
from sipec.api.convert import (
    image_to_proto,
    instance_from_proto,
    mask_to_proto,
)
from sipec.api.defaults import TRACKER_DEFAULTS
from sipec.geometry import crop_around, crop_origin, decode_rle
from sipec.v1 import behavenet_pb2, common_pb2, idnet_pb2, posenet_pb2, segnet_pb2, tracker_pb2
from sipec.video import Frame, FrameReader

log = logging.getLogger("sipec.pipeline")

MODULE_ORDER = ("segnet", "tracker", "idnet", "posenet", "behavenet")
POLL_S = 0.05   # how often the pipeline's thread looks for frames completed by the modules' answers
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


class ModuleUnavailable(Exception):
    """A module answered an item UNAVAILABLE (its model backend is down): the frame cannot be completed. Has
    code() and details() like a grpc.RpcError, so `orchestrator.analyze.unavailable` retries the video."""

    def __init__(self, module: str, message: str) -> None:
        super().__init__(f"{module}: {message}")
        self.module = module

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


class ModelVersionChanged(RuntimeError):
    """A module answered with another model version than the one the analysis started with (recorded in
    progress.json and summary.json): one video is analysed by one version of each model, never two."""

    def __init__(self, module: str, started: int, now: int, frame: int) -> None:
        super().__init__(f"{module}: model version {now} answered frame {frame}, but this analysis started with "
                         f"version {started}: one video is analysed by one version. Pin the version "
                         "(--model-version; specific in TF Serving's models.config) and analyse the video again")


def _check_available(module: str, error: Any) -> None:
    """Raise ModuleUnavailable for an ItemError with code UNAVAILABLE (any other error is the item's own)."""
    if error.code == _UNAVAILABLE:
        raise ModuleUnavailable(module, error.message)


@dataclass
class PipelineOptions:
    modules: tuple[str, ...] = MODULE_ORDER
    min_score: float = 0.5
    max_instances: int = 16
    max_frames_in_flight: int = 64
    tracker: dict[str, Any] = field(default_factory=dict)   # TrackerOptions fields
    low_score: float = 0.0          # ByteTrack's second pass: instances from here to min_score continue tracks
    estimate_3d: bool = True
    timeout_s: float = 120.0

    @property
    def second_pass(self) -> bool:
        """Whether SegNet is asked for instances below min_score, for the tracker to continue tracks with."""
        return "tracker" in self.modules and 0 < self.low_score < self.min_score

    @property
    def segnet_min_score(self) -> float:
        return self.low_score if self.second_pass else self.min_score

    def tracker_options(self) -> Any:
        """The TrackerOptions of a stream: the pipeline's tracker section, and segnet.min_score as the tracker's
        line between high- and low-score instances."""
        return tracker_pb2.TrackerOptions(**self.tracker, min_score=self.min_score)


@dataclass
class AnimalState:
    index: int
    instance: Any                         # sipec.api.convert.InstanceData (RLE mask)
    proto: Any                            # common_pb2.Instance as SegNet returned it
    track_id: int = 0
    identity: str = ""
    identity_confidence: float = float("nan")
    identity_probs: Any = None            # IdNet's raw answer (Probabilities)
    keypoints: Any = None                 # list[Keypoint]
    behaviours: Any = None                # Probabilities
    position: tuple[float, float, float] | None = None


@dataclass
class FrameState:
    frame: Frame
    animals: list[AnimalState] = field(default_factory=list)
    interactions: list[Any] = field(default_factory=list)      # tracker_pb2.Interaction
    pair_behaviours: dict[str, Any] = field(default_factory=dict)
    pending_pose: bool = False
    pending_id: set[int] = field(default_factory=set)
    pending_behaviour: set[str] = field(default_factory=set)
    smoothed: bool = False
    error: str = ""

    def by_track(self, track_id: int) -> AnimalState | None:
        return next((a for a in self.animals if a.track_id == track_id), None)


class ModuleSet:
    """The stubs of the modules a pipeline uses and their ModelInfo (crop sizes, names)."""

    def __init__(self, stubs: dict[str, Any]) -> None:
        unknown = set(stubs) - set(MODULE_ORDER)
        if unknown:
            raise ValueError(f"unknown module(s) {', '.join(sorted(unknown))}; modules: {', '.join(MODULE_ORDER)}")
        self.stubs = stubs
        self.served_by: dict[str, str] = {}   # module -> site, when the modules come from an endpoints file
        self.info = {}
        for name, stub in stubs.items():
            try:
                self.info[name] = stub.GetModelInfo(common_pb2.GetModelInfoRequest(), timeout=30)
            except Exception as exc:
                detail = exc.details() if hasattr(exc, "details") and callable(exc.details) else str(exc)
                raise ValueError(f"{name}: {detail}") from exc

    def __contains__(self, name: str) -> bool:
        return name in self.stubs

    def subset(self, names: list[str]) -> ModuleSet:
        """These modules only (their stubs and ModelInfo, no new calls); ValueError names what is wrong."""
        unknown = [n for n in names if n not in MODULE_ORDER]
        if unknown:
            raise ValueError(f"unknown module(s) {', '.join(unknown)}; modules: {', '.join(MODULE_ORDER)}")
        missing = [n for n in names if n not in self.stubs]
        if missing:
            raise ValueError(f"{', '.join(missing)} not configured in this pipeline (it has "
                             f"{', '.join(self.stubs)})")
        if "segnet" not in names:
            raise ValueError("segnet is required: every other module starts from its instances")
        for needs in ("idnet", "behavenet"):
            if needs in names and "tracker" not in names:
                raise ValueError(f"{needs} needs the tracker (crops are grouped per track)")
        out = ModuleSet.__new__(ModuleSet)
        out.stubs = {n: s for n, s in self.stubs.items() if n in names}
        out.info = {n: i for n, i in self.info.items() if n in names}
        out.served_by = {n: s for n, s in self.served_by.items() if n in names}
        return out

    def crop_size(self, name: str) -> int:
        """Side, in frame pixels, of the square crop around an animal's COM that the module's model was trained
        on (the service resizes it to the network input): IdNet's masking.crop_px, PoseNet's crop.side_px,
        else ModelInfo's input height (BehaveNet publishes its crop side there)."""
        meta = self.meta(name)
        for section, key in (("masking", "crop_px"), ("crop", "side_px")):
            value = meta.get(section, {}).get(key) if isinstance(meta.get(section), dict) else None
            if isinstance(value, int | float) and value > 0:
                return int(round(value))
        return int(self.info[name].input_height or 128)

    def pair_crop_size(self, name: str) -> int:
        """Side of a pair's crop in source pixels (BehaveNet metadata crops.pair_crop_px), else the crop size."""
        crops = self.meta(name).get("crops")
        side = crops.get("pair_crop_px") if isinstance(crops, dict) else None
        return int(side) if isinstance(side, int | float) and side > 0 else self.crop_size(name)

    def meta(self, name: str) -> dict[str, Any]:
        """The module's model metadata (ModelInfo.metadata_json), parsed once."""
        cache = self.__dict__.setdefault("_meta", {})
        if name not in cache:
            try:
                cache[name] = json.loads(self.info[name].metadata_json or "{}")
            except json.JSONDecodeError:
                cache[name] = {}
        return cache[name]


class VideoPipeline:
    """Runs one video; calls `emit(FrameState)` for every completed frame, in order."""

    def __init__(self, modules: ModuleSet, options: PipelineOptions | None = None) -> None:
        self.m = modules
        self.o = options or PipelineOptions()
        if "segnet" not in modules:
            raise ValueError("the pipeline needs segnet: every other module starts from its instances")
        needs_tracks = [n for n in ("idnet", "behavenet") if n in modules]
        if needs_tracks and "tracker" not in modules:
            raise ValueError(f"{', '.join(needs_tracks)} need the tracker (crops are grouped per track)")
        # IdNet and BehaveNet answer a frame only once they have seen the frames after it (non-causal windows)
        delays = [0]
        if "idnet" in modules:
            delays.append(int(modules.meta("idnet").get("t") or 0))
        if "behavenet" in modules:
            window = modules.meta("behavenet").get("window")
            delays.append(int(window.get("n") or 0) if isinstance(window, dict) else 0)
        delay = max(delays)
        self.delay = delay
        if self.o.max_frames_in_flight <= delay + 1:
            raise ValueError(f"max_frames_in_flight {self.o.max_frames_in_flight} is too small for the models' "
                             f"temporal windows (frames answered {delay} frames late): use at least {delay + 2}")

    def warmup_frames(self) -> int:
        """How many frames before a resume point must be analysed again (and not written) so that the frames after
        it get exactly the results of an uninterrupted run: IdNet's and BehaveNet's windows reach `delay` frames
        back, and the tracker smooths IdNet's answers over `identity_window` frames. 0 without IdNet and BehaveNet
        (the tracker's replay of the written frames restores its tracks exactly)."""
        if "idnet" not in self.m and "behavenet" not in self.m:
            return 0
        window = 0
        if "idnet" in self.m:
            window = int(self.o.tracker.get("identity_window") or TRACKER_DEFAULTS["identity_window"])
        # smoothing at the resume point averages IdNet's answers of `window` frames, the first of which needs
        # crops from up to `delay` frames before it
        return self.delay + window

    # ------------------------------------------------------------------------------------------------
    def run(self, reader: FrameReader, emit: Callable[[FrameState], None],
            progress: Callable[[int], None] | None = None,
            replay: list[tuple[int, list[Any]]] | None = None) -> None:
        """`replay`: (frame index, instances with their track ids) of frames already analysed, sent to the
        tracker first on a resume, so that it continues with the same tracks as an uninterrupted run."""
        self._states: dict[int, FrameState] = {}
        self._lock = threading.Condition()
        self._emit = emit
        self._next_emit: int | None = None
        self._prev_tracks: set[int] = set()
        self._prev_pairs: set[str] = set()
        m, o = self.m, self.o
        timeout = o.timeout_s
        self._seg = BidiStream("segnet", m.stubs["segnet"].SegmentStream, max_pending=8)
        self._track_a = BidiStream("tracker", m.stubs["tracker"].Track, timeout_s=None) if "tracker" in m else None
        self._track_b = (BidiStream("tracker-identity", m.stubs["tracker"].Track)
                         if "tracker" in m and "idnet" in m else None)
        self._pose = (BidiStream("posenet", m.stubs["posenet"].EstimatePoseStream, self._on_pose)
                      if "posenet" in m else None)
        self._id = (BidiStream("idnet", m.stubs["idnet"].IdentifyStream, self._on_identity)
                    if "idnet" in m else None)
        self._beh = (BidiStream("behavenet", m.stubs["behavenet"].ClassifyStream, self._on_behaviour)
                     if "behavenet" in m else None)
        inflight: dict[int, Frame] = {}
        feeder_error: list[BaseException] = []
        stopped = threading.Event()   # the run failed: the feeder stops waiting for room and ends
        if replay and self._track_a is not None:
            self._replay(replay)

        def feed() -> None:
            try:
                for frame in reader:
                    with self._lock:
                        while len(inflight) + len(self._states) >= o.max_frames_in_flight:
                            if stopped.is_set():
                                return
                            self._lock.wait(0.1)
                        inflight[frame.index] = frame
                    self._seg.send(segnet_pb2.SegmentRequest(
                        image=image_to_proto(frame.image), min_score=o.segnet_min_score, max_instances=o.max_instances,
                        frame=common_pb2.FrameRef(index=frame.index, time_s=frame.time_s)))
            except BaseException as exc:  # noqa: BLE001
                feeder_error.append(exc)
            finally:
                self._seg.close(wait_s=0)

        feeder = threading.Thread(target=feed, name="feed-segnet", daemon=True)
        feeder.start()
        try:
            idle_since = time.monotonic()
            while True:
                # wake up often: IdNet/PoseNet/BehaveNet answers arrive on their own threads, and the frames they
                # complete must be emitted (freeing room for the feeder) even while SegNet has nothing to say
                self._raise_stream_errors()
                try:
                    resp = self._seg.recv(timeout_s=POLL_S)
                except TimeoutError:
                    if self._drain():
                        idle_since = time.monotonic()
                    elif timeout is not None and time.monotonic() - idle_since > timeout:
                        raise TimeoutError(f"no progress for {timeout:.0f} s (segnet and the modules' streams are "
                                           "silent)") from None
                    continue
                idle_since = time.monotonic()
                if resp is None:
                    break
                with self._lock:
                    frame = inflight.pop(int(resp.frame.index))
                self._process(frame, resp)
                if progress is not None:
                    progress(frame.index)
            feeder.join(timeout)
            if feeder_error:
                raise feeder_error[0]
            self._end_all_tracks()
            for s in (self._pose, self._id, self._beh):
                if s is not None:
                    s.close(timeout)
            self._drain(final=True)
            for s in (self._track_a, self._track_b):
                if s is not None:
                    s.close(timeout)
        except BaseException:
            stopped.set()
            for s in (self._seg, self._track_a, self._track_b, self._pose, self._id, self._beh):
                if s is not None:
                    s.cancel()
            raise

    def _raise_stream_errors(self) -> None:
        """A stream answered on its own thread (PoseNet, IdNet, BehaveNet) failed, e.g. an item UNAVAILABLE: fail
        now, not once the frames waiting for it have filled `max_frames_in_flight` and the run times out."""
        for s in (self._pose, self._id, self._beh):
            if s is not None and s.error is not None:
                raise s.error

    def _check_version(self, module: str, version: int, frame: int) -> None:
        """Every answer comes from the model version the analysis started with (0: an error, no version)."""
        started = int(self.m.info[module].version)
        if version and started and version != started:
            raise ModelVersionChanged(module, started, int(version), frame)

    def _replay(self, replay: list[tuple[int, list[Any]]]) -> None:
        for index, instances in replay:
            req = tracker_pb2.TrackRequest(frame=common_pb2.FrameRef(index=index), instances=instances)
            if self._track_a.sent == 0:
                req.options.CopyFrom(self.o.tracker_options())
            self._track_a.send(req)
            resp = self._track_a.recv(timeout_s=self.o.timeout_s)
            if resp is not None and resp.HasField("error"):
                _check_available("tracker", resp.error)
            if resp is None or (resp.HasField("error") and resp.error.code):
                raise RuntimeError(f"tracker refused the replay of frame {index}: "
                                   f"{resp.error.message if resp is not None else 'stream ended'}")
            self._prev_tracks = {i.track_id for i in instances if i.track_id}

    # ------------------------------------------------------------------------------------------------
    def _process(self, frame: Frame, seg: Any) -> None:
        state = FrameState(frame)
        self._check_version("segnet", seg.model_version, frame.index)
        if seg.HasField("error") and seg.error.code:
            _check_available("segnet", seg.error)
            state.error = f"segnet: {seg.error.message}"
        for i, inst in enumerate(seg.instances):
            state.animals.append(AnimalState(i, instance_from_proto(inst, decode_mask=False), inst))
        ref = common_pb2.FrameRef(index=frame.index, time_s=frame.time_s)
        if self._track_a is not None:
            req = tracker_pb2.TrackRequest(frame=ref, instances=[a.proto for a in state.animals])
            if self._track_a.sent == 0:
                req.options.CopyFrom(self.o.tracker_options())
            self._track_a.send(req)
            tr = self._track_a.recv(timeout_s=self.o.timeout_s)
            if tr is None:
                raise RuntimeError("tracker stream ended early")
            if tr.HasField("error") and tr.error.code:
                _check_available("tracker", tr.error)
                state.error = (state.error + "; " if state.error else "") + f"tracker: {tr.error.message}"
            for t in tr.instances:
                state.animals[t.index].track_id = t.track_id
            state.interactions = list(tr.interactions)
            if self.o.second_pass:   # low-score instances that continued no track are not animals
                state.animals = [a for a in state.animals if a.track_id or a.proto.score >= self.o.min_score]
                for k, a in enumerate(state.animals):
                    a.index = k
        with self._lock:
            self._states[frame.index] = state
            if self._next_emit is None:
                self._next_emit = frame.index
        self._send_crops(state, ref)
        if "tracker" in self.m and self.o.estimate_3d and self.m.info["tracker"].version > 0 and state.animals:
            self._estimate_3d(state)
        self._drain()

    def _send_crops(self, state: FrameState, ref: Any) -> None:
        image = state.frame.image
        tracks = {a.track_id for a in state.animals if a.track_id}
        if self._pose is not None and state.animals:
            size = self.m.crop_size("posenet")
            crops = []
            for a in state.animals:
                ox, oy = crop_origin(a.instance.com, size)
                crops.append(posenet_pb2.PoseCrop(crop=image_to_proto(crop_around(image, a.instance.com, size)),
                                                  origin=common_pb2.Point(x=ox, y=oy), scale=1.0,
                                                  key=str(a.index)))
            with self._lock:
                state.pending_pose = True
            self._pose.send(posenet_pb2.PoseRequest(frame=ref, crops=crops))
        if self._id is not None:
            size = self.m.crop_size("idnet")
            with self._lock:
                state.pending_id = set(tracks)
            for a in state.animals:
                if not a.track_id:
                    continue
                mask = crop_around(decode_rle(a.instance.rle).astype(np.uint8), a.instance.com, size).astype(bool)
                self._id.send(idnet_pb2.IdentifyStreamRequest(
                    frame=ref, track_id=a.track_id, crop=image_to_proto(crop_around(image, a.instance.com, size)),
                    mask=mask_to_proto(mask)))
        if self._beh is not None:
            # individual crops: ModelInfo input side around the mask COM; pair crops (the tracker's interacting
            # pairs): the model's crops.pair_crop_px around the pair's joint COM, as BehaveNet was trained
            size = self.m.crop_size("behavenet")
            pair_size = self.m.pair_crop_size("behavenet")
            subjects: dict[str, tuple[tuple[float, float], int]] = {
                str(a.track_id): (a.instance.com, size) for a in state.animals if a.track_id}
            for it in state.interactions:
                subjects[pair_subject(it.track_a, it.track_b)] = ((it.com.x, it.com.y), pair_size)
            with self._lock:
                state.pending_behaviour = set(subjects)
            for subject, (com, side) in subjects.items():
                self._beh.send(behavenet_pb2.BehaviourFrame(
                    frame=ref, subject=subject, crop=image_to_proto(crop_around(image, com, side))))
            self._end_pairs({s for s in subjects if "+" in s}, ref)
        self._end_tracks(tracks, ref)

    def _end_tracks(self, tracks: set[int], ref: Any) -> None:
        for gone in sorted(self._prev_tracks - tracks):
            if self._id is not None:
                self._id.send(idnet_pb2.IdentifyStreamRequest(frame=ref, track_id=gone, end_of_track=True))
            if self._beh is not None:
                self._beh.send(behavenet_pb2.BehaviourFrame(frame=ref, subject=str(gone), end_of_track=True))
        self._prev_tracks = tracks

    def _end_pairs(self, pairs: set[str], ref: Any) -> None:
        for gone in sorted(self._prev_pairs - pairs):
            self._beh.send(behavenet_pb2.BehaviourFrame(frame=ref, subject=gone, end_of_track=True))
        self._prev_pairs = pairs

    def _end_all_tracks(self) -> None:
        ref = common_pb2.FrameRef(index=-1)
        self._end_tracks(set(), ref)
        if self._beh is not None:
            self._end_pairs(set(), ref)

    def _estimate_3d(self, state: FrameState) -> None:
        resp = self.m.stubs["tracker"].Estimate3D(
            tracker_pb2.Estimate3DRequest(instances=[a.proto for a in state.animals]), timeout=self.o.timeout_s)
        for p in resp.positions:
            state.animals[p.index].position = (p.x, p.y, p.z)

    # responses (in the streams' threads) -------------------------------------------------------------
    def _on_pose(self, resp: Any) -> None:
        self._check_version("posenet", resp.model_version, resp.frame.index)
        for pose in resp.poses:
            if pose.HasField("error"):
                _check_available("posenet", pose.error)
        with self._lock:
            state = self._states.get(int(resp.frame.index))
            if state is None:
                return
            for pose in resp.poses:
                animal = next((a for a in state.animals if str(a.index) == pose.key), None)
                if animal is not None and not (pose.HasField("error") and pose.error.code):
                    animal.keypoints = list(pose.keypoints)
            state.pending_pose = False
            self._lock.notify_all()

    def _on_identity(self, resp: Any) -> None:
        self._check_version("idnet", resp.model_version, resp.frame.index)
        if resp.result.HasField("error"):
            _check_available("idnet", resp.result.error)
        with self._lock:
            state = self._states.get(int(resp.frame.index))
            if state is None:
                return
            animal = state.by_track(resp.track_id)
            if animal is not None and not (resp.result.HasField("error") and resp.result.error.code):
                animal.identity_probs = resp.result.identities
            state.pending_id.discard(resp.track_id)
            self._lock.notify_all()

    def _on_behaviour(self, resp: Any) -> None:
        self._check_version("behavenet", resp.model_version, resp.frame.index)
        if resp.HasField("error"):
            _check_available("behavenet", resp.error)
        with self._lock:
            state = self._states.get(int(resp.frame.index))
            if state is None:
                return
            if not (resp.HasField("error") and resp.error.code):
                if "+" in resp.subject:
                    state.pair_behaviours[resp.subject] = resp.behaviours
                else:
                    animal = state.by_track(int(resp.subject))
                    if animal is not None:
                        animal.behaviours = resp.behaviours
            state.pending_behaviour.discard(resp.subject)
            self._lock.notify_all()

    # completion ------------------------------------------------------------------------------------
    def _drain(self, final: bool = False) -> bool:
        """Emit every completed frame at the head of the queue, in order; whether any was emitted."""
        emitted = False
        while True:
            with self._lock:
                if self._next_emit is None or self._next_emit not in self._states:
                    return emitted
                state = self._states[self._next_emit]
                ready_ids = not state.pending_id
                done = ready_ids and not state.pending_pose and not state.pending_behaviour
            if ready_ids and not state.smoothed:
                self._smooth(state)
            if not done:
                if final:  # the streams are closed: what is still pending will not come
                    log.warning("frame incomplete at end of video", extra={"frame": state.frame.index})
                else:
                    return emitted
            with self._lock:
                del self._states[self._next_emit]
                self._next_emit += 1
                while self._next_emit not in self._states and self._states:
                    self._next_emit = min(self._states)
                self._lock.notify_all()
            self._emit(state)
            emitted = True

    def _smooth(self, state: FrameState) -> None:
        state.smoothed = True
        if self._track_b is None:
            return
        # every tracked animal, identified or not: the tracker's contact test (identity_evidence) needs them all
        animals = [a for a in state.animals if a.track_id]
        if not any(a.identity_probs is not None for a in animals):
            return
        req = tracker_pb2.TrackRequest(
            frame=common_pb2.FrameRef(index=state.frame.index, time_s=state.frame.time_s),
            instances=[_with_track(a) for a in animals],
            identities=[a.identity_probs if a.identity_probs is not None else common_pb2.Probabilities()
                        for a in animals])
        if self._track_b.sent == 0:
            req.options.CopyFrom(self.o.tracker_options())
        self._track_b.send(req)
        resp = self._track_b.recv(timeout_s=self.o.timeout_s)
        if resp is not None and resp.HasField("error"):
            _check_available("tracker", resp.error)
        if resp is None or (resp.HasField("error") and resp.error.code):
            return
        for t in resp.instances:
            animals[t.index].identity = t.identity
            animals[t.index].identity_confidence = t.identity_confidence


def pair_subject(track_a: int, track_b: int) -> str:
    """BehaveNet subject name of an interacting pair: "a+b", smaller track id first."""
    return f"{min(track_a, track_b)}+{max(track_a, track_b)}"


def _with_track(animal: AnimalState) -> Any:
    inst = common_pb2.Instance()
    inst.CopyFrom(animal.proto)
    inst.track_id = animal.track_id
    return inst

