"""SLEAP .slp through sleap-io: round trip with occluded and missing points, real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sleap_io as sio

from sipec.data.sleap import PoseTracks, read_slp, write_slp

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _tracks() -> PoseTracks:
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 300, size=(4, 2, 3, 2))
    visible = np.ones((4, 2, 3), dtype=bool)
    visible[1, 0, 2] = False  # occluded: coordinates known, not visible
    points[2, 1, 0] = np.nan  # missing
    visible[2, 1, 0] = False
    points[3, 1] = np.nan  # animal absent in frame 3
    visible[3, 1] = False
    return PoseTracks(node_names=["snout", "neck", "tail"], track_names=["animal_0", "animal_1"],
                      frame_indices=np.array([0, 1, 2, 5]), points=points, visible=visible,
                      video_path="video.mp4", edges=[(0, 1), (1, 2)], video_shape=(240, 320))


def test_round_trip(tmp_path):
    data = _tracks()
    path = tmp_path / "k.slp"
    write_slp(path, data)
    back = read_slp(path)
    assert back.node_names == data.node_names
    assert back.track_names == data.track_names
    assert back.edges == data.edges
    assert back.video_path == "video.mp4"
    np.testing.assert_array_equal(back.frame_indices, data.frame_indices)
    np.testing.assert_allclose(back.points, data.points, equal_nan=True)
    np.testing.assert_array_equal(back.visible, data.visible)


def test_sleap_io_sees_tracks_skeleton_and_video(tmp_path):
    path = tmp_path / "k.slp"
    write_slp(path, _tracks())
    labels = sio.load_slp(str(path), open_videos=False)
    assert [t.name for t in labels.tracks] == ["animal_0", "animal_1"]
    assert labels.skeleton.node_names == ["snout", "neck", "tail"]
    assert len(labels.labeled_frames) == 4
    assert len(labels.labeled_frames[3].instances) == 1  # the absent animal has no instance
    assert Path(labels.videos[0].filename).name == "video.mp4"
    inst = labels.labeled_frames[1].instances[0]
    assert inst.track.name == "animal_0"
    assert not inst.points["visible"][2] and np.isfinite(inst.points["xy"][2]).all()


def test_shape_mismatch_is_reported(tmp_path):
    data = _tracks()
    data.visible = data.visible[:, :1]
    with pytest.raises(ValueError, match="visible shape"):
        write_slp(tmp_path / "k.slp", data)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not (SHARED / "sleap-flies-clip/clip.slp").is_file(), reason="shared data not present")
def test_reads_real_tracked_file():
    data = read_slp(SHARED / "sleap-flies-clip/clip.slp")
    assert data.track_names == ["female", "male"]
    assert data.points.shape == (1500, 2, 13, 2)
    # points stored as NaN are never reported visible
    assert not (data.visible & np.isnan(data.points[..., 0])).any()
    assert data.visible.mean() > 0.9


def test_every_video_of_a_multi_video_project_is_read(tmp_path):
    """A SLEAP project labelled on two videos: `sipec train posenet --data labels.slp` takes both (it read only the
    first before)."""
    from services.posenet.data import load_labels

    skeleton = sio.Skeleton(["snout", "tail"])
    videos = [sio.Video(filename=str(tmp_path / f"session{v}.mp4"), open_backend=False) for v in range(2)]
    frames = [sio.LabeledFrame(video=videos[v], frame_idx=f, instances=[
        sio.Instance.from_numpy(np.array([[10.0 + f, 20.0], [30.0, 40.0 + v]]), skeleton=skeleton)])
        for v in range(2) for f in (3, 7)]
    sio.save_slp(sio.Labels(labeled_frames=frames, videos=videos, skeletons=[skeleton]), str(tmp_path / "p.slp"))
    labels = load_labels(tmp_path / "p.slp")
    assert [a.source for a in labels.animals] == [f"{tmp_path / f'session{v}.mp4'}#{f}" for v in range(2)
                                                   for f in (3, 7)]
    np.testing.assert_allclose(labels.animals[3].keypoints, [[17.0, 20.0], [30.0, 41.0]])
