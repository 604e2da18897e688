"""Ground-truth files of a synthetic video, collected frame by frame and written with sipec.data.

Files in the output folder (``summary.json`` is written last: a folder without it is incomplete):

============================  =================================================================
``video.mp4``                 H.264 video (written by :mod:`sipec.synth.video`)
``annotations.json``          COCO instances: one image per frame, one annotation per visible animal
                              (RLE mask, bbox, area, keypoints with v 2/1/0, track_id, identity,
                              identity_name, frame_index, behaviour, partner, com, position_3d,
                              amodal_area, occluded_fraction)
``keypoints.slp``             SLEAP labels: skeleton, one track per identity, video.mp4
``keypoints_dlc.csv``         DeepLabCut multi-animal CollectedData (visible keypoints only)
``identities.csv``            identity labels, see :mod:`sipec.data.labels`
``behaviour.csv``             behaviour labels per animal per frame, see :mod:`sipec.data.labels`
``positions_3d.csv``          3D positions per animal per frame, see :mod:`sipec.data.positions`
``camera.json``               camera K, R, t, image size, arena (floor, walls, objects)
``summary.json``              settings, identities and their cues, label sets, counts, speed, files
============================  =================================================================
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from sipec.data.atomic import write_text_atomic
from sipec.data.coco import CocoInstances, image_entry, instance_annotation, make_category, write_coco_instances
from sipec.data.dlc import DlcLabels, frame_image_path, write_dlc_csv
from sipec.data.labels import NO_PARTNER, write_behaviour_csv, write_identity_csv
from sipec.data.positions import write_positions_csv
from sipec.data.sleap import PoseTracks, write_slp
from sipec.synth.animals import KEYPOINT_NAMES, SKELETON
from sipec.synth.behaviour import BEHAVIOURS, SOCIAL_BEHAVIOURS
from sipec.synth.generator import SynthFrame, SynthGenerator

VIDEO = "video.mp4"
ANNOTATIONS = "annotations.json"
SLP = "keypoints.slp"
DLC = "keypoints_dlc.csv"
IDENTITIES = "identities.csv"
BEHAVIOUR = "behaviour.csv"
POSITIONS = "positions_3d.csv"
CAMERA = "camera.json"
SUMMARY = "summary.json"
OUTPUT_FILES: tuple[str, ...] = (VIDEO, ANNOTATIONS, SLP, DLC, IDENTITIES, BEHAVIOUR, POSITIONS, CAMERA, SUMMARY)
FORMAT = "sipec-synth"
FORMAT_VERSION = 1
CATEGORY_ID = 1


class GroundTruthWriter:
    """Collects per-frame truth in memory (`add`), writes every label file at the end (`write`)."""

    def __init__(self, out_dir: str | Path, generator: SynthGenerator) -> None:
        self.out = Path(out_dir)
        self.gen = generator
        cfg = generator.config
        self.names = [look.name for look in generator.looks]
        n, k = cfg.animals, len(KEYPOINT_NAMES)
        self.keypoints = np.full((cfg.frames, n, k, 2), np.nan, dtype=np.float64)
        self.keypoint_v = np.zeros((cfg.frames, n, k), dtype=np.int8)
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.identity_rows: list[dict] = []
        self.behaviour_rows: list[dict] = []
        self.position_rows: list[dict] = []
        self.frames_added = 0
        self.stats: Counter[str] = Counter()
        self.behaviour_counts: Counter[str] = Counter({b: 0 for b in BEHAVIOURS})
        self.bout_counts: Counter[str] = Counter({b: 0 for b in BEHAVIOURS})
        self._previous: list[str | None] = [None] * n
        self.visible_area_sum = 0
        self.amodal_area_sum = 0

    def add(self, frame: SynthFrame) -> None:
        cfg = self.gen.config
        f = frame.index
        image_id = f + 1
        self.images.append(image_entry(image_id, cfg.width, cfg.height, VIDEO, frame_index=f, video=VIDEO))
        for a in frame.animals:
            kp = a.keypoints
            self.behaviour_counts[a.behaviour] += 1
            if a.behaviour != self._previous[a.identity]:
                self.bout_counts[a.behaviour] += 1
            self._previous[a.identity] = a.behaviour
            partner_name = self.names[a.partner] if a.partner != NO_PARTNER else ""
            self.behaviour_rows.append({"video": VIDEO, "frame": f, "identity": a.identity, "identity_name": a.name,
                                        "behaviour": a.behaviour, "partner": a.partner, "partner_name": partner_name})
            area = a.area
            com = a.com
            x, y, z = (float(v) for v in a.position)
            self.position_rows.append({
                "video": VIDEO, "frame": f, "identity": a.identity, "identity_name": a.name, "x": x, "y": y, "z": z,
                "u": com[0] if com else math.nan, "v": com[1] if com else math.nan, "area": area,
                "visible": int(area > 0)})
            amodal = a.render.amodal_area
            self.amodal_area_sum += amodal
            self.visible_area_sum += area
            self.stats["animal_frames"] += 1
            if area == 0:
                self.stats["hidden_animal_frames"] += 1
                continue
            self.stats["instances"] += 1
            occluded = a.occluded_fraction
            if occluded > 0.05:
                self.stats["occluded_instances"] += 1
            self.stats["keypoints_visible"] += int(np.count_nonzero(kp[:, 2] == 2))
            self.stats["keypoints_occluded"] += int(np.count_nonzero(kp[:, 2] == 1))
            self.stats["keypoints_outside"] += int(np.count_nonzero(kp[:, 2] == 0))
            self.keypoints[f, a.identity] = kp[:, :2]
            self.keypoint_v[f, a.identity] = kp[:, 2]
            ann = instance_annotation(
                a.mask, ann_id=len(self.annotations) + 1, image_id=image_id, category_id=CATEGORY_ID,
                keypoints=kp, rle=a.rle, track_id=a.track_id, identity=a.identity, identity_name=a.name,
                frame_index=f, behaviour=a.behaviour, partner=a.partner,
                com=[round(com[0], 3), round(com[1], 3)] if com else None,
                position_3d=[round(x, 5), round(y, 5), round(z, 5)], amodal_area=amodal,
                occluded_fraction=round(occluded, 4))
            self.annotations.append(ann)
            x1, y1, bw, bh = ann["bbox"]
            self.identity_rows.append({"video": VIDEO, "frame": f, "track_id": a.track_id, "identity": a.identity,
                                       "identity_name": a.name, "x1": x1, "y1": y1, "x2": x1 + bw, "y2": y1 + bh})
        self.frames_added += 1

    # ------------------------------------------------------------------ files
    def write_labels(self) -> None:
        """Every ground-truth file except the video and the summary."""
        cfg = self.gen.config
        n = self.frames_added
        category = make_category(CATEGORY_ID, "animal", KEYPOINT_NAMES, SKELETON)
        info = {"description": "sipec synth: procedural home cage", "format": FORMAT, "version": FORMAT_VERSION,
                "seed": cfg.seed, "video": VIDEO, "fps": cfg.fps, "identity_names": self.names,
                "behaviours": list(BEHAVIOURS)}
        write_coco_instances(self.out / ANNOTATIONS, CocoInstances(images=self.images, annotations=self.annotations,
                                                                   categories=[category], info=info))
        kp, v = self.keypoints[:n], self.keypoint_v[:n]
        dlc_coords = np.where((v == 2)[..., None], kp, np.nan)
        write_dlc_csv(self.out / DLC, DlcLabels(scorer="sipec-synth", bodyparts=list(KEYPOINT_NAMES),
                                                individuals=self.names,
                                                image_paths=[frame_image_path(Path(VIDEO).stem, f) for f in range(n)],
                                                coords=dlc_coords))
        slp_points = np.where((v >= 1)[..., None], kp, np.nan)
        write_slp(self.out / SLP, PoseTracks(node_names=list(KEYPOINT_NAMES), track_names=self.names,
                                             frame_indices=np.arange(n), points=slp_points, visible=v == 2,
                                             video_path=VIDEO, edges=list(SKELETON),
                                             video_shape=(cfg.height, cfg.width)))
        write_identity_csv(self.out / IDENTITIES, self.identity_rows)
        write_behaviour_csv(self.out / BEHAVIOUR, self.behaviour_rows)
        write_positions_csv(self.out / POSITIONS, self.position_rows)
        camera = {"mode": cfg.camera, **self.gen.camera.to_json(), "fps": cfg.fps, "arena": self.gen.arena.to_json()}
        write_text_atomic(self.out / CAMERA, json.dumps(camera, indent=1))

    def summary(self, args: dict[str, Any], seconds: float, video_frames: int) -> dict:
        cfg = self.gen.config
        animal_frames = max(1, self.stats["animal_frames"])
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "args": args, "config": cfg.to_json(), "seed": cfg.seed,
            "size": [cfg.width, cfg.height], "fps": cfg.fps, "frames": self.frames_added, "video_frames": video_frames,
            "camera_mode": cfg.camera,
            "identities": [look.to_json() for look in self.gen.looks],
            "identity_cues": "fur shade (brightness factor), marking on the back, body size factor",
            "behaviours": list(BEHAVIOURS), "social_behaviours": list(SOCIAL_BEHAVIOURS),
            "behaviour_frame_counts": dict(self.behaviour_counts), "behaviour_bout_counts": dict(self.bout_counts),
            "keypoint_names": list(KEYPOINT_NAMES), "skeleton": [list(e) for e in SKELETON],
            "objects": [o.name for o in self.gen.arena.objects],
            "counts": {
                "animal_frames": self.stats["animal_frames"], "instances": self.stats["instances"],
                "hidden_animal_frames": self.stats["hidden_animal_frames"],
                "occluded_instances": self.stats["occluded_instances"],
                "keypoints_visible": self.stats["keypoints_visible"],
                "keypoints_occluded": self.stats["keypoints_occluded"],
                "keypoints_outside": self.stats["keypoints_outside"],
                "mean_visible_area": round(self.visible_area_sum / animal_frames, 1),
                "mean_amodal_area": round(self.amodal_area_sum / animal_frames, 1),
            },
            "generation": {"seconds": round(seconds, 3),
                           "frames_per_second": round(self.frames_added / seconds, 2) if seconds > 0 else None},
            "files": {name: file_facts(self.out / name) for name in OUTPUT_FILES if name != SUMMARY},
        }


def file_facts(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def write_summary(out_dir: str | Path, summary: dict) -> None:
    write_text_atomic(Path(out_dir) / SUMMARY, json.dumps(summary, indent=1))
