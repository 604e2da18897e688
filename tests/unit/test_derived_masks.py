"""Masks derived from a video with no labels (sipec.data.derived_masks): a drawn video with known animals, and a
`sipec synth` video against its ground truth."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from sipec.data.derived_masks import Derivation, DeriveSettings, derive, estimate_area, parse_range, spread
from sipec.geometry import mask_iou
from sipec.synth.video import Mp4Writer
from tests.conftest import ROOT

W, H, FRAMES = 192, 144, 60


def _animals(f: int) -> list[tuple[int, int]]:
    """Centres of the two drawn animals in frame f: they cross in the middle of the video."""
    a = (20 + int(150 * f / (FRAMES - 1)), 50)
    b = (172 - int(150 * f / (FRAMES - 1)), 56)
    return [a, b]


def _truth(f: int) -> list[np.ndarray]:
    out = []
    for cx, cy in _animals(f):
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (cx, cy), (12, 5), 20, 0, 360, 1, -1)
        out.append(m.astype(bool))
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Two dark ellipses moving across a lit gradient with sensor noise, past a static dark box (background)."""
    path = tmp_path_factory.mktemp("derived") / "two.mp4"
    rng = np.random.default_rng(0)
    ground = np.tile(np.linspace(150, 210, W, dtype=np.float32), (H, 1))
    with Mp4Writer(path, W, H, 25) as w:
        for f in range(FRAMES):
            img = ground.copy()
            img[100:130, 20:60] = 60                       # a static object: part of the background
            for m in _truth(f):
                img[m] = 70
            img += rng.normal(0, 3, img.shape)
            w.write(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return path


def _run(path, settings, indices=range(FRAMES)):
    record, frames = derive(path, list(indices), settings)
    return record, list(frames)


def test_background_subtraction_finds_the_moving_animals_and_leaves_out_the_crossing(video):
    record, kept = _run(video, DeriveSettings(animals=2))
    s = record.settings
    assert s.difference is not None and s.grow is None and record.summary()["grow"] is None
    assert s.area[0] < 150 < s.area[1]                # the ellipses are about 190 px
    touching = [f for f in range(FRAMES) if (_truth(f)[0] & _truth(f)[1]).any()]
    near = [f for f in range(FRAMES) if np.linalg.norm(np.subtract(*_animals(f))) < 30]
    assert touching and all(f in record.left_out for f in touching), "a merged blob is never taken for animals"
    assert {record.left_out[f] for f in touching} == {"1 blob"}
    assert len(kept) == len(record.kept) >= FRAMES - len(near) - 4
    ious = []
    for f, rgb, masks in kept:
        assert rgb.shape == (H, W, 3) and len(masks) == 2
        assert not any(m[100:130, 20:60].any() for m in masks), "the static box is background"
        ious += [max(mask_iou(m, t) for t in _truth(f)) for m in masks]
    assert np.median(ious) > 0.8 and min(ious) > 0.5
    assert record.frames_read == FRAMES and 18 < record.animal_length_px < 30
    text = record.describe()
    assert "DERIVED" in text and f"{len(kept)} of {FRAMES} frames kept" in text and "1 blob" in text
    assert record.summary()["left_out"] == record.reasons()


def test_grown_blobs_take_the_faint_parts_attached_to_a_seed_only():
    from sipec.data.derived_masks import foreground

    background = np.full((40, 60, 3), 200, np.float32)
    frame = np.full((40, 60, 3), 200, np.uint8)
    frame[10:20, 5:20] = 100          # a body: differs by 100
    frame[13:17, 20:35] = 170         # its faint tail: 30, attached
    frame[30:36, 45:55] = 170         # a faint patch on its own: 30, no seed
    plain = foreground(frame, DeriveSettings(difference=60, grow=60), background).astype(bool)
    grown = foreground(frame, DeriveSettings(difference=60, grow=20), background).astype(bool)
    assert plain[10:20, 5:20].all() and not plain[13:17, 21:35].any() and not plain[30:36, 45:55].any()
    assert grown[10:20, 5:20].all() and grown[13:17, 21:34].all() and not grown[30:36, 45:55].any()
    described = Derivation(None, DeriveSettings(difference=60, grow=20), frames_read=1).describe()
    assert "colour difference >= 60, grown into >= 20" in described


def test_threshold_with_intensity_and_area_given(video):
    record, kept = _run(video, DeriveSettings(method="threshold", animals=2, intensity=(0, 100), area=(100, 400)))
    assert record.settings.area == (100, 400) and len(kept) >= FRAMES - 16
    # the static box is dark too, but 1200 px: outside the area range
    for _, _, masks in kept:
        assert not any(m[100:130, 20:60].any() for m in masks)


def test_a_wrong_animal_count_keeps_nothing_and_says_why(video):
    record, kept = _run(video, DeriveSettings(animals=3), indices=range(0, FRAMES, 6))
    assert not kept and record.frames_read == 10
    assert set(record.reasons()) <= {"2 blobs", "1 blob"}


@pytest.mark.parametrize("settings, message", [
    (DeriveSettings(method="edges"), "method: must be one of"),
    (DeriveSettings(animals=0), "animals: must be at least 1"),
    (DeriveSettings(method="threshold"), "intensity: the threshold method needs a range"),
    (DeriveSettings(method="threshold", intensity=(200, 100)), "intensity: must be LO:HI"),
    (DeriveSettings(difference=300), "difference: must be in"),
    (DeriveSettings(area=(50, 10)), "area: must be MIN:MAX"),
    (DeriveSettings(difference=30, grow=40), r"grow: must be below the difference level \(30\)"),
    (DeriveSettings(method="threshold", intensity=(0, 100), difference=30), "difference: only with the background"),
    (DeriveSettings(intensity=(0, 100)), "intensity: only with the threshold method"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        settings.validate()


def test_helpers():
    assert spread(10, 3) == [0, 4, 9] and spread(2, 5) == [0, 1] and spread(0, 3) == []
    assert estimate_area([[400, 380, 30], [420, 10]], 2) == (100, 1600)
    with pytest.raises(ValueError, match="no foreground blobs"):
        estimate_area([[3, 5]], 1)
    assert parse_range("0:155", "intensity") == (0, 155)
    with pytest.raises(ValueError, match=r"area: expected LO:HI \(e.g. 150:60000\)"):
        parse_range("big", "area", "150:60000")


def test_a_missing_or_broken_video_is_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 20)
    for path in (bad, tmp_path / "absent.mp4"):
        with pytest.raises(ValueError, match=str(path.name)):
            derive(path, [0], DeriveSettings())


def test_synth_video_masks_match_its_ground_truth(tmp_path):
    """On a `sipec synth` video (textured floor, cage objects, animals that rest) the kept frames' masks overlap the
    rendered animals; frames where a resting animal left a ghost in the median background have one blob too
    many and are left out."""
    from sipec.data.coco import annotation_mask, read_coco_instances

    subprocess.run([sys.executable, "-m", "sipec", "synth", "--out", str(tmp_path / "s"), "--animals", "2",
                    "--frames", "150", "--size", "320x240", "--seed", "1", "--quiet"], cwd=ROOT, check=True,
                   capture_output=True)
    coco = read_coco_instances(tmp_path / "s" / "annotations.json")
    by_frame = coco.image_by_frame()
    record, kept = _run(tmp_path / "s" / "video.mp4", DeriveSettings(animals=2), range(0, 150, 3))
    assert len(kept) >= 10, record.describe()
    ious = []
    for f, rgb, masks in kept:
        truth = [annotation_mask(a, *rgb.shape[:2]) for a in coco.annotations_for(by_frame[f]["id"])]
        ious += [max(mask_iou(m, t) for t in truth) for m in masks]
    assert np.median(ious) > 0.6, (np.median(ious), record.describe())
    assert isinstance(record, Derivation)


def test_cli_errors_name_the_video_or_flag(video, tmp_path, capsys):
    from sipec.cli import main

    out = str(tmp_path / "repo")
    assert main(["train", "segnet", "--video", str(tmp_path / "absent.mp4"), "--out", out]) == 2
    assert "--video: file not found" in capsys.readouterr().err
    assert main(["train", "segnet", "--video", str(video), "--derive", "threshold", "--out", out]) == 2
    assert "--intensity: the threshold method needs a range LO:HI" in capsys.readouterr().err
    assert main(["train", "segnet", "--video", str(video), "--area", "big", "--out", out]) == 2
    assert capsys.readouterr().err.startswith("sipec train: error: --area: expected LO:HI (e.g. 150:60000)")
    assert main(["train", "segnet", "--video", str(video), "--grow", "40", "--difference", "30", "--out", out]) == 2
    assert "error: --grow: must be below the difference level (30)" in capsys.readouterr().err
    assert main(["train", "segnet", "--video", str(video), "--coco", str(tmp_path / "c.json"), "--images",
                 str(tmp_path), "--out", out]) == 2
    assert "--coco: file not found" in capsys.readouterr().err       # named before any video is decoded
    assert main(["train", "segnet", "--coco", str(tmp_path / "c.json"), "--images", str(tmp_path),
                 "--save-derived", str(tmp_path / "d.json"), "--out", out]) == 2
    assert "--save-derived: only with --video" in capsys.readouterr().err
    assert main(["train", "segnet", "--video", str(video), "--animals", "3", "--limit", "8", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"--video {video}: no frame has exactly 3 blob(s)" in err
    assert not (tmp_path / "repo").exists(), "nothing is exported"


def test_video_frames_are_selected_then_spread():
    from services.segnet.data import video_indices

    assert video_indices(1000, None, 1, 300)[:3] == [0, 3, 7] and len(video_indices(1000, None, 1, 300)) == 300
    assert video_indices(100, None, 1, 300) == list(range(100))
    assert video_indices(100, slice(10, 20), 1, 300) == list(range(10, 20))
    assert video_indices(100, slice(10, 20), 3, 300) == [10, 13, 16, 19]
    assert video_indices(100, slice(10, 20), 3, 2) == [10, 19]
    assert video_indices(100, slice(200, None), 1, 300) == []


def test_input_size_follows_the_animals_length():
    from services.segnet.cli import input_size_for

    fish = Derivation(video=None, settings=DeriveSettings(), frame_size=(938, 1160), animal_length_px=54.0)
    mouse = Derivation(video=None, settings=DeriveSettings(), frame_size=(480, 640), animal_length_px=147.0)
    assert input_size_for([]) == (256, 320)
    assert input_size_for([mouse]) == (256, 320)            # 147 px -> 74 px at the default input
    h, w = input_size_for([fish])                            # 54 px -> 15 px at the default input
    assert (h, w) == (576, 704) and 54 * min(h / 938, w / 1160) >= 32
    tiny = Derivation(video=None, settings=DeriveSettings(), frame_size=(2000, 2000), animal_length_px=10.0)
    assert input_size_for([tiny]) == (1024, 1024)            # capped


@pytest.mark.slow
def test_train_segnet_from_a_video_alone(video, tmp_path, capsys):
    """`sipec train segnet --video` derives the masks, trains, exports, records the derivation in the model's
    metadata, and `--save-derived` writes COCO that `--coco` reads back to the same frames."""
    import json

    from services.segnet.data import load_coco
    from sipec.cli import main

    repo, coco = tmp_path / "repo", tmp_path / "with space" / "derived.json"
    assert main(["train", "segnet", "--video", str(video), "--animals", "2", "--limit", "12", "--epochs", "1",
                 "--batch-size", "4", "--out", str(repo), "--save-derived", str(coco)]) == 0
    out = capsys.readouterr().out
    assert "masks DERIVED by background subtraction" in out and "input 320x256 (default)" in out
    meta = json.loads((repo / "segnet" / "1" / "assets" / "sipec.json").read_text())
    derived = meta["training"]["data"]["derived_masks"]
    assert len(derived) == 1 and derived[0]["animals"] == 2 and derived[0]["frames_read"] == 12
    kept = derived[0]["frames_kept"]
    assert 0 < kept < 12 and meta["training"]["data"]["images"] == kept
    data = load_coco(coco, video.parent, (256, 320))
    assert len(data) == kept and all((data.classes[i] > 0).sum() == 2 for i in range(kept))
