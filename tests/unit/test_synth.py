"""`sipec synth`: the ground truth checked against the pixels, the files, the reader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import sleap_io as sio
from pycocotools.coco import COCO

from sipec.data.dlc import read_dlc_csv
from sipec.geometry import decode_rle
from sipec.synth.animals import KEYPOINT_NAMES
from sipec.synth.behaviour import BEHAVIOURS
from sipec.synth.camera import PinholeCamera
from sipec.synth.config import SynthConfig
from sipec.synth.generator import SynthFrame, SynthGenerator
from sipec.synth.pipeline import OutputExistsError, generate
from sipec.synth.reader import SynthDataset
from sipec.synth.writers import OUTPUT_FILES, SUMMARY, GroundTruthWriter

SQUARE3 = np.ones((3, 3), np.uint8)


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate with a square kernel (diagonal neighbours included)."""
    return cv2.dilate(mask.astype(np.uint8), SQUARE3, iterations=pixels).astype(bool)


def _run(config: SynthConfig) -> tuple[SynthGenerator, list[SynthFrame]]:
    gen = SynthGenerator(config)
    return gen, list(gen.frames())


@pytest.fixture(scope="module")
def top_run() -> tuple[SynthGenerator, list[SynthFrame]]:
    return _run(SynthConfig(animals=4, frames=60, width=320, height=240, seed=7))


@pytest.fixture(scope="module")
def perspective_run() -> tuple[SynthGenerator, list[SynthFrame]]:
    return _run(SynthConfig(animals=3, frames=40, width=320, height=240, seed=3, camera="perspective"))


@pytest.fixture(scope="module")
def long_labels() -> list[list[tuple[str, int, np.ndarray]]]:
    """Behaviour, partner and 3D position of 3 animals over 60 s (small frames: labels only matter)."""
    gen = SynthGenerator(SynthConfig(animals=3, frames=1800, width=96, height=72, seed=11, noise_std=0.0))
    return [[(a.behaviour, a.partner, a.position) for a in frame.animals] for frame in gen.frames()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, SynthConfig, dict]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    config = SynthConfig(animals=4, frames=40, width=320, height=240, seed=5)
    summary = generate(config, out)
    return out, config, summary


# ----------------------------------------------------------------- determinism
def test_same_seed_gives_identical_frames_and_truth():
    config = SynthConfig(animals=3, frames=12, width=160, height=120, seed=42)
    _, a = _run(config)
    _, b = _run(config)
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.owners, fb.owners)
        for xa, xb in zip(fa.animals, fb.animals, strict=True):
            np.testing.assert_array_equal(xa.keypoints, xb.keypoints)
            assert (xa.behaviour, xa.partner, xa.name) == (xb.behaviour, xb.partner, xb.name)
            np.testing.assert_array_equal(xa.position, xb.position)
    _, c = _run(SynthConfig(animals=3, frames=12, width=160, height=120, seed=43))
    assert not np.array_equal(a[-1].image, c[-1].image)


def test_appearance_seed_keeps_the_individuals_and_changes_the_recording():
    base = SynthConfig(animals=3, frames=4, width=160, height=120, seed=1, appearance_seed=7)
    g1, f1 = _run(base)
    g2, f2 = _run(SynthConfig(animals=3, frames=4, width=160, height=120, seed=2, appearance_seed=7))
    g3, _ = _run(SynthConfig(animals=3, frames=4, width=160, height=120, seed=1))
    assert g1.looks == g2.looks            # same animals ...
    assert g1.looks != g3.looks            # ... which the appearance seed, not the seed, decides
    assert not np.array_equal(f1[-1].image, f2[-1].image)   # in another recording
    with pytest.raises(ValueError, match="appearance seed"):
        SynthConfig(appearance_seed=-1).validate()


def test_same_seed_gives_identical_label_files(tmp_path):
    config = SynthConfig(animals=2, frames=15, width=160, height=120, seed=9)
    s1 = generate(config, tmp_path / "a")
    s2 = generate(config, tmp_path / "b")
    for name in ("annotations.json", "identities.csv", "behaviour.csv", "positions_3d.csv", "keypoints_dlc.csv",
                 "camera.json"):
        assert s1["files"][name]["sha256"] == s2["files"][name]["sha256"], name


# ---------------------------------------------------------- truth vs pixels
def test_masks_are_exactly_the_visible_part_of_each_animal(top_run):
    gen, frames = top_run
    occluded = 0
    for frame in frames:
        h, w = frame.owners.shape
        union = np.zeros((h, w), dtype=np.int32)
        for a in frame.animals:
            amodal = a.render.amodal_mask(h, w)
            assert a.area > 0
            assert not (a.mask & ~amodal).any(), "visible mask outside the animal's own render"
            hidden = amodal & ~a.mask
            # every pixel of the animal that is not in its mask is covered by another animal or an object
            assert np.all((frame.owners[hidden] != 0) & (frame.owners[hidden] != a.identity + 1))
            occluded += int(hidden.any())
            union += a.mask
        assert union.max() <= 1, "masks of different animals overlap"
    assert occluded > 0, "the run should contain occlusions"


def test_mask_pixels_show_the_animal_not_the_floor(top_run):
    gen, frames = top_run
    background = gen.renderer.background.astype(np.int16)
    for frame in frames[::10]:
        for a in frame.animals:
            diff = np.abs(frame.image.astype(np.int16) - background)[a.mask].mean()
            assert diff > 40, f"frame {frame.index} animal {a.identity}: mask looks like background ({diff:.1f})"


def test_visible_keypoints_fall_inside_the_masks(top_run, perspective_run):
    for _, frames in (top_run, perspective_run):
        n_visible = 0
        for frame in frames:
            h, w = frame.owners.shape
            for a in frame.animals:
                visible_zone = _grow(a.mask, 1)
                amodal_zone = _grow(a.render.amodal_mask(h, w), 2)
                for x, y, v in a.keypoints:
                    if v == 0:
                        assert not (0 <= x < w and 0 <= y < h)
                        continue
                    assert amodal_zone[int(y), int(x)], "keypoint off its animal"
                    if v == 2:
                        n_visible += 1
                        assert visible_zone[int(y), int(x)], "visible keypoint outside the visible mask"
                    else:
                        assert not a.mask[int(y), int(x)], "occluded keypoint on a visible pixel"
        assert n_visible > 0


def test_snout_is_ahead_of_the_tail(top_run):
    _, frames = top_run
    snout, neck, tail = (KEYPOINT_NAMES.index(k) for k in ("snout", "neck", "tail_base"))
    for frame in frames:
        for a in frame.animals:
            kp = a.keypoints[:, :2]
            assert np.linalg.norm(kp[snout] - kp[tail]) > np.linalg.norm(kp[neck] - kp[tail])


# ------------------------------------------------------------- behaviours
def test_every_behaviour_occurs_in_bouts_of_tens_of_frames(long_labels):
    counts = Counter(b for frame in long_labels for b, _, _ in frame)
    assert set(counts) == set(BEHAVIOURS), counts
    n = len(long_labels[0])
    bouts: list[int] = []
    for i in range(n):
        labels = [frame[i][0] for frame in long_labels]
        starts = [0] + [t for t in range(1, len(labels)) if labels[t] != labels[t - 1]] + [len(labels)]
        bouts += [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)][1:-1]  # whole bouts only
    assert np.median(bouts) >= 20
    assert np.percentile(bouts, 10) >= 8


def test_social_grooming_only_between_close_mutual_partners(long_labels):
    social = 0
    for frame in long_labels:
        for i, (behaviour, partner, pos) in enumerate(frame):
            if behaviour != "social_grooming":
                assert partner == -1
                continue
            social += 1
            p_behaviour, p_partner, p_pos = frame[partner]
            assert partner != i and p_behaviour == "social_grooming" and p_partner == i
            assert np.hypot(*(pos[:2] - p_pos[:2])) < 0.10, "social grooming animals must be close (< 10 cm)"
    assert social > 0


def test_rearing_raises_the_body(long_labels):
    z = {b: [pos[2] for frame in long_labels for bb, _, pos in frame if bb == b] for b in ("rearing", "walking")}
    assert np.median(z["rearing"]) > np.median(z["walking"]) + 0.01


def test_animals_stay_inside_the_arena(long_labels):
    gen = SynthGenerator(SynthConfig(animals=3, frames=1, width=96, height=72, seed=11))
    xy = np.array([pos[:2] for frame in long_labels for _, _, pos in frame])
    assert xy.min() >= 0 and (xy <= [gen.arena.floor_w, gen.arena.floor_d]).all()
    assert np.ptp(xy[:, 0]) > 0.5 * gen.arena.floor_w, "animals should explore the cage"


# ------------------------------------------------------------- perspective
def test_perspective_positions_project_onto_the_masks(perspective_run):
    gen, frames = perspective_run
    cam = PinholeCamera.from_json(json.loads(json.dumps(gen.camera.to_json())))
    checked = 0
    for frame in frames:
        for a in frame.animals:
            if a.area == 0 or a.occluded_fraction > 0.05:
                continue
            uv, depth = cam.project(a.position[None])
            assert depth[0] > 0
            tol = 0.6 * np.sqrt(a.render.amodal_area)
            assert np.hypot(*(uv[0] - np.array(a.com))) < tol
            checked += 1
    assert checked > 50


def test_perspective_animals_shrink_with_depth(perspective_run):
    gen, frames = perspective_run
    depth, area = [], []
    for frame in frames:
        for a in frame.animals:
            depth.append(gen.camera.depth(a.position))
            area.append(a.render.amodal_area / gen.looks[a.identity].size ** 2)
    corr = np.corrcoef(1.0 / np.square(depth), area)[0, 1]
    assert corr > 0.5, f"apparent size should follow 1/depth^2 (corr {corr:.2f})"


# ------------------------------------------------------------ output files
def test_output_folder_has_every_file_and_summary_last(dataset):
    out, config, summary = dataset
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(OUTPUT_FILES)
    newest_other = max((out / n).stat().st_mtime_ns for n in OUTPUT_FILES if n != SUMMARY)
    assert (out / SUMMARY).stat().st_mtime_ns >= newest_other
    assert summary["frames"] == summary["video_frames"] == config.frames
    assert summary["behaviours"] == list(BEHAVIOURS)
    assert sum(summary["behaviour_frame_counts"].values()) == config.frames * config.animals
    assert {i["name"] for i in summary["identities"]} == set(config.names)
    assert len({(i["marking"], i["shade"], i["size"]) for i in summary["identities"]}) == config.animals
    assert summary["generation"]["frames_per_second"] > 0


def test_video_decodes_with_opencv_close_to_the_raw_frames(dataset):
    out, config, _ = dataset
    cap = cv2.VideoCapture(str(out / "video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == config.frames
    decoded = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(decoded) == config.frames
    raw = [f.image for f in SynthGenerator(config).frames()]
    diffs = [np.abs(d.astype(np.int16) - r).mean() for d, r in zip(decoded, raw, strict=True)]
    assert max(diffs) < 6.0, f"decoded frames differ from the generated ones by {max(diffs):.2f} grey levels"


def test_reader_matches_the_generator(dataset):
    out, config, _ = dataset
    truth = list(SynthGenerator(config).frames())
    with SynthDataset(out) as ds:
        assert len(ds) == config.frames
        assert ds.identity_names == config.names
        assert ds.keypoint_names == list(KEYPOINT_NAMES)
        assert ds.behaviours == list(BEHAVIOURS)
        for index in (0, 17, config.frames - 1):
            insts = ds.instances(index)
            visible = [a for a in truth[index].animals if a.area > 0]
            assert [i.identity for i in insts] == [a.identity for a in visible]
            for inst, a in zip(insts, visible, strict=True):
                np.testing.assert_array_equal(inst.mask, a.mask)
                assert inst.behaviour == a.behaviour and inst.partner == a.partner
                assert inst.identity_name == a.name and inst.track_id == a.track_id
                np.testing.assert_allclose(inst.keypoints[:, :2], a.keypoints[:, :2], atol=0.01)
                np.testing.assert_array_equal(inst.keypoints[:, 2], a.keypoints[:, 2] == 2)
                np.testing.assert_allclose(inst.position_3d, a.position, atol=1e-4)
        sequential = [img for _, img in ds.frames(0, 12)]
        np.testing.assert_array_equal(ds.frame(9), sequential[9])  # random access, backwards
        np.testing.assert_array_equal(ds.frame(3), sequential[3])
        labels, partners = ds.behaviour_matrix()
        assert labels.shape == (config.frames, config.animals) and labels.min() >= 0
        assert ds.positions_3d.shape[0] == config.frames * config.animals
        np.testing.assert_allclose(ds.camera.K, SynthGenerator(config).camera.K)


def test_identities_are_stable_along_tracks(dataset):
    out, config, _ = dataset
    ds = SynthDataset(out)
    ids = ds.identity_labels
    per_track = ids.groupby("track_id")[["identity", "identity_name"]].nunique()
    assert (per_track == 1).all().all()
    coco = COCO(str(out / "annotations.json"))
    tracks: dict[int, set[int]] = {}
    for ann in coco.dataset["annotations"]:
        tracks.setdefault(ann["track_id"], set()).add(ann["identity"])
    assert all(len(v) == 1 for v in tracks.values()) and len(tracks) == config.animals


def test_label_files_agree_with_the_coco_masks(dataset):
    out, config, _ = dataset
    coco = COCO(str(out / "annotations.json"))
    ds = SynthDataset(out)
    ids = ds.identity_labels.set_index(["frame", "identity"])
    anns = coco.dataset["annotations"]
    assert len(ids) == len(anns)
    for ann in anns[::7]:
        mask = decode_rle(ann["segmentation"])
        ys, xs = np.nonzero(mask)
        row = ids.loc[(ann["frame_index"], ann["identity"])]
        assert (row.x1, row.y1, row.x2, row.y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert ann["area"] == mask.sum() == ds.positions_3d.set_index(["frame", "identity"]).loc[
            (ann["frame_index"], ann["identity"]), "area"]
    # DeepLabCut: visible keypoints only; SLEAP: a track per identity, video next to it
    dlc = read_dlc_csv(out / "keypoints_dlc.csv")
    assert dlc.individuals == config.names and dlc.bodyparts == list(KEYPOINT_NAMES)
    assert dlc.coords.shape == (config.frames, config.animals, len(KEYPOINT_NAMES), 2)
    ann0 = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    kp = np.array(ann0["keypoints"]).reshape(-1, 3)
    got = dlc.coords[0, ann0["identity"]]
    np.testing.assert_allclose(got[kp[:, 2] == 2], kp[kp[:, 2] == 2, :2], atol=0.01)
    assert np.isnan(got[kp[:, 2] != 2]).all()
    labels = sio.load_slp(str(out / "keypoints.slp"), open_videos=False)
    assert [t.name for t in labels.tracks] == config.names
    assert len(labels.labeled_frames) == config.frames
    assert labels.videos[0].filename == "video.mp4"


def test_refuses_non_empty_folder_and_incomplete_datasets(dataset, tmp_path):
    out, config, _ = dataset
    with pytest.raises(OutputExistsError, match="not empty"):
        generate(config, out)
    (tmp_path / "video.mp4").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="summary.json"):
        SynthDataset(tmp_path)


def test_default_size_frames(tmp_path):
    config = SynthConfig(animals=8, frames=4, seed=1, camera="perspective")
    summary = generate(config, tmp_path / "d")
    ds = SynthDataset(tmp_path / "d")
    assert ds.frame(3).shape == (480, 640, 3)
    assert summary["counts"]["animal_frames"] == 32
    assert all(inst.mask.shape == (480, 640) for inst in ds.instances(0))
    assert len(ds.instances(0)) >= 6


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    original = GroundTruthWriter.add

    def add_then_interrupt(self: GroundTruthWriter, frame: SynthFrame) -> None:
        if frame.index == 5:
            raise KeyboardInterrupt
        original(self, frame)

    monkeypatch.setattr(GroundTruthWriter, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate(SynthConfig(animals=2, frames=20, width=160, height=120), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == [], "no partial video, no labels, no summary"


def test_a_wider_floor_shows_smaller_animals_in_the_same_image():
    import numpy as np

    from sipec.synth.arena import make_arena

    narrow = make_arena("top", 640, 480, np.random.default_rng(0), with_objects=False)
    wide = make_arena("top", 640, 480, np.random.default_rng(0), with_objects=False, floor_width=1.2)
    assert (wide.floor_w, wide.floor_d) == pytest.approx((1.2, 0.9)) and narrow.floor_w == pytest.approx(0.6)
    # the camera frames the whole floor: a metre spans half the pixels
    centre = np.array([0.3, 0.2, 0.0])
    assert wide.camera.pixels_per_metre(centre) == pytest.approx(narrow.camera.pixels_per_metre(centre) / 2, rel=0.02)
    with pytest.raises(ValueError, match="floor_width"):
        SynthConfig(floor_width=0.1).validate()
    with pytest.raises(ValueError, match="top camera"):
        SynthConfig(floor_width=1.0, camera="perspective").validate()


def test_sociality_sets_how_often_animals_groom_each_other(long_labels):
    """`sociality` 0: no social grooming at all (the animals still meet by chance); the default keeps the mix."""
    def social_frames(frames) -> int:
        return sum(b == "social_grooming" for frame in frames for b, _, _ in frame)

    assert social_frames(long_labels) > 100
    gen = SynthGenerator(SynthConfig(animals=3, frames=1800, width=96, height=72, seed=11, noise_std=0.0,
                                     sociality=0.0))
    solitary = [[(a.behaviour, a.partner, a.position) for a in frame.animals] for frame in gen.frames()]
    assert social_frames(solitary) == 0
    assert {"walking", "grooming", "resting", "rearing"} <= {b for frame in solitary for b, _, _ in frame}
    with pytest.raises(ValueError, match="sociality"):
        SynthConfig(sociality=-1).validate()
