"""Identities without hand labels on real crossings: 8 zebrafish, `sipec train idnet --from-analysis`.

1. Detections DERIVED by idtracker.ai's own thresholds (as bench_tracker_zebrafish; SegNet not involved), tracked
   by the product's StreamTracker with `animals: 8`, written as a `sipec analyze` result folder (results.parquet
   with masks, summary.json).
2. `sipec train idnet --from-analysis OUT/zebrafish8_A --animals 8` (the CLI, in a subprocess): fragments,
   accumulation, IdNet trained and exported. No hand labels anywhere.
3. The identity pass as the pipeline runs it: IdNet (served by LocalBackend, fixed-size calls) on each tracked
   instance's 2T+1 crops along its track, then the tracker again with those probabilities (identity smoothing
   over `identity_window`, one identity per animal per frame), with each `identity_evidence` setting.
4. The training's fragment labels checked against the reference (does each label stay on one fish?), and the
   identities scored against idtracker.ai's trajectories.csv (a peer's output, not ground truth) by centre
   distance, once by track id (tracking alone) and once by identity.

    python -m bench.bench_identity_zebrafish [--out DIR] [--t 3] [--epochs 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_tracker_zebrafish import DATA, derived_detections
from services.tracker.options import resolve_options
from services.tracker.tracker import StreamTracker
from services.tracker.trajectories import load_trajectories, score_against_trajectories

ROOT = Path(__file__).resolve().parents[1]


def track(frames: list[list], options: dict, identities: dict | None = None, names: list[str] | None = None
          ) -> list[list]:
    """[(frame, det index, track id, identity)] per frame; `identities` {(frame, det index): probabilities}."""
    tracker = StreamTracker(resolve_options(**options))
    out = []
    for f, dets in enumerate(frames):
        ids = [(names, identities[(f, i)]) for i in range(len(dets))] if identities is not None and dets else None
        result = tracker.step(f, dets, ids)
        out.append([(f, t.index, t.track_id, t.identity) for t in result.instances])
    return out


def write_analysis(folder: Path, video: Path, frames: list[list], tracked: list[list]) -> None:
    rows: dict[str, list] = {k: [] for k in ("frame", "track_id", "x1", "y1", "x2", "y2", "com_x", "com_y",
                                               "mask_height", "mask_width", "mask_rle")}
    for per_frame in tracked:
        for f, i, tid, _ in per_frame:
            d = frames[f][i]
            counts = d.rle["counts"]
            for k, v in (("frame", f), ("track_id", tid), ("x1", d.box[0]), ("y1", d.box[1]), ("x2", d.box[2]),
                         ("y2", d.box[3]), ("com_x", d.com[0]), ("com_y", d.com[1]),
                         ("mask_height", int(d.rle["size"][0])), ("mask_width", int(d.rle["size"][1])),
                         ("mask_rle", counts.decode("ascii") if isinstance(counts, bytes) else counts)):
                rows[k].append(v)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), folder / "results.parquet")
    (folder / "summary.json").write_text(json.dumps({"video": str(video.resolve())}))


def identity_probabilities(repo: Path, video: Path, frames: list[list], tracked: list[list]) -> tuple[dict, list]:
    """{(frame, det index): IdNet probabilities}: each tracked instance's 2T+1 crops along its track (untracked
    detections: their own crop repeated), through the exported model as the service calls it."""
    from services.idnet.data import _Builder
    from services.idnet.masking import MaskSettings
    from sipec.data.frames import read_frames
    from sipec.geometry import decode_rle
    from sipec.serving.backends import LocalBackend
    from sipec.serving.batching import DEFAULT_BATCH_SIZE, predict_fixed
    from sipec.serving.repository import ModelRepository

    models = ModelRepository(repo)
    backend = LocalBackend(models, "idnet" if models.versions("idnet") else "idnet-frame")   # T=0: frame model
    try:
        info = backend.metadata().info
        settings, t, names = MaskSettings.from_json(info["masking"]), int(info["t"]), list(info["class_names"])
        b = _Builder(settings)
        keys = []
        for f, image in read_frames(video, range(len(frames))):
            for _, i, tid, _ in tracked[f]:
                d = frames[f][i]
                b.add(image, d.com, decode_rle(d.rle), 0, tid or -(f * 1000 + i + 1), f, 0)
                keys.append((f, i))
        data = b.build(names, [str(video)], "")
        idx = data.sequence_indices(t)
        probs = []
        for start in range(0, len(data), 64):
            batch = np.stack([data.sequence(row, settings) for row in idx[start:start + 64]])
            probs.append(predict_fixed(backend, {"crops": batch}, DEFAULT_BATCH_SIZE).outputs["probabilities"])
    finally:
        backend.close()
    return dict(zip(keys, np.concatenate(probs), strict=True)), names


def label_purity(reference: dict, frames: list[list], tracked: list[list], meta: dict, max_px: float) -> dict:
    """How the fragment labels of the training agree with the reference: each label's animal-frames by reference
    fish (nearest within max_px), and the share that falls on each label's most frequent fish."""
    from collections import Counter

    centre = {(f, tid): frames[f][i].com for per_frame in tracked for f, i, tid, _ in per_frame if tid}
    by_label: dict[int, Counter] = {}
    for track_id, first, last, label in meta["training"]["data"]["fragment_labels"]:
        for f in range(first, last + 1):
            c = centre.get((f, track_id))
            near = [(np.hypot(p[0] - c[0], p[1] - c[1]), fish) for fish, p in reference.get(f, ())] if c else []
            if near and min(near)[0] <= max_px:
                by_label.setdefault(label, Counter())[min(near)[1]] += 1
    total = sum(sum(c.values()) for c in by_label.values())
    agree = sum(max(c.values()) for c in by_label.values())
    fish = [c.most_common(1)[0][0] for c in by_label.values()]
    return {"animal_frames": total, "agreeing": agree / total if total else 0.0,
            "labels": len(by_label), "distinct_fish": len(set(fish))}


def score(reference: dict, frames: list[list], tracked: list[list], by: str, max_px: float) -> dict:
    ids: dict[str, int] = {}
    hyp = {}
    for per_frame in tracked:
        pts = []
        for f, i, tid, identity in per_frame:
            key = tid if by == "track" else (ids.setdefault(identity, len(ids) + 1) if identity else 0)
            pts.append((key, frames[f][i].com))
        if per_frame:
            hyp[per_frame[0][0]] = pts
    return score_against_trajectories(reference, hyp, max_px)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    p.add_argument("--t", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--identity-window", type=int, default=30)
    p.add_argument("--max-px", type=float, default=15.0)
    p.add_argument("--train-args", default="", help="more `sipec train idnet` arguments, one string")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sipec-bench-id-"))
    video = args.data / "zebrafish8_A.avi"
    reference = load_trajectories(args.data / "trajectories.csv")
    frames = derived_detections(video)
    options = {"animals": 8}
    tracked = track(frames, options)
    folder = out / "zebrafish8_A"
    write_analysis(folder, video, frames, tracked)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "sipec", "train", "idnet", "--from-analysis", str(folder), "--animals", "8",
           "--out", str(out / "models"), "--t", str(args.t), "--epochs", str(args.epochs), *args.train_args.split()]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    train_s = time.perf_counter() - t0
    meta = json.loads((out / "models" / ("idnet" if args.t else "idnet-frame") / "1" / "assets" / "sipec.json")
                      .read_text())
    purity = label_purity(reference, frames, tracked, meta, args.max_px)
    data = meta["training"]["data"]
    print(f"fragments {data['fragments']}, global fragments {data['global_fragments']} "
          f"({data['accepted_global_fragments']} accepted), {data['labelled_fragments']} fragments labelled: "
          f"{purity['agreeing']:.4f} of {purity['animal_frames']} labelled animal-frames on their label's fish, "
          f"{purity['labels']} labels on {purity['distinct_fish']} different reference fish", flush=True)
    probs, names = identity_probabilities(out / "models", video, frames, tracked)
    rows = {"tracks (tracker alone)": score(reference, frames, tracked, "track", args.max_px)}
    for evidence in ("apart", "restart", "all"):
        with_ids = track(frames, {**options, "identity_window": args.identity_window,
                                  "identity_evidence": evidence}, probs, names)
        rows[f"identities, identity_evidence {evidence}"] = score(reference, frames, with_ids, "identity", args.max_px)
    print(f"training: {train_s / 60:.1f} min")
    print("| zebrafish A, animals 8 | IDs | frames with all 8 | identity accuracy | IDF1 | IDP | IDR | ID switches "
          "| MOTA | misses | false pos. |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['tracks']} | {r['frames_with_all_animals']} | {r['identity_accuracy']:.3f} "
              f"| {r['idf1']:.3f} | {r['idp']:.3f} | {r['idr']:.3f} | {r['id_switches']} | {r['mota']:.3f} "
              f"| {r['misses']} | {r['false_positives']} |")
    if args.json:
        args.json.write_text(json.dumps({"train_minutes": train_s / 60, "labels": purity,
                                         "accumulation": data["accumulation"], **rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
