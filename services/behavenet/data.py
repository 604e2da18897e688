"""Labelled videos -> the crops BehaveNet trains and is evaluated on.

A labelled video is a folder holding:

- the video (``video.mp4``, or the folder's only .mp4/.avi/.mov/.mkv);
- per-frame behaviour labels: ``behaviour.csv`` (:mod:`sipec.data.labels`: video, frame, identity,
  identity_name, behaviour, partner, partner_name), or a VIA 3 project of temporal segments
  (``via.json`` or ``*.via.json``, :mod:`services.behavenet.via`; one animal);
- optionally ``annotations.json``: COCO instances with an ``identity`` per annotation (the masks
  the crops are centred on). Without it the video shows one animal and the whole frame is its crop.

A `sipec synth` output folder is such a folder (its summary.json also gives the behaviour list).

Crops and labels (:mod:`services.behavenet.crops` for the geometry):

- every visible animal with a label gets an individual crop labelled with its own behaviour;
- every pair whose dilated masks overlap gets a pair crop, labelled with a social behaviour when both
  animals carry that behaviour with each other as partner (e.g. social_grooming, which synth gives
  both partners), else with the background class 'none'.

Crops of one subject are stored contiguously in frame order, so temporal windows are index arithmetic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from services.behavenet.crops import (
    CropSettings,
    individual_crop,
    interacting_pairs,
    joint_com,
    pair_crop,
    pair_subject,
    resize_crop,
)
from sipec.data.labels import read_behaviour_csv
from sipec.geometry import crop_around
from sipec.video import FALLBACK_FPS, VIDEO_SUFFIXES

NONE_CLASS = "none"
INDIVIDUAL = "individual"
PAIR = "pair"


@dataclass
class LabelledVideo:
    """One video with per-frame behaviour labels and, optionally, instance masks."""

    name: str
    video_path: Path
    labels: pd.DataFrame                 # behaviour-CSV columns
    fps: float
    num_frames: int
    annotations_path: Path | None = None
    behaviours: list[str] | None = None  # the dataset's own list (synth), if it has one

    def label_matrix(self, behaviours: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(frames, identities) class indices (-1 unlabelled) and partner identities (-1 none)."""
        index = {b: i for i, b in enumerate(behaviours)}
        unknown = sorted(set(self.labels["behaviour"]) - set(index))
        if unknown:
            raise ValueError(f"{self.name}: behaviours {', '.join(unknown)} are not in the behaviour list "
                             f"({', '.join(behaviours)})")
        ids = self.labels["identity"].to_numpy(np.int64)
        frames = self.labels["frame"].to_numpy(np.int64)
        if len(ids) and (ids.min() < 0 or frames.min() < 0):
            raise ValueError(f"{self.name}: identities and frames must be >= 0")
        n_ids = int(ids.max()) + 1 if len(ids) else 0
        n_frames = max(self.num_frames, int(frames.max()) + 1 if len(frames) else 0)
        labels = np.full((n_frames, n_ids), -1, dtype=np.int64)
        partners = np.full((n_frames, n_ids), -1, dtype=np.int64)
        labels[frames, ids] = [index[b] for b in self.labels["behaviour"]]
        partners[frames, ids] = self.labels["partner"].to_numpy(np.int64)
        return labels, partners


def open_labelled_video(folder: str | os.PathLike, via_attribute: str | None = None) -> LabelledVideo:
    """Find the video, labels and annotations of a folder; ValueError/FileNotFoundError name what is missing."""
    import cv2

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory")
    behaviours = None
    summary = folder / "summary.json"
    if summary.is_file():
        behaviours = list(json.loads(summary.read_text(encoding="utf-8")).get("behaviours", [])) or None
    video = folder / "video.mp4"
    if not video.is_file():
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if len(found) != 1:
            raise FileNotFoundError(f"{folder}: expected video.mp4 or exactly one video file "
                                    f"({', '.join(VIDEO_SUFFIXES)}), found {len(found)}")
        video = found[0]
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"{video}: cannot open the video")
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or FALLBACK_FPS
    num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    csv = folder / "behaviour.csv"
    via = [p for p in (folder / "via.json", *sorted(folder.glob("*.via.json"))) if p.is_file()]
    if csv.is_file():
        labels = read_behaviour_csv(csv)
    elif via:
        from services.behavenet.via import via_frame_labels

        labels = via_frame_labels(via[0], fps, num_frames, attribute=via_attribute)
        named = sorted(set(labels["video"]))
        if video.name in named:
            labels = labels[labels["video"] == video.name]
        elif len(named) > 1:
            raise ValueError(f"{via[0]}: segments of several videos ({', '.join(named)}), none of them {video.name}")
    else:
        raise FileNotFoundError(f"{folder}: no behaviour labels (behaviour.csv, via.json or *.via.json)")
    if labels.empty:
        raise ValueError(f"{folder}: the behaviour labels are empty")
    annotations = folder / "annotations.json"
    return LabelledVideo(name=folder.name, video_path=video, labels=labels, fps=fps, num_frames=num_frames,
                         annotations_path=annotations if annotations.is_file() else None, behaviours=behaviours)


def behaviour_list(videos: Sequence[LabelledVideo]) -> list[str]:
    """The classes: a dataset's own list (synth) if every video has the same one, else the labels seen,
    sorted, with 'none' first."""
    lists = {tuple(v.behaviours) for v in videos if v.behaviours}
    seen = set().union(*(set(v.labels["behaviour"]) for v in videos)) if videos else set()
    if len(lists) == 1 and seen <= set(next(iter(lists))):
        return list(next(iter(lists)))
    return [NONE_CLASS, *sorted(seen - {NONE_CLASS})]


@dataclass
class SubjectSequence:
    """The crops of one subject (an animal or an interacting pair) in one video, rows start..start+len-1."""

    video: str
    subject: str
    kind: str            # INDIVIDUAL or PAIR
    frames: np.ndarray   # (T,) frame indices, increasing
    labels: np.ndarray   # (T,) class indices
    start: int = 0

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self.frames))


@dataclass
class CropSet:
    """Crops, labels and the subject sequences they form."""

    behaviours: list[str]
    settings: CropSettings
    crops: np.ndarray                                   # (N, S, S, 3) uint8
    labels: np.ndarray                                  # (N,) class indices
    sequences: list[SubjectSequence] = field(default_factory=list)
    fps: dict[str, float] = field(default_factory=dict)  # per video

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, kind: str | None = None) -> np.ndarray:
        seqs = [s for s in self.sequences if kind is None or s.kind == kind]
        return np.concatenate([s.rows for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)

    def select(self, keep: Sequence[SubjectSequence]) -> CropSet:
        """A new CropSet with only these sequences (rows copied, renumbered)."""
        parts, labels, out = [], [], []
        start = 0
        for s in keep:
            parts.append(self.crops[s.start:s.start + len(s)])
            labels.append(self.labels[s.start:s.start + len(s)])
            out.append(SubjectSequence(s.video, s.subject, s.kind, s.frames, s.labels, start))
            start += len(s)
        size = self.settings.input_size
        return CropSet(self.behaviours, self.settings,
                       np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8),
                       np.concatenate(labels) if labels else np.zeros(0, np.int64), out,
                       {v: f for v, f in self.fps.items() if any(s.video == v for s in out)})

    def videos(self) -> list[str]:
        return list(dict.fromkeys(s.video for s in self.sequences))

    @staticmethod
    def concat(sets: Sequence[CropSet]) -> CropSet:
        if not sets:
            raise ValueError("no crop sets to join")
        first = sets[0]
        for s in sets[1:]:
            if s.behaviours != first.behaviours or s.settings != first.settings:
                raise ValueError("crop sets with different behaviours or crop settings cannot be joined")
        seqs, start = [], 0
        for s in sets:
            for q in s.sequences:
                seqs.append(SubjectSequence(q.video, q.subject, q.kind, q.frames, q.labels, start + q.start))
            start += len(s)
        fps: dict[str, float] = {}
        for s in sets:
            fps.update(s.fps)
        return CropSet(first.behaviours, first.settings, np.concatenate([s.crops for s in sets]),
                       np.concatenate([s.labels for s in sets]), seqs, fps)


def read_frames(video_path: Path, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, RGB frame) in order."""
    import cv2

    cap = cv2.VideoCapture(str(video_path))
    if not cap.isOpened():
        raise ValueError(f"{video_path}: cannot open the video")
    try:
        index = 0
        while stop is None or index < stop:
            ok, bgr = cap.read()
            if not ok:
                break
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def social_behaviours(video: LabelledVideo) -> set[str]:
    """Behaviours that carry a partner in the labels (e.g. social_grooming)."""
    df = video.labels
    return set(df.loc[df["partner"] >= 0, "behaviour"])


def extract_crops(video: LabelledVideo, behaviours: Sequence[str], settings: CropSettings, pairs: bool = True,
                  max_frames: int | None = None, min_area: int = 50, max_gap: int = 1) -> CropSet:
    """Individual (and pair) crops of every labelled, visible animal in every frame of `video`.

    A subject's crops form one sequence per stretch of frames in which it is seen with gaps of at most
    `max_gap` frames (a track that is lost, or a pair that separates, starts a new sequence).
    """
    from sipec.data.coco import annotation_mask, read_coco_instances

    settings.validate()
    labels, partners = video.label_matrix(behaviours)
    none_index = list(behaviours).index(NONE_CLASS) if NONE_CLASS in behaviours else 0
    by_frame: dict[int, list[dict]] = {}
    if video.annotations_path is not None:
        coco = read_coco_instances(video.annotations_path)
        for frame_index, image in coco.image_by_frame().items():
            by_frame[frame_index] = coco.annotations_for(int(image["id"]))
    else:
        animals = sorted(set(video.labels["identity"].astype(int)))
        if len(animals) != 1:
            raise ValueError(f"{video.name}: labels name {len(animals)} animals but there is no annotations.json "
                             "to find them in the frames (without it, one animal per video)")
        only = animals[0]
    store: dict[tuple[str, str], tuple[list[int], list[int], list[np.ndarray]]] = {}

    def add(subject: str, kind: str, frame: int, label: int, crop: np.ndarray) -> None:
        store.setdefault((kind, subject), ([], [], []))
        f, lab, c = store[(kind, subject)]
        f.append(frame)
        lab.append(label)
        c.append(crop)

    for index, frame in read_frames(video.video_path, max_frames):
        if index >= labels.shape[0]:
            break
        if video.annotations_path is None:
            if labels[index, only] >= 0:
                square = crop_around(frame, (frame.shape[1] / 2, frame.shape[0] / 2), max(frame.shape[:2]))
                add(str(only), INDIVIDUAL, index, int(labels[index, only]), resize_crop(square, settings.input_size))
            continue
        anns = [a for a in by_frame.get(index, []) if _identity(a) < labels.shape[1]
                and labels[index, _identity(a)] >= 0 and float(a.get("area", 0)) >= min_area]
        coms = [_com(a, frame.shape) for a in anns]
        for ann, com in zip(anns, coms, strict=True):
            ident = _identity(ann)
            add(str(ident), INDIVIDUAL, index, int(labels[index, ident]), individual_crop(frame, com, settings))
        if pairs and len(anns) > 1:
            masks = [annotation_mask(a, frame.shape[0], frame.shape[1]) for a in anns]
            boxes = [(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3])
                     for a in anns]
            for i, j in interacting_pairs(masks, boxes, settings.dilation_px):
                a, b = _identity(anns[i]), _identity(anns[j])
                la, lb = labels[index, a], labels[index, b]
                mutual = la == lb and partners[index, a] == b and partners[index, b] == a
                label = int(la) if mutual else none_index
                center = joint_com(coms[i], float(anns[i]["area"]), coms[j], float(anns[j]["area"]))
                add(pair_subject(a, b), PAIR, index, label, pair_crop(frame, center, settings))
    size = settings.input_size
    crops, all_labels, seqs = [], [], []
    start = 0
    for (kind, subject), (frames, labs, cs) in sorted(store.items(), key=lambda kv: (kv[0][0] != INDIVIDUAL,
                                                                                      _subject_key(kv[0][1]))):
        frames_arr = np.asarray(frames, np.int64)
        # a subject's sequence ends where it is not seen for more than max_gap frames (hidden, or a pair apart)
        cuts = np.flatnonzero(np.diff(frames_arr) > max_gap) + 1
        for a, b in zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [len(frames_arr)])), strict=True):
            seqs.append(SubjectSequence(video.name, subject, kind, frames_arr[a:b],
                                        np.asarray(labs[a:b], np.int64), start))
            start += int(b - a)
        crops.append(np.stack(cs))
        all_labels.append(np.asarray(labs, np.int64))
    return CropSet(list(behaviours), settings,
                   np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8),
                   np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64), seqs,
                   {video.name: video.fps})


def load_crop_sets(folders: Sequence[str | os.PathLike], settings: CropSettings,
                   behaviours: Sequence[str] | None = None, pairs: bool = True, max_frames: int | None = None,
                   via_attribute: str | None = None) -> tuple[CropSet, list[LabelledVideo]]:
    """Open every folder, decide the behaviour list (unless given) and extract all crops, joined."""
    videos = [open_labelled_video(f, via_attribute) for f in folders]
    names = [v.name for v in videos]
    if len(set(names)) != len(names):
        # folder names identify videos; make them unique by their parents
        for v, f in zip(videos, folders, strict=True):
            v.name = str(Path(f))
    classes = list(behaviours) if behaviours else behaviour_list(videos)
    sets = [extract_crops(v, classes, settings, pairs=pairs, max_frames=max_frames) for v in videos]
    return CropSet.concat(sets), videos


def _identity(ann: dict) -> int:
    return int(ann.get("identity", ann.get("track_id", 0)))


def _com(ann: dict, shape: tuple[int, ...]) -> tuple[float, float]:
    if "com" in ann:
        return float(ann["com"][0]), float(ann["com"][1])
    from sipec.data.coco import annotation_mask
    from sipec.geometry import center_of_mass

    com = center_of_mass(annotation_mask(ann, shape[0], shape[1]))
    if com is None:
        x, y, w, h = ann["bbox"]
        return x + w / 2.0, y + h / 2.0
    return com


def _subject_key(subject: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in subject.split("+"))
