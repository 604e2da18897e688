"""sipec.protocols: folds that keep neighbours together, nested ablation sets, mean +- s.e.m., the 95%-of-peak
point and the ablation plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sipec.protocols import (
    ablation_split,
    ablation_subsets,
    block_folds,
    equal_steps_epochs,
    natural_key,
    peak_point,
    plot_ablation,
    summarize,
)


def test_block_folds_of_one_video_are_contiguous_and_cover_every_item_once():
    folds = block_folds(["v"] * 23, 5)
    tests = [te for _, te in folds]
    assert sorted(i for te in tests for i in te) == list(range(23))
    for tr, te in folds:
        assert te == list(range(te[0], te[-1] + 1))          # one contiguous block
        assert not set(tr) & set(te) and len(tr) + len(te) == 23
    assert [len(te) for te in tests] == [5, 4, 5, 4, 5] or max(map(len, tests)) - min(map(len, tests)) <= 1


def test_block_folds_keep_whole_videos_when_there_are_enough():
    groups = ["a"] * 10 + ["b"] * 3 + ["c"] * 8 + ["d"] * 5 + ["e"] * 4
    folds = block_folds(groups, 3)
    seen = []
    for _, te in folds:
        videos = {groups[i] for i in te}
        assert te and all(groups[i] in videos for i in te)
        for v in videos:                                     # a video is never split over folds
            assert [i for i, g in enumerate(groups) if g == v] == [i for i in te if groups[i] == v]
        seen += te
    assert sorted(seen) == list(range(len(groups)))
    with pytest.raises(ValueError, match="folds"):
        block_folds(["a", "b"], 3)


def test_ablation_split_tests_on_the_last_block_and_trains_on_nested_subsets():
    test, (small, large) = ablation_split(20, [2, 5], 0.3, seed=0)
    assert test == list(range(14, 20)) and len(small) == 2 and set(small) <= set(large) and max(large) < 14
    with pytest.raises(ValueError, match="between 1 and the 14"):
        ablation_split(20, [15], 0.3, seed=0)
    with pytest.raises(ValueError, match="test fraction"):
        ablation_split(20, [2], 1.0, seed=0)


def test_ablation_subsets_are_nested_and_seeded():
    small, large = ablation_subsets(list(range(50)), [5, 20], seed=3)
    assert len(small) == 5 and len(large) == 20 and set(small) <= set(large)
    assert ablation_subsets(list(range(50)), [5], seed=3)[0] == small
    assert ablation_subsets(list(range(50)), [5], seed=4)[0] != small
    with pytest.raises(ValueError, match="between 1 and the 50"):
        ablation_subsets(list(range(50)), [0, 60], seed=0)


def test_summarize_gives_mean_sd_and_standard_error():
    rows = [{"x": 1.0}, {"x": 2.0}, {"x": 6.0}, {"x": None}, {"x": float("nan")}]
    s = summarize(rows, ["x"])["x"]
    assert s["n"] == 3 and s["mean"] == pytest.approx(3.0)
    assert s["sd"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert s["sem"] == pytest.approx(s["sd"] / math.sqrt(3))
    assert math.isnan(summarize([{"x": 1.0}], ["x"])["x"]["sem"])


def test_peak_point_for_scores_and_for_errors():
    up = peak_point([5, 10, 20, 40], [0.5, 0.8, 0.96, 1.0])
    assert up["size"] == 20 and up["threshold"] == pytest.approx(0.95)
    down = peak_point([5, 10, 20, 40], [30.0, 12.0, 4.3, 4.0], lower_is_better=True)
    assert down["size"] == 40 and down["threshold"] == pytest.approx(4.0 / 0.95)
    assert peak_point([5, 10, 20], [9.0, 4.2, 4.0], lower_is_better=True)["size"] == 10
    assert peak_point([5], [float("nan")])["size"] is None


def test_plot_ablation_writes_png_and_svg(tmp_path):
    points = [{"train_size": s, "rmse_px": v} for s, v in [(5, 20.0), (5, 24.0), (10, 8.0), (10, 9.0), (20, 6.0)]]
    paths = plot_ablation(points, "rmse_px", tmp_path / "curve", "test", lower_is_better=True)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and b"<svg" in paths[1].read_bytes()[:2000]


def test_natural_key_orders_numbers_by_value():
    assert sorted(["img10", "img9", "img100"], key=natural_key) == ["img9", "img10", "img100"]


def test_each_ablation_size_trains_as_many_steps_as_the_whole_pool():
    assert equal_steps_epochs(60, 93, 5) == 1116 and equal_steps_epochs(60, 93, 93) == 60
    assert equal_steps_epochs(10, 100, 30) == 34 and equal_steps_epochs(10, 100, 200) == 10
