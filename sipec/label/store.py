"""The labels of a `sipec label` session on disk: every change is written atomically at once.

LABELS_DIR holds the video (a symlink to it, or a copy where links are not possible) and:

- identity mode: ``identities.csv`` (:mod:`sipec.data.labels` identity CSV; `sipec train idnet --data LABELS_DIR`);
  it is the record itself: on restart its rows are matched back to the masks (same frame, track and mask box);
- behaviour mode: ``behaviour-bouts.json`` (the bouts as marked: the record), and derived from it after every
  change ``behaviour.csv`` (:mod:`sipec.data.labels` behaviour CSV, one row per labelled animal per frame it is
  seen in) and ``annotations.json`` (COCO masks of the labelled frames, ``identity`` = track id), the folder
  layout `sipec train behavenet --data LABELS_DIR` reads. The animal of a bout is a track: its ``identity`` in
  the CSV is the track id.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from pycocotools import mask as mask_utils

from sipec.data.atomic import atomic_path, write_text_atomic
from sipec.data.coco import CocoInstances, image_entry, make_category, write_coco_instances
from sipec.data.labels import (
    NO_PARTNER,
    read_behaviour_csv,
    read_identity_csv,
    write_behaviour_csv,
    write_identity_csv,
)
from sipec.label.results import Instance, Results

IDENTITY_CSV = "identities.csv"
BEHAVIOUR_CSV = "behaviour.csv"
BOUTS_JSON = "behaviour-bouts.json"
ANNOTATIONS = "annotations.json"


def link_video(out_dir: Path, video: Path) -> str:
    """Put the video into `out_dir` (symlink, else copy) under its own name; return that name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / video.name
    if target.exists():
        copied = not target.is_symlink() and target.stat().st_size == video.stat().st_size
        if copied or os.path.samefile(target, video):
            return video.name
        raise ValueError(f"{target}: exists and is not {video}; use another --out folder")
    if target.is_symlink():  # dangling link of an earlier session
        target.unlink()
    try:
        target.symlink_to(video.resolve())
    except OSError:
        with atomic_path(target) as tmp:
            shutil.copyfile(video, tmp)
    return video.name


def mask_box(inst: Instance) -> tuple[float, float, float, float]:
    """Tight box of the instance's mask (x2, y2 exclusive), the results box when it has no mask."""
    if inst.rle is None:
        return inst.box
    x, y, w, h = (float(v) for v in mask_utils.toBbox(_rle_bytes(inst.rle)))
    return x, y, x + w, y + h


def _rle_bytes(rle: dict) -> dict:
    return {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}


class IdentityStore:
    """Identity (index into `names`) of labelled masks; identities.csv rewritten on every change."""

    def __init__(self, out_dir: str | os.PathLike, video: str, names: list[str], results: Results) -> None:
        self.path = Path(out_dir) / IDENTITY_CSV
        self.video = video
        self.names = list(names)
        self.results = results
        self.labels: dict[str, int] = {}
        self.foreign: list[dict] = []   # rows of the CSV that match no mask of these results: kept as they are
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        df = read_identity_csv(self.path)
        for r in df.itertuples(index=False):
            if 0 <= r.identity < len(self.names) and self.names[r.identity] != r.identity_name:
                raise ValueError(f"{self.path}: identity {r.identity} is {r.identity_name!r} there but "
                                 f"{self.names[r.identity]!r} in --names; give the same names in the same order")
            if r.identity >= len(self.names):
                raise ValueError(f"{self.path}: identity {r.identity} ({r.identity_name}) is not in --names "
                                 f"({', '.join(self.names)})")
            inst = self._match(r) if r.video == self.video else None
            if inst is None:
                self.foreign.append(r._asdict())
            else:
                self.labels[inst.key] = int(r.identity)

    def _match(self, r) -> Instance | None:
        for inst in self.results.instances(int(r.frame)):
            if inst.track_id == int(r.track_id) and all(
                    abs(a - float(b)) <= 0.051 for a, b in zip(mask_box(inst), (r.x1, r.y1, r.x2, r.y2), strict=True)):
                return inst
        return None

    def assign(self, key: str, identity: int | None) -> None:
        """Label mask `key` with identity index `identity` (None: remove its label) and save."""
        if self.results.get(key) is None:
            raise KeyError(f"no mask {key!r} in {self.results.path}")
        if identity is None:
            self.labels.pop(key, None)
        else:
            if not 0 <= int(identity) < len(self.names):
                raise ValueError(f"identity {identity} outside 0..{len(self.names) - 1}")
            self.labels[key] = int(identity)
        self.save()

    def rows(self) -> list[dict]:
        out = list(self.foreign)
        for key in sorted(self.labels, key=lambda k: tuple(int(p) for p in k.split(":"))):
            inst = self.results.get(key)
            assert inst is not None
            x1, y1, x2, y2 = mask_box(inst)
            ident = self.labels[key]
            out.append({"video": self.video, "frame": inst.frame, "track_id": inst.track_id, "identity": ident,
                        "identity_name": self.names[ident], "x1": x1, "y1": y1, "x2": x2, "y2": y2})
        return sorted(out, key=lambda r: (r["video"], r["frame"], r["track_id"]))

    def save(self) -> None:
        write_identity_csv(self.path, self.rows())


@dataclass
class Bout:
    id: int
    track_id: int
    start: int      # first frame
    end: int        # last frame (inclusive)
    behaviour: str


class BehaviourStore:
    """Bouts per track; behaviour-bouts.json, behaviour.csv and annotations.json rewritten on every change."""

    def __init__(self, out_dir: str | os.PathLike, video: str, behaviours: list[str], results: Results) -> None:
        self.dir = Path(out_dir)
        self.video = video
        self.behaviours = list(behaviours)
        self.results = results
        self.tracks = results.tracks()
        names = results.track_names()
        self.track_names = {t: names.get(t) or f"track_{t}" for t in self.tracks}
        self.bouts: list[Bout] = []
        if (self.dir / BOUTS_JSON).is_file():
            raw = json.loads((self.dir / BOUTS_JSON).read_text(encoding="utf-8"))
            self.bouts = [Bout(**b) for b in raw.get("bouts", [])]
        elif (self.dir / BEHAVIOUR_CSV).is_file():
            self.bouts = self._import_csv()
        unknown = sorted({b.behaviour for b in self.bouts} - set(self.behaviours))
        if unknown:
            raise ValueError(f"{self.dir}: labels hold behaviours {', '.join(unknown)} that are not in "
                             f"--behaviours ({', '.join(self.behaviours)})")
        if self.bouts:
            self.save()  # the derived files follow the record even if a previous run stopped between writes

    def _import_csv(self) -> list[Bout]:
        """Bouts from a behaviour CSV alone: runs of one behaviour over consecutive frames a track is seen in."""
        df = read_behaviour_csv(self.dir / BEHAVIOUR_CSV)
        df = df[df.video == self.video].sort_values(["identity", "frame"])
        bouts: list[Bout] = []
        for track, group in df.groupby("identity", sort=True):
            seen = {f: i for i, f in enumerate(self.tracks.get(int(track), []))}
            prev = None
            for r in group.itertuples(index=False):
                pos = seen.get(int(r.frame))
                if (prev is not None and pos is not None and pos == prev + 1
                        and bouts[-1].behaviour == r.behaviour):
                    bouts[-1].end = int(r.frame)
                else:
                    bouts.append(Bout(len(bouts) + 1, int(track), int(r.frame), int(r.frame), str(r.behaviour)))
                prev = pos
        return bouts

    def add(self, track_id: int, start: int, end: int, behaviour: str) -> Bout:
        if track_id not in self.tracks:
            raise KeyError(f"no track {track_id} in {self.results.path}")
        if behaviour not in self.behaviours:
            raise ValueError(f"unknown behaviour {behaviour!r}; expected one of {', '.join(self.behaviours)}")
        start, end = sorted((int(start), int(end)))
        if start < 0:
            raise ValueError("frames must be >= 0")
        bout = Bout(max((b.id for b in self.bouts), default=0) + 1, int(track_id), start, end, behaviour)
        self.bouts.append(bout)
        self.save()
        return bout

    def delete(self, bout_id: int) -> None:
        before = len(self.bouts)
        self.bouts = [b for b in self.bouts if b.id != int(bout_id)]
        if len(self.bouts) == before:
            raise KeyError(f"no bout {bout_id}")
        self.save()

    def frame_labels(self) -> dict[tuple[int, int], str]:
        """(track, frame) -> behaviour for every frame a labelled track is seen in; a later bout wins."""
        out: dict[tuple[int, int], str] = {}
        for b in self.bouts:
            for f in self.tracks.get(b.track_id, []):
                if b.start <= f <= b.end:
                    out[(b.track_id, f)] = b.behaviour
        return out

    def rows(self) -> list[dict]:
        return [{"video": self.video, "frame": f, "identity": t, "identity_name": self.track_names[t],
                 "behaviour": beh, "partner": NO_PARTNER, "partner_name": ""}
                for (t, f), beh in sorted(self.frame_labels().items(), key=lambda kv: (kv[0][1], kv[0][0]))]

    def coco(self) -> CocoInstances:
        """COCO masks of every frame that has a label (all masks of the frame), identity = track id."""
        frames = sorted({f for (_, f) in self.frame_labels()})
        images, anns = [], []
        shape = self.results.mask_shape() or (0, 0)
        for f in frames:
            images.append(image_entry(f + 1, shape[1], shape[0], f"{self.video}#{f}", frame_index=f,
                                      video=self.video))
            for inst in self.results.instances(f):
                if inst.rle is None:
                    continue
                rle = _rle_bytes(inst.rle)
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                ann = {"id": len(anns) + 1, "image_id": f + 1, "category_id": 1, "segmentation": dict(inst.rle),
                       "area": int(mask_utils.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0,
                       "track_id": inst.track_id, "identity": inst.track_id,
                       "identity_name": self.track_names.get(inst.track_id, f"track_{inst.track_id}")}
                if inst.com is not None:
                    ann["com"] = [inst.com[0], inst.com[1]]
                anns.append(ann)
        return CocoInstances(images=images, annotations=anns, categories=[make_category(1, "animal")],
                             info={"description": f"sipec label: masks of the labelled frames of {self.video}"})

    def save(self) -> None:
        record = {"video": self.video, "behaviours": self.behaviours, "bouts": [asdict(b) for b in self.bouts]}
        write_text_atomic(self.dir / BOUTS_JSON, json.dumps(record, indent=1))
        write_behaviour_csv(self.dir / BEHAVIOUR_CSV, self.rows())
        write_coco_instances(self.dir / ANNOTATIONS, self.coco())
