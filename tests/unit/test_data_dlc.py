"""DeepLabCut CollectedData CSV: multi- and single-animal round trips, real files, pandas layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sipec.data.dlc import DlcLabels, frame_image_path, read_dlc_csv, write_dlc_csv

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _multi() -> DlcLabels:
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 640, size=(5, 3, 4, 2)).round(3)
    coords[1, 2, 0] = np.nan
    coords[4, 0] = np.nan
    return DlcLabels(scorer="me", bodyparts=["snout", "left_ear", "right_ear", "tail_base"],
                     individuals=["animal_0", "animal_1", "animal_2"],
                     image_paths=[frame_image_path("video", f) for f in range(5)], coords=coords)


def test_multi_animal_round_trip(tmp_path):
    labels = _multi()
    path = tmp_path / "CollectedData_me.csv"
    write_dlc_csv(path, labels)
    back = read_dlc_csv(path)
    assert back.individuals == labels.individuals
    assert back.bodyparts == labels.bodyparts
    assert back.image_paths == labels.image_paths == [f"labeled-data/video/img{f:06d}.png" for f in range(5)]
    np.testing.assert_allclose(back.coords, labels.coords, equal_nan=True)


def test_multi_animal_layout_is_what_pandas_and_dlc_expect(tmp_path):
    path = tmp_path / "c.csv"
    write_dlc_csv(path, _multi())
    df = pd.read_csv(path, header=[0, 1, 2, 3], index_col=0)
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert df.shape == (5, 3 * 4 * 2)
    assert df.loc["labeled-data/video/img000000.png", ("me", "animal_1", "left_ear", "y")] == pytest.approx(
        _multi().coords[0, 1, 1, 1])
    assert np.isnan(df.loc["labeled-data/video/img000004.png", ("me", "animal_0", "snout", "x")])


def test_single_animal_round_trip(tmp_path):
    coords = np.array([[[[1.5, 2.5], [np.nan, np.nan]]], [[[3.0, 4.0], [5.0, 6.0]]]])
    labels = DlcLabels(scorer="s", bodyparts=["a", "b"], individuals=None, image_paths=["x/1.png", "x/2.png"],
                       coords=coords)
    path = tmp_path / "c.csv"
    write_dlc_csv(path, labels)
    assert path.read_text().splitlines()[1].startswith("bodyparts,a,a,b,b")
    back = read_dlc_csv(path)
    assert back.individuals is None
    np.testing.assert_allclose(back.coords, coords, equal_nan=True)


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, (3, 2, 2, 2), elements=st.one_of(st.floats(0, 2000, allow_nan=False), st.just(np.nan))))
def test_round_trip_any_coordinates(tmp_path_factory, coords):
    path = tmp_path_factory.mktemp("dlc") / "c.csv"
    labels = DlcLabels(scorer="s", bodyparts=["p", "q"], individuals=["i", "j"],
                       image_paths=["a.png", "b.png", "c.png"], coords=coords)
    write_dlc_csv(path, labels)
    np.testing.assert_allclose(read_dlc_csv(path).coords, coords, atol=5e-4, equal_nan=True)


def test_shape_mismatch_and_bad_header_are_reported(tmp_path):
    labels = _multi()
    labels.coords = labels.coords[:, :2]
    with pytest.raises(ValueError, match="does not match"):
        write_dlc_csv(tmp_path / "c.csv", labels)
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,x,y\n0,1,2\n")
    with pytest.raises(ValueError, match="not a DeepLabCut CollectedData CSV"):
        read_dlc_csv(bad)


@pytest.mark.skipif(not (SHARED / "dlc-openfield-mouse").is_dir(), reason="shared data not present")
def test_reads_real_single_animal_files():
    labels = read_dlc_csv(SHARED / "dlc-openfield-mouse/labeled-data/m4s1/CollectedData_Pranav.csv")
    assert labels.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    assert labels.coords.shape == (116, 1, 4, 2)
    assert labels.coords[0, 0, 0] == pytest.approx([21.521, 265.428])
    reaching = next((SHARED / "dlc-reaching-mouse/labeled-data").glob("*/CollectedData_*.csv"))
    labels = read_dlc_csv(reaching)
    assert np.isnan(labels.coords).any() and np.isfinite(labels.coords).any()
