"""Train/test splits by image (all animals of one image fall on the same side).

``random``: DeepLabCut's way — shuffle the labelled images with a seed, keep ``1 - test_fraction`` for
training (DLC's TrainingFraction 0.95 is ``--test-fraction 0.05``). ``last``: the last ``test_fraction`` of
the images in their order (video frames in time: no near-duplicate neighbours across the split).
``fold:i/n``: the i-th of n folds of a seeded shuffle. ``block:i/n``: the i-th of n folds that keep neighbouring
frames together (whole videos when there are n or more, else contiguous blocks in frame order;
:func:`sipec.protocols.block_folds`). ``subset:N``: the last ``test_fraction`` of the images for testing (as
``last``) and N images drawn with the seed from the rest for training (nested: a smaller N is part of a larger
one; the label-count ablation). ``file:PATH``: the test images listed in a JSON file (``test_images``, paths
relative to the project, as ``../shared/peers/dlc-openfield-split.json`` records DeepLabCut's own split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sipec.protocols import ablation_split, block_folds, natural_key


def source_video(source: str) -> str:
    """The video (or image folder) a labelled image comes from: ``video#frame`` or the image's folder."""
    return source.rsplit("#", 1)[0] if "#" in source else str(Path(source).parent)


def _file_split(sources: list[str], path: str) -> set[str]:
    """The sources a split file lists as test images (matched by path suffix)."""
    try:
        listed = json.loads(Path(path).read_text())["test_images"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"split file {path}: need a JSON object with test_images ({exc})") from None
    norm = {s: s.replace("\\", "/") for s in sources}
    test = set()
    for image in listed:
        image = str(image).replace("\\", "/")
        while image.startswith("./"):
            image = image[2:]
        hits = [s for s, n in norm.items() if n == image or n.endswith("/" + image)]
        if len(hits) != 1:
            raise ValueError(f"split file {path}: test image {image!r} matches {len(hits)} labelled images")
        test.add(hits[0])
    return test


def split_samples(samples: Sequence[Any], test_fraction: float, seed: int, mode: str = "random"
                  ) -> tuple[list[int], list[int]]:
    """Indices of training and test samples (anything with a ``source``: labelled animals or cut samples)."""
    sources = list(dict.fromkeys(s.source for s in samples))
    n = len(sources)
    train_src = None
    if mode.startswith("block:"):
        i, k = _fold_numbers(mode)
        ordered = sorted(sources, key=lambda src: (natural_key(source_video(src)), natural_key(src)))
        test_src = {ordered[j] for j in block_folds([source_video(src) for src in ordered], k)[i][1]}
    elif mode.startswith("subset:"):
        try:
            size = int(mode[7:])
        except ValueError:
            raise ValueError(f"split {mode!r}: need subset:N with N training images") from None
        test_pos, (train_pos,) = ablation_split(n, [size], test_fraction, seed)
        test_src, train_src = {sources[j] for j in test_pos}, {sources[j] for j in train_pos}
    elif mode.startswith("file:"):
        test_src = _file_split(sources, mode[5:])
    elif mode.startswith("fold:"):
        i, k = _fold_numbers(mode)
        order = np.random.default_rng(seed).permutation(n)
        test_src = {sources[j] for j in np.array_split(order, k)[i]}
    elif mode in ("random", "last"):
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test fraction must be in [0, 1), not {test_fraction}")
        n_test = int(round(n * test_fraction))
        if test_fraction > 0:
            n_test = max(1, n_test)
        order = np.random.default_rng(seed).permutation(n) if mode == "random" else np.arange(n)
        test_src = {sources[j] for j in order[n - n_test:]} if n_test else set()
    else:
        raise ValueError(f"split must be random, last, fold:i/n, block:i/n, subset:N or file:PATH, not {mode!r}")
    train = [i for i, s in enumerate(samples)
             if s.source not in test_src and (train_src is None or s.source in train_src)]
    test = [i for i, s in enumerate(samples) if s.source in test_src]
    return train, test


def _fold_numbers(mode: str) -> tuple[int, int]:
    """(i, n) of ``fold:i/n`` or ``block:i/n``."""
    try:
        i, k = (int(v) for v in mode.split(":", 1)[1].split("/"))
    except ValueError:
        raise ValueError(f"split {mode!r}: need {mode.split(':')[0]}:i/n") from None
    if not 0 <= i < k or k < 2:
        raise ValueError(f"split {mode!r}: need {mode.split(':')[0]}:i/n with 0 <= i < n and n >= 2")
    return i, k
