"""Tracker figures: identity switches and IDF1 (flies clip, synth with occluders), 3D RMSE from one camera,
and Track throughput in-process vs over gRPC.

Tracking input is the ground truth's own masks with ids removed and order shuffled ("oracle
detections": the score is the tracker's, not SegNet's). Identities are SIMULATED IdNet output (true
identity, wrong in bursts, 80% per-frame accuracy) until a trained IdNet exists. Every row has an
equivalent `sipec evaluate tracker` / `sipec evaluate depth3d` command, printed with the tables.

    .venv/bin/python -m bench.bench_tracker
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import table

ROOT = Path(__file__).resolve().parent.parent
FLIES = ROOT.parent / "shared" / "data" / "sleap-flies-clip"
ACCURACY, BURST = 0.8, 5.0
# (label, options, simulated IdNet?)
PAPER = {"matching": "greedy", "motion": "none"}
CONFIGS = [
    ("mask tracking alone (the paper: greedy, no motion)", PAPER, False),
    ("mask tracking alone (Hungarian, no motion)", {"matching": "hungarian", "motion": "none"}, False),
    ("mask tracking + distance stage (40 px)", {**PAPER, "max_distance": 40.0}, False),
    ("Kalman motion, Hungarian (default)", {}, False),
    ("Kalman motion, Hungarian, known number of animals", {"animals": -1}, False),
    ("+ simulated IdNet, no smoothing (window 1)", {"identity_window": 1}, True),
    ("+ simulated IdNet, smoothed over 15 frames", {"identity_window": 15}, True),
    ("+ simulated IdNet, smoothed over 30 frames (default)", {"identity_window": 30}, True),
    ("+ simulated IdNet, smoothed over 60 frames", {"identity_window": 60}, True),
]


def _tracking_rows(gt, cli_gt: str, extra: str = "") -> list[list[str]]:
    from services.tracker.options import TrackerOptions
    from services.tracker.run_tracking import score_tracks, track_ground_truth
    from services.tracker.simulated_idnet import SimulatedIdNet

    rows = []
    for label, opts, simulated in CONFIGS:
        idnet = SimulatedIdNet(gt.identity_names, ACCURACY, BURST, seed=0) if simulated else None
        t0 = time.perf_counter()
        if opts.get("animals") == -1:   # the ground truth's number of animals
            opts = {**opts, "animals": len(gt.identity_names)}
        tracked = track_ground_truth(gt, replace(TrackerOptions(), **opts), idnet, seed=0)
        seconds = time.perf_counter() - t0
        s = score_tracks(gt, tracked)
        r = s.identities if simulated else s.tracks
        flags = [f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                 for k, v in opts.items()]
        if simulated:
            flags.append(f"--simulated-idnet-accuracy {ACCURACY}")
        command = " ".join(["sipec evaluate tracker --gt", cli_gt + extra, *flags])
        rows.append([label, "identity names" if simulated else "track ids", r.id_switches, f"{r.idf1:.4f}",
                     f"{r.mota:.4f}", f"{s.identity_accuracy:.4f}" if simulated else "-", r.hyp_tracks,
                     f"{len(gt.frames) / seconds:.0f}", f"`{command}`"])
    return rows


TRACK_HEADER = ["tracker", "hypotheses", "ID switches", "IDF1", "MOTA", "identity accuracy", "tracks",
                "frames/s", "command"]


def _depth_section(tmp: Path) -> str:
    from services.tracker import depth3d
    from services.tracker.data import load_positions
    from sipec.synth.config import SynthConfig
    from sipec.synth.pipeline import generate

    out = {}
    for seed in (0, 1):
        out[seed] = tmp / f"persp{seed}"
        generate(SynthConfig(animals=4, frames=1000, seed=seed, camera="perspective"), out[seed])
    data = load_positions(out[0] / "positions_3d.csv")
    t0 = time.perf_counter()
    cv = depth3d.cross_validate(data.area_uv, data.xyz, folds=10)
    cv_s = time.perf_counter() - t0
    held = load_positions(out[1] / "positions_3d.csv")
    params = depth3d.fit(data.area_uv, data.xyz)
    other = depth3d.rmse_per_axis(depth3d.predict(params, held.area_uv), held.xyz)
    other_mean = depth3d.rmse_per_axis(np.broadcast_to(data.xyz.mean(axis=0), held.xyz.shape), held.xyz)
    room = np.asarray(data.room)
    spread = data.xyz.max(axis=0) - data.xyz.min(axis=0)

    def row(name, r):
        return [name] + [f"{100 * r[i]:.1f} cm ({100 * r[i] / room[i]:.1f}%)" for i in range(3)]

    rows = [row("depth3d (Isomap 6 + OLS), 10-fold CV", cv.rmse),
            row("OLS on 1/sqrt(a), a, u, v only, 10-fold CV", cv.rmse_ols_only),
            row("mean position (trivial baseline), 10-fold CV", cv.rmse_mean),
            row("depth3d trained on seed 0, tested on seed 1 (other video)", other),
            row("mean position of seed 0, tested on seed 1", other_mean)]
    return (f"#### 3D position from one camera (`sipec synth --camera perspective`, 4 animals, 1000 frames)\n\n"
            f"{cv.rows} visible instances (room floor {room[0]} x {room[1]} m, wall height {room[2]} m; true "
            f"ranges x {spread[0]:.2f}, y {spread[1]:.2f}, z {spread[2]:.3f} m). RMSE per axis and, in brackets, "
            f"relative to the room dimension (x: floor width, y: floor depth, z: wall height). Folds are contiguous "
            f"blocks of frames. 10-fold CV took {cv_s:.0f} s. Commands: `sipec synth --out P --animals 4 --frames "
            f"1000 --seed 0 --camera perspective`, then `sipec evaluate depth3d --positions P/positions_3d.csv` "
            f"(and `sipec train depth3d --positions P/positions_3d.csv --out REPO`, `sipec evaluate depth3d "
            f"--positions P1/positions_3d.csv --model-repo REPO` for the last two rows, P1 made with --seed 1).\n\n"
            + table(["method", "x", "y", "z"], rows) + "\n")


def _throughput(gt, tmp: Path, frames: int = 600) -> str:
    """StreamTracker.step in-process vs the same frames through a `sipec serve tracker` Track stream."""
    from services.tracker.options import TrackerOptions
    from services.tracker.tracker import StreamTracker
    from sipec.api.convert import InstanceData, instance_to_proto
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.process import spawn_sipec
    from sipec.v1 import common_pb2, tracker_pb2, tracker_pb2_grpc

    fr = gt.frames[:frames]
    t0 = time.perf_counter()
    tracker = StreamTracker(TrackerOptions())
    for f in fr:
        tracker.step(f.frame, [d for _, d in f.objects])
    local = len(fr) / (time.perf_counter() - t0)
    reqs = []
    for f in fr:
        req = tracker_pb2.TrackRequest(frame=common_pb2.FrameRef(index=f.frame))
        for _, d in f.objects:
            req.instances.append(instance_to_proto(InstanceData(box=d.box, rle=d.rle, com=d.com)))
        reqs.append(req)
    (tmp / "empty-repo").mkdir()
    proc, port = spawn_sipec(["serve", "tracker", "--model-repo", str(tmp / "empty-repo"), "--port", "0"],
                             ready=r"tracker: serving on port (\d+)")
    try:
        channel = make_channel(f"localhost:{port}")
        wait_for_serving(channel, "sipec.v1.Tracker", timeout_s=60)
        stub = tracker_pb2_grpc.TrackerStub(channel)
        list(stub.Track(iter(reqs[:20]), timeout=60))                  # warm-up
        t0 = time.perf_counter()
        out = list(stub.Track(iter(reqs), timeout=300))
        remote = len(fr) / (time.perf_counter() - t0)
        assert len(out) == len(fr) and not any(r.HasField("error") for r in out)
        channel.close()
    finally:
        proc.terminate()
        proc.wait(30)
    n = sum(len(f.objects) for f in fr) / len(fr)
    return table(["path", "frames/s", "ratio"],
                 [["StreamTracker.step in-process", f"{local:.0f}", "1.00"],
                  ["Track stream over gRPC (localhost, one stream)", f"{remote:.0f}", f"{remote / local:.2f}"]]) + \
        f"\n\n{len(fr)} frames of the synth video above, {n:.0f} instances per frame (RLE masks at 640x480).\n"


def run() -> str:
    from services.tracker.data import load_ground_truth
    from sipec.synth.config import SynthConfig
    from sipec.synth.pipeline import generate

    parts = ["### Tracker: identity switches, IDF1, 3D from one camera\n",
             "Detections are the ground truth's own masks, ids removed and order shuffled per frame (oracle "
             "detections: the figures measure the tracker, not SegNet). **Identities are SIMULATED IdNet output**, "
             f"not IdNet: the true identity, wrong in bursts (mean {BURST:.0f} frames) at {ACCURACY:.0%} per-frame "
             "accuracy, calibrated probabilities; figures with the trained IdNet are pending the IdNet model. "
             "Hypotheses are track ids for mask tracking alone and the assigned identity names with identities. "
             "Command for all: `.venv/bin/python -m bench.bench_tracker`.\n"]
    with tempfile.TemporaryDirectory(prefix="sipec-bench-tracker-") as tmpdir:
        tmp = Path(tmpdir)
        if FLIES.is_dir():
            t0 = time.perf_counter()
            flies = load_ground_truth(FLIES)
            load_s = time.perf_counter() - t0
            parts.append(f"#### sleap-flies-clip: 2 flies, 1500 frames, masks DERIVED by thresholding\n\n"
                         f"Masks derived from the frames (`sipec.data.flies`, {load_s:.0f} s for the clip), "
                         "identities as labelled in clip.slp.\n\n"
                         + table(TRACK_HEADER, _tracking_rows(flies, "../shared/data/sleap-flies-clip")) + "\n")
        else:
            parts.append(f"#### sleap-flies-clip\n\nSKIPPED: {FLIES} not found.\n")
        synth = tmp / "top4"
        summary = generate(SynthConfig(animals=4, frames=2000, seed=3), synth)
        counts = summary["counts"]
        gt = load_ground_truth(synth)
        parts.append("#### `sipec synth --out S --animals 4 --frames 2000 --seed 3`: shelter, feeder, platform\n\n"
                     f"640x480, 30 fps. {counts['occluded_instances']} of {counts['instances']} instances are more "
                     "than 5% occluded (by objects or other animals); an animal resting in the shelter stays visible "
                     "only as a sliver of 1 to 80 pixels that jumps between frames.\n\n"
                     + table(TRACK_HEADER, _tracking_rows(gt, "S")) + "\n")
        step = 4
        sub = replace(gt, frames=gt.frames[::step])
        parts.append(f"Same video, every {step}th frame (7.5 fps: animals move further between frames):\n\n"
                     + table(TRACK_HEADER, _tracking_rows(sub, "S", f" --frame-step {step}")) + "\n")
        parts.append("#### Track throughput\n\n" + _throughput(gt, tmp))
        parts.append(_depth_section(tmp))
    return "\n".join(parts)


if __name__ == "__main__":
    t0 = time.time()
    print(run())
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
