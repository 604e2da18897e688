"""The tracker alone on real crossings: 8 zebrafish, detections DERIVED by idtracker.ai's own thresholds.

Each frame of ../shared/data/idtrackerai-zebrafish-A/zebrafish8_A.avi is segmented as idtracker.ai segments it
(pixels at or below intensity 155 are fish, blobs of 150..60000 px; a blob of two touching fish is one detection,
as a detector's would be), the blobs go through the product's StreamTracker with each option set, and the tracks
are scored against idtracker.ai's trajectories.csv (a peer's output, not ground truth) by centre distance.

    python -m bench.bench_tracker_zebrafish [--data DIR] [--max-px 15] [--json OUT]

SegNet is not involved: this measures association (motion, gates, known number of animals) on real motion with a
detector that merges animals at crossings. Prints a markdown table; the tracker's frames/s are measured too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from services.tracker.detections import detection_from_rle
from services.tracker.options import resolve_options
from services.tracker.tracker import StreamTracker
from services.tracker.trajectories import load_trajectories, score_against_trajectories
from sipec.geometry import encode_rle

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "idtrackerai-zebrafish-A"
INTENSITY_MAX, AREA_MIN, AREA_MAX = 155, 150, 60000      # idtracker.ai's parameters for this video (README.txt)

SETTINGS = [
    ("paper: greedy mask IoU", {"matching": "greedy", "motion": "none"}),
    ("paper + distance 40 px", {"matching": "greedy", "motion": "none", "max_distance": 40.0}),
    ("kalman, greedy", {"matching": "greedy"}),
    ("kalman, hungarian (default)", {}),
    ("kalman, greedy, animals 8", {"matching": "greedy", "animals": 8}),
    ("kalman, hungarian, animals 8", {"animals": 8}),
]


def derived_detections(video: Path) -> list[list]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        fish = (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) <= INTENSITY_MAX).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fish, connectivity=8)
        dets = []
        for k in range(1, n):
            if AREA_MIN <= stats[k, cv2.CC_STAT_AREA] <= AREA_MAX:
                dets.append(detection_from_rle(len(dets), encode_rle(labels == k)))
        frames.append(dets)
    cap.release()
    return frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--max-px", type=float, default=15.0, help="a track matches a reference fish within this distance")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    reference = load_trajectories(args.data / "trajectories.csv")
    t0 = time.perf_counter()
    frames = derived_detections(args.data / "zebrafish8_A.avi")
    seg_s = time.perf_counter() - t0
    counts = [len(d) for d in frames]
    print(f"zebrafish A: {len(frames)} frames, derived blobs per frame: median {int(np.median(counts))}, "
          f"8 in {sum(c == 8 for c in counts)} frames ({seg_s:.1f} s to segment)")
    rows = []
    for name, options in SETTINGS:
        tracker = StreamTracker(resolve_options(**options))
        tracks: dict[int, list] = {}
        t0 = time.perf_counter()
        for f, dets in enumerate(frames):
            result = tracker.step(f, dets)
            tracks[f] = [(t.track_id, dets[t.index].com) for t in result.instances]
        seconds = time.perf_counter() - t0
        score = score_against_trajectories(reference, tracks, args.max_px)
        lengths = {}
        for pts in tracks.values():
            for t, _ in pts:
                if t:
                    lengths[t] = lengths.get(t, 0) + 1
        rows.append({"setting": name, "options": options, **score, "median_track_frames": float(np.median(
            list(lengths.values()))) if lengths else 0.0, "tracker_fps": len(frames) / seconds})
    print("| tracker | tracks (8 fish) | median track (frames) | frames with all 8 | IDF1 | ID switches | MOTA "
          "| tracker frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['tracks']} | {r['median_track_frames']:.0f} | {r['frames_with_all_animals']} "
              f"| {r['idf1']:.3f} | {r['id_switches']} | {r['mota']:.3f} | {r['tracker_fps']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
