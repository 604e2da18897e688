"""`sipec label`: the label store (saving, resuming, CSV formats), sampling, the API and the command's errors.

`make_labelling_inputs` (a tiny synth video and a results folder built from its ground truth, no networks) is
also used by tests/e2e/test_label_browser.py.
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sipec.cli import CliError
from sipec.data.labels import read_behaviour_csv, read_identity_csv
from sipec.label import cli as label_cli
from sipec.label.results import Results, sample_instances
from sipec.label.store import ANNOTATIONS, BEHAVIOUR_CSV, BOUTS_JSON, IDENTITY_CSV, BehaviourStore, IdentityStore

NAMES = ["alice", "bob"]
BEHAVIOURS = ["none", "walking", "rearing"]


def make_labelling_inputs(root: Path, frames: int = 20, animals: int = 2, seed: int = 1) -> tuple[Path, Path]:
    """(video, results folder): `sipec synth` 160x120 and a results.parquet of its ground-truth masks, written
    with `sipec analyze`'s schema (track ids 1.., no identities)."""
    from orchestrator.sinks import results_schema
    from sipec.cli import main
    from sipec.synth.reader import SynthDataset

    synth = root / "synth"
    assert main(["synth", "--out", str(synth), "--animals", str(animals), "--frames", str(frames),
                 "--seed", str(seed), "--size", "160x120"]) == 0
    ds = SynthDataset(synth)
    rows = []
    for f in range(len(ds)):
        for inst in ds.instances(f):
            x1, y1, x2, y2 = inst.box
            rows.append({"video": "video.mp4", "frame": f, "time_s": f / ds.fps, "track_id": inst.track_id + 1,
                         "identity": None, "identity_confidence": None, "score": 1.0,
                         "x1": x1, "y1": y1, "x2": x2, "y2": y2, "com_x": inst.com[0], "com_y": inst.com[1],
                         "mask_height": ds.height, "mask_width": ds.width, "mask_rle": inst.rle["counts"]})
    results = root / "analysis" / "video"
    results.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=results_schema([], [])), results / "results.parquet")
    return synth / "video.mp4", results


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    return make_labelling_inputs(tmp_path_factory.mktemp("label"))


def _args(video, results, out, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sipec")
    label_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["label", "--video", str(video), "--results", str(results), "--out", str(out),
                              *extra])


# ------------------------------------------------------------------ results and sampling
def test_results_are_read_by_frame(inputs):
    _, results_dir = inputs
    res = Results(results_dir)
    assert res.frames == list(range(20))
    assert res.mask_shape() == (120, 160)
    inst = res.instances(3)[0]
    assert res.get(inst.key) == inst and res.get("999:0") is None and res.get("junk") is None
    assert set(res.tracks()) == {1, 2}


@pytest.mark.parametrize("mode", ["regular", "random"])
def test_sampling_is_deterministic_and_whole_frames(inputs, mode):
    res = Results(inputs[1])
    a = sample_instances(res, 7, mode, seed=3)
    assert [i.key for i in a] == [i.key for i in sample_instances(res, 7, mode, seed=3)]
    assert len(a) == 7 and len({i.key for i in a}) == 7
    assert [i.frame for i in a] == sorted(i.frame for i in a)
    if mode == "regular":
        frames = sorted({i.frame for i in a})
        assert frames[0] == 0 and frames[-1] >= 10, "regular frames are spread over the video"
    else:
        assert [i.key for i in a] != [i.key for i in sample_instances(res, 7, mode, seed=4)]
    assert len(sample_instances(res, 10_000, mode)) == len(res), "asking for more masks gives them all"


# ------------------------------------------------------------------ identity store
def test_identity_store_saves_each_label_and_resumes(inputs, tmp_path):
    video, results_dir = inputs
    res = Results(results_dir)
    keys = [i.key for i in sample_instances(res, 4)]
    store = IdentityStore(tmp_path, "video.mp4", NAMES, res)
    store.assign(keys[0], 1)
    df = read_identity_csv(tmp_path / IDENTITY_CSV)  # written at once, readable by the shared reader
    assert len(df) == 1 and df.identity_name[0] == "bob"
    store.assign(keys[1], 0)
    store.assign(keys[2], 1)
    store.assign(keys[2], None)       # unlabel
    store.assign(keys[3], 0)
    with pytest.raises(KeyError):
        store.assign("999:0", 0)
    with pytest.raises(ValueError):
        store.assign(keys[0], 5)
    assert not list(tmp_path.glob(".*partial*")), "no temporary files left behind"

    again = IdentityStore(tmp_path, "video.mp4", NAMES, res)
    assert again.labels == {keys[0]: 1, keys[1]: 0, keys[3]: 0}
    df = read_identity_csv(tmp_path / IDENTITY_CSV)
    assert list(df.columns) == ["video", "frame", "track_id", "identity", "identity_name", "x1", "y1", "x2", "y2"]
    first = res.get(keys[0])
    row = df[(df.frame == first.frame) & (df.track_id == first.track_id)].iloc[0]
    from sipec.geometry import decode_rle, mask_box

    assert (row.x1, row.y1, row.x2, row.y2) == mask_box(decode_rle(first.rle))
    assert row.video == "video.mp4" and row.identity == 1

    with pytest.raises(ValueError, match="give the same names"):
        IdentityStore(tmp_path, "video.mp4", ["carol", "bob"], res)


def test_identity_rows_of_other_masks_are_kept(inputs, tmp_path):
    res = Results(inputs[1])
    from sipec.data.labels import write_identity_csv

    other = {"video": "other.mp4", "frame": 5, "track_id": 9, "identity": 0, "identity_name": "alice",
             "x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0}
    write_identity_csv(tmp_path / IDENTITY_CSV, [other])
    store = IdentityStore(tmp_path, "video.mp4", NAMES, res)
    store.assign(res.instances(0)[0].key, 1)
    df = read_identity_csv(tmp_path / IDENTITY_CSV)
    assert len(df) == 2 and "other.mp4" in set(df.video)


def test_identity_folder_loads_with_the_idnet_loader(inputs, tmp_path):
    from services.idnet.data import load_source
    from services.idnet.masking import MaskSettings

    video, results_dir = inputs
    app = label_cli.build_app(_args(video, results_dir, tmp_path / "labels", "--names", "alice,bob",
                                    "--count", "6"))
    try:
        for n, item in enumerate(app.state()["items"]):
            app.assign(item["key"], n % 2)
    finally:
        app.close()
    data = load_source(tmp_path / "labels", MaskSettings(input_size=32, crop_px=48))
    assert len(data) == 6 and data.identity_names == NAMES
    assert sorted(data.identity.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.crops.shape == (6, 32, 32, 3)


# ------------------------------------------------------------------ behaviour store
def test_behaviour_store_saves_resumes_and_loads_with_behavenet(inputs, tmp_path):
    from services.behavenet.crops import CropSettings
    from services.behavenet.data import extract_crops, open_labelled_video

    video, results_dir = inputs
    res = Results(results_dir)
    (tmp_path / "video.mp4").symlink_to(video)
    store = BehaviourStore(tmp_path, "video.mp4", BEHAVIOURS, res)
    b1 = store.add(1, 2, 9, "walking")
    df = read_behaviour_csv(tmp_path / BEHAVIOUR_CSV, BEHAVIOURS)
    assert len(df) == 8 and set(df.identity) == {1} and set(df.behaviour) == {"walking"}
    store.add(2, 12, 5, "rearing")            # start and end in either order
    store.add(1, 6, 7, "none")                # a later bout wins where they overlap
    b4 = store.add(2, 0, 1, "walking")
    store.delete(b4.id)
    with pytest.raises(KeyError):
        store.add(7, 0, 1, "walking")
    with pytest.raises(ValueError):
        store.add(1, 0, 1, "flying")

    again = BehaviourStore(tmp_path, "video.mp4", BEHAVIOURS, res)
    assert [(b.track_id, b.start, b.end, b.behaviour) for b in again.bouts] == [
        (1, 2, 9, "walking"), (2, 5, 12, "rearing"), (1, 6, 7, "none")]
    assert again.bouts[0].id == b1.id
    df = read_behaviour_csv(tmp_path / BEHAVIOUR_CSV, BEHAVIOURS)
    labels = {(int(r.identity), int(r.frame)): r.behaviour for r in df.itertuples()}
    assert labels[(1, 5)] == "walking" and labels[(1, 6)] == "none" and labels[(2, 12)] == "rearing"
    assert len(df) == 8 + 8 and set(df.partner) == {-1}
    assert json.loads((tmp_path / BOUTS_JSON).read_text())["behaviours"] == BEHAVIOURS

    lv = open_labelled_video(tmp_path)
    assert lv.annotations_path == tmp_path / ANNOTATIONS
    crops = extract_crops(lv, BEHAVIOURS, CropSettings(input_size=32, crop_px=48, pair_crop_px=64), pairs=False)
    assert len(crops) == 16
    assert sorted(np.bincount(crops.labels, minlength=3).tolist()) == [2, 6, 8]


def test_behaviour_csv_alone_is_imported_as_bouts(inputs, tmp_path):
    res = Results(inputs[1])
    store = BehaviourStore(tmp_path, "video.mp4", BEHAVIOURS, res)
    store.add(1, 0, 4, "walking")
    store.add(1, 5, 8, "rearing")
    store.add(2, 3, 3, "walking")
    (tmp_path / BOUTS_JSON).unlink()
    again = BehaviourStore(tmp_path, "video.mp4", BEHAVIOURS, res)
    assert [(b.track_id, b.start, b.end, b.behaviour) for b in again.bouts] == [
        (1, 0, 4, "walking"), (1, 5, 8, "rearing"), (2, 3, 3, "walking")]
    with pytest.raises(ValueError, match="rearing"):
        BehaviourStore(tmp_path, "video.mp4", ["none", "walking"], res)


# ------------------------------------------------------------------ the command's errors
def test_missing_inputs_are_named(inputs, tmp_path):
    video, results_dir = inputs
    with pytest.raises(CliError, match="--video: .*nope.mp4: no such file"):
        label_cli.build_app(_args(tmp_path / "nope.mp4", results_dir, tmp_path / "o", "--names", "a,b"))
    with pytest.raises(CliError, match="--results: .*missing: no such file"):
        label_cli.build_app(_args(video, tmp_path / "missing", tmp_path / "o", "--names", "a,b"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="results.parquet: no such file"):
        label_cli.build_app(_args(video, tmp_path / "empty", tmp_path / "o", "--names", "a,b"))
    with pytest.raises(CliError, match="--names: needed"):
        label_cli.build_app(_args(video, results_dir, tmp_path / "o"))
    with pytest.raises(CliError, match="--behaviours: needed"):
        label_cli.build_app(_args(video, results_dir, tmp_path / "o", "--mode", "behaviour"))
    with pytest.raises(CliError, match="--names: names must be distinct"):
        label_cli.build_app(_args(video, results_dir, tmp_path / "o", "--names", "a,a"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CliError, match="bad.parquet: cannot read as Parquet"):
        label_cli.build_app(_args(video, tmp_path / "bad.parquet", tmp_path / "o", "--names", "a,b"))


def test_cli_error_exits_2_with_the_file_named(tmp_path, capsys):
    from sipec.cli import main

    rc = main(["label", "--video", str(tmp_path / "v.mp4"), "--results", str(tmp_path), "--out",
               str(tmp_path / "o"), "--names", "a,b"])
    assert rc == 2
    assert "v.mp4: no such file" in capsys.readouterr().err


# ------------------------------------------------------------------ the HTTP API in-process
def test_api_serves_page_frames_and_saves(inputs, tmp_path):
    from sipec.label.server import make_server

    video, results_dir = inputs
    app = label_cli.build_app(_args(video, results_dir, tmp_path / "labels", "--names", "alice,bob",
                                    "--count", "3", "--sample", "random", "--seed", "2"))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path):
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()

    def post(path, body):
        req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    try:
        status, ctype, body = get("/")
        assert status == 200 and ctype.startswith("text/html") and b"sipec label" in body
        state = json.loads(get("/api/state")[2])
        assert state["mode"] == "identity" and len(state["items"]) == 3 and state["labelled"] == 0
        item = state["items"][0]
        status, ctype, body = get(f"/api/frame?frame={item['frame']}&key={item['key']}")
        assert ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
        import cv2

        img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3), "small videos are enlarged 4x for drawing"
        r = post("/api/identity/assign", {"key": item["key"], "identity": 1})
        assert r["labelled"] == 1 and r["item"]["identity"] == 1
        assert len(read_identity_csv(tmp_path / "labels" / IDENTITY_CSV)) == 1
        for path, body_, code in (("/api/identity/assign", {"key": "999:0", "identity": 0}, 400),
                                  ("/api/identity/assign", {"identity": 0}, 400),
                                  ("/api/behaviour/bout", {"track_id": 1, "start": 0, "end": 1,
                                                           "behaviour": "x"}, 400),
                                  ("/api/nothing", {}, 404)):
            with pytest.raises(urllib.error.HTTPError) as err:
                post(path, body_)
            assert err.value.code == code and "error" in json.loads(err.value.read())
        with pytest.raises(urllib.error.HTTPError) as err:
            get("/api/frame?frame=500")
        assert err.value.code == 400
    finally:
        server.shutdown()
        server.server_close()
        app.close()
