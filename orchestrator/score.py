"""Score a `sipec analyze` result against `sipec synth` ground truth, module by module.

`sipec evaluate analysis RESULTS --synth DIR [--frames START:STOP] [--json FILE]`

Every result row and every ground-truth animal of a frame are matched one-to-one by the Hungarian method
on mask IoU (pairs below `--iou` 0.5 do not match). Then:

- segnet: mask AP@0.5 and AP@[.5:.95] by pycocotools' COCOeval (result rows as scored detections),
  precision and recall of the rows at IoU 0.5, mean IoU of the matches;
- tracker: CLEAR MOT and IDF1 of the track ids (sipec.mot), ground-truth tracks being the
  animals' identities; a row without a track (id 0) counts as a one-frame track of its own, linked to nothing, and
  `hyp_tracks` counts the track ids only (`untracked_rows` the others);
- idnet: accuracy of the identity name of every matched row (rows without an identity count as wrong),
  the same accuracy with the predicted names mapped one-to-one onto the true ones (Hungarian on their
  co-occurrence: an IdNet trained without hand labels, `--from-analysis`, names the animals its own way), and
  IDF1 when the identity names are used as track ids;
- posenet: for matched rows and keypoints visible in the ground truth: mean and median error in pixels,
  PCK (fraction within 5 px and within 10% of the animal's box diagonal);
- behavenet: per-frame behaviour accuracy and macro F1 over the behaviours present in the ground truth,
  on matched rows (a social behaviour of the pair channel counts where there is one, as in the ethogram).

Only the modules whose columns the result has are scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_IOU = 0.5


def score_analysis(results: Path, synth: Path, frames: tuple[int, int | None] = (0, None),
                   iou_threshold: float = DEFAULT_IOU) -> dict[str, Any]:
    """Scores (see the module doc) of the results folder or results.parquet `results` on synth folder `synth`."""
    import pyarrow.parquet as pq
    from pycocotools import mask as mask_utils
    from scipy.optimize import linear_sum_assignment

    from sipec.geometry import Region
    from sipec.mot import MotAccumulator
    from sipec.synth.reader import SynthDataset

    path = results / "results.parquet" if results.is_dir() else results
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results table (run `sipec analyze` first)")
    df = pq.read_table(path).to_pandas()
    cols = set(df.columns)
    kp_names = sorted({c[3:-2] for c in cols if c.startswith("kp_") and c.endswith("_x")})
    has_id = "identity" in cols and df["identity"].notna().any()
    has_beh = "behaviour" in cols
    start, stop = frames
    out: dict[str, Any] = {"results": str(path), "synth": str(synth), "iou_threshold": iou_threshold}
    with SynthDataset(synth) as ds:
        stop = ds.num_frames if stop is None else min(stop, ds.num_frames)
        out["frames"] = [start, stop]
        by_frame = {int(f): g for f, g in df.groupby("frame")}
        mot = MotAccumulator(iou_threshold)
        mot_id = MotAccumulator(iou_threshold) if has_id else None
        gt_coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "animal"}]}
        dets: list[dict[str, Any]] = []
        ious: list[float] = []
        n_gt = n_hyp = 0
        tracked: set[int] = set()
        untracked = 0
        id_right = id_total = 0
        id_pairs: Counter = Counter()   # (true name, predicted name) of each matched row
        kp_err: list[float] = []
        kp_diag: list[float] = []
        beh_true: list[str] = []
        beh_pred: list[str] = []
        for f in range(start, stop):
            gts = ds.instances(f)
            rows = by_frame.get(f)
            rows = rows.to_dict("records") if rows is not None else []
            gt_coco["images"].append({"id": f + 1, "height": ds.height, "width": ds.width})
            gt_rles = []
            for g in gts:
                rle = {"size": g.rle["size"], "counts": g.rle["counts"].encode("ascii")
                       if isinstance(g.rle["counts"], str) else g.rle["counts"]}
                gt_rles.append(rle)
                x1, y1, x2, y2 = g.box
                gt_coco["annotations"].append({"id": len(gt_coco["annotations"]) + 1, "image_id": f + 1,
                                               "category_id": 1, "segmentation": rle, "area": float(g.area),
                                               "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
            hyp_rles = [{"size": [int(r["mask_height"]), int(r["mask_width"])], "counts": r["mask_rle"].encode()}
                        for r in rows]
            for r, rle in zip(rows, hyp_rles, strict=True):
                dets.append({"image_id": f + 1, "category_id": 1, "segmentation": rle, "score": float(r["score"])})
            n_gt += len(gts)
            n_hyp += len(rows)
            iou = (np.asarray(mask_utils.iou(hyp_rles, gt_rles, [0] * len(gt_rles)), dtype=float).T
                   if gts and rows else np.zeros((len(gts), len(rows))))
            gi, hi = linear_sum_assignment(-iou) if iou.size else ([], [])
            pairs = [(g, h) for g, h in zip(gi, hi, strict=True) if iou[g, h] >= iou_threshold]
            ious += [float(iou[g, h]) for g, h in pairs]

            def det(rle: dict, box: tuple[float, ...]) -> Region:
                return Region(tuple(float(v) for v in box), rle)

            gt_dets = [(g.identity, det(rle, g.box)) for g, rle in zip(gts, gt_rles, strict=True)]
            hyp_dets = [det(rle, (r["x1"], r["y1"], r["x2"], r["y2"])) for r, rle in zip(rows, hyp_rles, strict=True)]
            hyps = []
            for r, d in zip(rows, hyp_dets, strict=True):
                if int(r["track_id"] or 0) > 0:
                    tracked.add(int(r["track_id"]))
                    hyps.append((int(r["track_id"]), d))
                else:   # an instance without a track links to nothing: an id of its own
                    untracked += 1
                    hyps.append((-untracked, d))
            mot.update(gt_dets, hyps)
            if mot_id is not None:
                named = [(r["identity"], d) for r, d in zip(rows, hyp_dets, strict=True) if r.get("identity")]
                if len({n for n, _ in named}) == len(named):
                    mot_id.update(gt_dets, named)
            for g, h in pairs:
                truth, row = gts[g], rows[h]
                if has_id:
                    id_total += 1
                    id_right += int(row.get("identity") == truth.identity_name)
                    ident = row.get("identity")   # NaN (a float) for a row without an identity
                    id_pairs[(truth.identity_name, ident if isinstance(ident, str) else "")] += 1
                if kp_names:
                    diag = float(np.hypot(truth.box[2] - truth.box[0], truth.box[3] - truth.box[1]))
                    names = ds.keypoint_names
                    for k, name in enumerate(names):
                        x, y = row.get(f"kp_{name}_x"), row.get(f"kp_{name}_y")
                        if name not in kp_names or truth.keypoints[k, 2] < 1 or x is None or not np.isfinite(x):
                            continue
                        kp_err.append(float(np.hypot(x - truth.keypoints[k, 0], y - truth.keypoints[k, 1])))
                        kp_diag.append(diag)
                if has_beh:
                    social = row.get("social_behaviour")
                    pred = social if isinstance(social, str) and social else row.get("behaviour")
                    beh_true.append(truth.behaviour)
                    beh_pred.append(str(pred))
        seg = _coco_mask_ap(gt_coco, dets)
        seg.update(precision=len(ious) / n_hyp if n_hyp else 0.0, recall=len(ious) / n_gt if n_gt else 0.0,
                   mean_iou=float(np.mean(ious)) if ious else 0.0, gt_instances=n_gt, detections=n_hyp)
        out["segnet"] = seg
        # tracks: the track ids the analysis gave (rows without a track are not tracks)
        out["tracker"] = {**mot.result().to_dict(), "hyp_tracks": len(tracked), "untracked_rows": untracked}
        if has_id:
            mapped, mapping = _mapped_accuracy(id_pairs, id_total)
            out["idnet"] = {"accuracy": id_right / id_total if id_total else 0.0, "matched": id_total,
                            "accuracy_names_mapped": mapped, "names_mapped": mapping,
                            **({"idf1_by_identity": mot_id.result().idf1} if mot_id is not None else {})}
        if kp_names:
            err, diag = np.asarray(kp_err), np.asarray(kp_diag)
            out["posenet"] = {"keypoints": len(err), "mean_error_px": float(err.mean()) if err.size else None,
                              "median_error_px": float(np.median(err)) if err.size else None,
                              "pck_5px": float((err <= 5).mean()) if err.size else None,
                              "pck_0.1_diag": float((err <= 0.1 * diag).mean()) if err.size else None}
        if has_beh:
            out["behavenet"] = _behaviour_scores(beh_true, beh_pred)
    return out


def _coco_mask_ap(gt: dict[str, Any], dets: list[dict[str, Any]]) -> dict[str, float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not dets or not gt["annotations"]:
        return {"map50": 0.0, "map50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50": float(ev.stats[1]), "map50_95": float(ev.stats[0])}


def _mapped_accuracy(pairs: Counter, total: int) -> tuple[float, dict[str, str]]:
    """Accuracy of the identities under the one-to-one mapping of predicted names onto true names that agrees on
    the most rows (Hungarian on the co-occurrence counts; unnamed rows stay wrong), and that mapping."""
    from scipy.optimize import linear_sum_assignment

    truths = sorted({t for t, _ in pairs})
    preds = sorted({p for _, p in pairs if p})
    if not total or not truths or not preds:
        return 0.0, {}
    counts = np.array([[pairs.get((t, p), 0) for p in preds] for t in truths], dtype=np.int64)
    rows, cols = linear_sum_assignment(-counts)
    kept = [(r, c) for r, c in zip(rows, cols, strict=True) if counts[r, c] > 0]
    return float(sum(counts[r, c] for r, c in kept)) / total, {preds[c]: truths[r] for r, c in kept}


def _behaviour_scores(truth: list[str], pred: list[str]) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    if not truth:
        return {"frames": 0, "accuracy": 0.0, "macro_f1": 0.0}
    labels = sorted(set(truth))
    per = f1_score(truth, pred, labels=labels, average=None, zero_division=0)
    return {"frames": len(truth), "accuracy": float(np.mean(np.asarray(truth) == np.asarray(pred))),
            "macro_f1": float(np.mean(per)), "f1": {k: round(float(v), 4) for k, v in zip(labels, per, strict=True)}}


def format_scores(s: dict[str, Any]) -> list[str]:
    """One line per module."""
    lines = []
    seg = s["segnet"]
    lines.append(f"segnet     mask AP@0.5 {seg['map50']:.3f}  AP@[.5:.95] {seg['map50_95']:.3f}  "
                 f"precision {seg['precision']:.3f}  recall {seg['recall']:.3f}  mean IoU {seg['mean_iou']:.3f}")
    t = s["tracker"]
    lines.append(f"tracker    MOTA {t['mota']:.3f}  IDF1 {t['idf1']:.3f}  identity switches {t['id_switches']}  "
                 f"({t['gt_tracks']} animals, {t['hyp_tracks']} tracks)")
    if "idnet" in s:
        i = s["idnet"]
        extra = f"  IDF1 by identity {i['idf1_by_identity']:.3f}" if "idf1_by_identity" in i else ""
        if "accuracy_names_mapped" in i and i["accuracy_names_mapped"] > i["accuracy"]:
            extra = f" ({i['accuracy_names_mapped']:.3f} with its names mapped onto the true ones){extra}"
        lines.append(f"idnet      identity accuracy {i['accuracy']:.3f} on {i['matched']} matched animals{extra}")
    if "posenet" in s and s["posenet"]["keypoints"]:
        p = s["posenet"]
        lines.append(f"posenet    keypoint error mean {p['mean_error_px']:.1f} px, median {p['median_error_px']:.1f} px"
                     f"  PCK@5px {p['pck_5px']:.3f}  PCK@0.1diag {p['pck_0.1_diag']:.3f}")
    if "behavenet" in s:
        b = s["behavenet"]
        lines.append(f"behavenet  accuracy {b['accuracy']:.3f}  macro F1 {b['macro_f1']:.3f} on {b['frames']} "
                     "animal-frames")
    return lines


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analysis", help="score a `sipec analyze` result against `sipec synth` ground truth",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="a video's result folder (with results.parquet) or the table")
    p.add_argument("--synth", type=Path, required=True, help="the `sipec synth` folder of the analysed video")
    p.add_argument("--frames", default=":", metavar="START:STOP", help="score only these frames (default all)")
    p.add_argument("--iou", type=float, default=DEFAULT_IOU, help="mask IoU of a match (default 0.5)")
    p.add_argument("--json", type=Path, help="write the scores here")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sipec.cli import CliError

    try:
        a, _, b = args.frames.partition(":")
        frames = (int(a) if a else 0, int(b) if b else None)
    except ValueError:
        raise CliError(f"--frames: expected START:STOP, not {args.frames!r}") from None
    if not args.synth.is_dir() or not (args.synth / "summary.json").is_file():
        raise CliError(f"--synth: {args.synth}: not a `sipec synth` folder (no summary.json)")
    try:
        scores = score_analysis(args.results, args.synth, frames, args.iou)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    for line in format_scores(scores):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(scores, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
