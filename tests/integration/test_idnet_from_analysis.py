"""`sipec train idnet --from-analysis`: IdNet from a tracked video, no hand labels.

The analysis is the product's tracker (`animals: 2`) run on a `sipec synth` video's ground-truth masks, written as
a `sipec analyze` result; the synth identities are used only to check the labels the accumulation gave.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from services.tracker.detections import detection_from_rle
from services.tracker.options import resolve_options
from services.tracker.tracker import StreamTracker
from sipec.synth.reader import SynthDataset

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _sipec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sipec", *args], cwd=ROOT, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    d = tmp_path_factory.mktemp("from-analysis")
    _sipec("synth", "--out", str(d / "synth"), "--animals", "2", "--frames", "120", "--size", "320x240", "--seed", "3",
           "--quiet")
    ds = SynthDataset(d / "synth")
    tracker = StreamTracker(resolve_options(animals=2))
    cols: dict[str, list] = {k: [] for k in ("frame", "track_id", "x1", "y1", "x2", "y2", "com_x", "com_y",
                                               "mask_height", "mask_width", "mask_rle")}
    truth = {}
    for f in range(len(ds)):
        insts = ds.instances(f)
        dets = [detection_from_rle(i, dict(inst.rle)) for i, inst in enumerate(insts)]
        for t in tracker.step(f, dets).instances:
            inst, det = insts[t.index], dets[t.index]
            truth[(f, t.track_id)] = inst.identity
            for k, v in (("frame", f), ("track_id", t.track_id), ("x1", det.box[0]), ("y1", det.box[1]),
                         ("x2", det.box[2]), ("y2", det.box[3]), ("com_x", det.com[0]), ("com_y", det.com[1]),
                         ("mask_height", inst.rle["size"][0]), ("mask_width", inst.rle["size"][1]),
                         ("mask_rle", inst.rle["counts"])):
                cols[k].append(v)
    ds.close()
    folder = d / "out" / "video"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(cols), folder / "results.parquet")
    (folder / "summary.json").write_text(json.dumps({"video": str(d / "synth" / "video.mp4")}))
    return d, folder, truth


def test_fragments_are_labelled_consistently_and_idnet_is_exported(analysis):
    d, folder, truth = analysis
    repo = d / "models"
    _sipec("train", "idnet", "--from-analysis", str(folder), "--animals", "2", "--out", str(repo), "--t", "1",
           "--epochs", "4", "--recurrent-epochs", "1", "--rounds", "2", "--input-size", "32", "--crop-px", "64",
           "--align", "--max-epochs", "8")          # trained until converged (the default here), within 8 epochs
    meta = json.loads((repo / "idnet" / "1" / "assets" / "sipec.json").read_text())
    assert meta["class_names"] == ["animal_1", "animal_2"] and meta["t"] == 1
    assert meta["masking"]["align"] == 1
    assert (repo / "idnet-frame" / "1").is_dir()
    data = meta["training"]["data"]
    assert data["labelled_fragments"] >= 2 and data["accepted_global_fragments"] >= 1
    # every labelled fragment's crops are of one synth animal, and one label names one animal
    animal_of_label: dict[int, int] = {}
    for track, first, last, label in data["fragment_labels"]:
        animals = {truth[(f, track)] for f in range(first, last + 1)}
        assert len(animals) == 1, (track, first, last, animals)
        assert animal_of_label.setdefault(label, animals.pop()) == animal_of_label[label]
    assert len(set(animal_of_label.values())) == len(animal_of_label) == 2


def test_too_many_animals_is_refused_naming_the_longest_stretch_and_nothing_is_written(analysis):
    d, folder, _ = analysis
    repo = d / "refused"
    r = _sipec("train", "idnet", "--from-analysis", str(folder), "--animals", "3", "--out", str(repo), check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "nowhere are all 3 animals tracked apart" in r.stderr and "longest such stretch is frames" in r.stderr
    assert not repo.exists() or not any(repo.iterdir())
    r = _sipec("train", "idnet", "--from-analysis", str(folder), "--animals", "2", "--max-crops-per-fragment", "0",
               "--out", str(repo), check=False)
    assert r.returncode == 2 and "--max-crops-per-fragment must be >= 1" in r.stderr, r.stderr[-2000:]
    r = _sipec("train", "idnet", "--from-analysis", str(d / "nothing"), "--animals", "2", "--out", str(repo),
               check=False)
    assert r.returncode == 2 and "not a finished `sipec analyze` result" in r.stderr
    r = _sipec("train", "idnet", "--from-analysis", str(folder), "--data", str(d / "synth"), "--animals", "2",
               "--out", str(repo), check=False)
    assert r.returncode == 2 and "not both" in r.stderr
    assert not repo.exists() or not any(repo.iterdir())
